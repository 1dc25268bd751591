"""deid-node: a DICOM node that de-identifies every object it receives."""

__version__ = "0.1.0"
