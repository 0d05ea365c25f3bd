"""DICOM gateway: tag extraction, C-FIND matching and the DICOM network front."""
