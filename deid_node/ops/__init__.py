"""Operations the CLI and the console share: offline runs (offline, linkage), quarantine
retry and purge (quarantine), the console's jobs (jobs), and the one mapping of an outcome
to its audit records (records), which the node uses too."""
