"""Running things: the node's life cycle (node), its de-identification processes (worker,
worker_boot), quarantine retry and purge (quarantine), offline runs (offline, linkage)."""
