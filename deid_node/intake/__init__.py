"""Receiving: a receiving process (boot, process) with its AE (scp), who may call (policy),
per-association state and C-STORE intake (receiver), pynetdicom's event handlers
(handlers), the durable spool (spool), limits shared across receiving processes (shared),
connections not yet associated (connections), and the typed messages it exchanges with
the supervisor (messages). The network layer it stands on is deid_node.net."""
