"""The FUSE front: buckets as directories, objects as files, for legacy PACS software.

``objfs mount STORE MOUNTPOINT`` (:mod:`objfs.cli.mount`) or :func:`.mount.run_mount`
inside another trio program.
"""
