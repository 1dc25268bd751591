"""DICOM itself: the raw element parser (elements), the strict encoding check on raw bytes
(encoding), Part-10 read and write (part10, element_writer), status codes (status). Knows
nothing of profiles, associations or the audit database."""
