"""The long-running node only: its life cycle (node), the work it schedules (scheduler),
what it records (recorder), its child processes (receivers, forwarding, worker,
worker_boot, signals)."""
