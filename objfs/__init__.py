"""objfs: an erasure-coded object archive for medical images.

The engine lives in :mod:`objfs.store`; the fronts (FUSE in :mod:`objfs.fuse`,
DICOM in :mod:`objfs.dicom`, S3 in the separate :mod:`s3sidecar` package)
translate their protocols into engine calls.
"""

__version__ = "0.1.0"
