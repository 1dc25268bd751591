"""The `deid-node` command: app assembles one module per group (node, deidentify, audit,
profiles, quarantine) over shared consoles, options and one-line errors (shared)."""
