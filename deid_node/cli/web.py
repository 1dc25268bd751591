"""`deid-node web`: the web console, its own process."""

from __future__ import annotations

from deid_node.cli.shared import ConfigOption, errors_as_lines, load


@errors_as_lines
def web(config: ConfigOption = None) -> None:
    """Serve the web console on [web] host and port (default 127.0.0.1:8080) until Ctrl-C.

    Example: deid-node web --config config/deid-node.toml
    """
    from deid_node.logs import setup_logging
    from deid_node.web.server import serve

    cfg = load(config)
    setup_logging()
    serve(cfg)
