"""DICOMweb (PS3.18) over an objfs store: QIDO-RS, WADO-RS and STOW-RS under ``/dicom-web``.

A front like the S3 sidecar and the DICOM gateway: it only translates. The
DICOM index (:mod:`objfs.dicom.index`) answers searches, the engine reads and
writes objects and decides who may do what, and stored instances go through
the gateway's C-STORE path (:mod:`objfs.dicom.storage`).
"""
