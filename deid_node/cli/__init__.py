"""The `deid-node` command (app): a thin typer layer over the library."""
