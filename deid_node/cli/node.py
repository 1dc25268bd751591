"""`deid-node serve` and `deid-node check-config`."""

from __future__ import annotations

from deid_node.cli.shared import (
    ConfigOption,
    errors_as_lines,
    load,
    out,
)


@errors_as_lines
def check_config(config: ConfigOption = None) -> None:
    """Validate the config file (the data and output folders must be writable), summarise it.

    Example: deid-node check-config --config config/deid-node.toml
    """
    from deid_node.durable import check_writable

    cfg = load(config)
    node = cfg.node
    check_writable(node.data_dir, "node.data_dir")
    check_writable(node.output, "node.output_dir")
    out.print(
        f"OK: {cfg.path}: node {node.name}, AE title {node.ae_title} on {node.host}:{node.port}, "
        f"{len(cfg.sources)} source(s), {len(cfg.profiles)} profile(s), "
        f"unknown sources: {cfg.unknown_action}",
        markup=False,
        highlight=False,
    )
    for src in cfg.sources:
        hosts = ", ".join(str(h) for h in src.hosts) or "any host"
        out.print(
            f"  {src.ae_title} -> {src.profile} ({hosts})",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
    from deid_node.net.client_tls import client_context

    for dest in cfg.destinations.values():
        if dest.tls is not None:
            client_context(dest.tls, dest.name)  # certificates and key load, or an Error
        users = sorted(n for n, p in cfg.profiles.items() if dest.name in p.forward_to)
        by = f"from {', '.join(users)}" if users else "not used by any profile"
        tls = ", TLS" if dest.tls is not None else ""
        out.print(
            f"  forward -> {dest.name}: {dest.ae_title} at {dest.host}:{dest.port}{tls} ({by})",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )


@errors_as_lines
def serve(config: ConfigOption = None) -> None:
    """Receive objects over DICOM, de-identify and audit each one, until SIGTERM or Ctrl-C.

    Example: deid-node serve --config config/deid-node.toml
    """
    from deid_node.logs import setup_logging
    from deid_node.runtime.node import Node

    cfg = load(config)
    setup_logging()
    Node(cfg).serve_forever()
