"""Receiving: a receiving process (process) with its AE (scp), who may call (policy),
per-association state and C-STORE intake (receiver), pynetdicom's event handlers
(handlers), the durable spool (spool), limits shared across receiving processes (shared),
DICOM TLS (tls), and every reach into pynetdicom internals (pynetdicom_compat)."""
