"""Receiving: the AE (scp), who may call (policy), per-association state and C-STORE intake
(receiver), pynetdicom's event handlers (handlers), the durable spool (spool), DICOM TLS
(tls), and every reach into pynetdicom internals (pynetdicom_compat)."""
