"""The DICOM network layer shared by intake/ and forward/: every reach into pynetdicom
internals (pynetdicom_compat, configured by each process at its start, never at import),
and DICOM TLS contexts for the server (server_tls) and towards destinations (client_tls).

Imports nothing from the packages above it (intake/, forward/, runtime/)."""
