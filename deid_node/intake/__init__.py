"""Receiving: the Storage SCP and its association policy (scp), the durable spool (spool),
DICOM TLS and the listening server (tls)."""
