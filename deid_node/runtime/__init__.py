"""Running things: the node's life cycle (node), its receiving processes (receivers,
signals), its de-identification processes (worker, worker_boot), quarantine retry and
purge (quarantine), offline runs (offline, linkage)."""
