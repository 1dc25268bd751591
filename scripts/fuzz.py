#!/usr/bin/env python3
"""Fuzz a deid-node with malformed C-STORE objects over real associations on 127.0.0.1.

The fuzzer itself is deid_node/testing/fuzz/; this is its command line and its summary.
Every object is a valid synthetic object (deid_node/testing/synthetic/, full of planted PHI
tokens) with one malformation applied to its *encoded bytes*; the bytes reach the wire
unchanged (pynetdicom streams them from a file, see `install_raw_sender` in fuzz/sender.py).
Kinds are cycled by object id (`KINDS`), each with several variants; every object is
classified `malformed` (must not be stored), `well-formed` (the mutation left a valid
encoding: may be stored) or `valid` (an unmutated control, every `--control-every` objects:
must be stored).

At the end the node's audit database and output folder are checked, and the exit code is 0
only if every invariant holds: the node still serves (C-ECHO, and a valid object is stored
and written), no traceback in its log and no 0xC211, no output file (raw bytes or decoded
text), log or audit database holds a planted value, every object has a failure status or
(after Success) an audit row, no malformed object was stored, and its memory stayed bounded.

    scripts/fuzz.py --count 10000 --seed 0 --associations 4 --json fuzz.json
    scripts/fuzz.py --count 10000 --oid 1488 --keep     # one object again, same bytes
    scripts/fuzz.py --kinds deep_nesting --restart-on-crash

Without --config/--port it starts its own `deid-node serve` on a temporary data folder and
a temporary config (one source, unknown sources rejected, a basic profile), with a known
key so stored objects map back to object ids, its address space capped (`--node-memory-mb`)
so a memory bomb fails inside the node rather than waking the kernel's OOM killer, and
stops it at the end (SIGTERM, bounded wait, then SIGKILL of its process group).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from deid_node.testing.fuzz import KINDS, FuzzOptions, is_contract_failure, is_success, run


def print_summary(report: dict[str, Any]) -> None:
    r = report
    a, o, n = r["audit"], r["output"], r["node"]
    st: Counter[str] = Counter()
    for row in r["kinds"].values():
        for s, c in row["statuses"].items():
            st[s] += c
    ok = sum(c for s, c in st.items() if is_success(s))
    contract = sum(c for s, c in st.items() if is_contract_failure(s))
    other = sum(
        c
        for s, c in st.items()
        if s.startswith("0x") and not is_success(s) and not is_contract_failure(s)
    )
    print(
        f"deid-node fuzz: {r['count']} malformed + {r['controls']} control objects,"
        f" seed {r['seed']},"
        f" {r['associations']} association(s), {r['seconds']:.0f} s;"
        f" node {n['host']}:{n['port']} ({'started here' if n['started_here'] else 'external'})"
    )
    code = n.get("code")
    if code:
        dirty = f", uncommitted: {', '.join(code['uncommitted'])}" if code["uncommitted"] else ""
        print(f"  node code   {code['commit']}{dirty}")
    print(
        f"  statuses    success {ok} | failure 0xA7xx/0xCxxx {contract} | other failure {other}"
        f" | abort {st['abort']} | no response {st['no-response']}"
        f" | not sent {sum(c for s, c in st.items() if s.startswith(('not-sent', 'error')))}"
    )
    top = ", ".join(f"{s} x{c}" for s, c in st.most_common(6))
    print(f"  top         {top}")
    if a["available"]:
        print(
            f"  audit       {a['by_status']} ; rows for accepted objects"
            f" {a.get('rows_for_accepted')}/{a['accepted_objects']}"
        )
    else:
        print("  audit       not readable (no data dir / not SQLite)")
    print(
        f"  output      {o['files']} file(s), with planted PHI {len(o['leaked_files'])},"
        f" from malformed objects {o.get('from_malformed', 0)}, by origin {o['by_origin']};"
        f" quarantine {o.get('quarantine_files', '?')}, spool left {o.get('spool_files_left', '?')}"
    )
    e = r["exceptions"]
    print(
        f"  exceptions  tracebacks {e['tracebacks']} {e['types'] or ''};"
        f" PHI in log {len(r['phi_elsewhere'].get('node_log', []))},"
        f" in audit db {len(r['phi_elsewhere'].get('audit_db', []))}"
    )
    f = r["final"]
    print(
        f"  final       C-ECHO {'ok' if f['echo'] else 'FAILED'},"
        f" valid C-STORE {f['store']['status']},"
        f" written {f['store']['written']}; node peak RSS {n.get('peak_rss_mb', '?')} MiB,"
        f" stop {n.get('stopped', '-')}"
    )
    print()
    print(
        f"  {'kind':26}{'sent':>6}{'succ':>6}{'fail':>6}{'lost':>6}"
        f"{'stored':>7}{'st.mal':>7}{'quar':>6}  top status"
    )
    for kind, row in r["kinds"].items():
        top1 = max(row["statuses"].items(), key=lambda kv: kv[1])[0] if row["statuses"] else "-"
        print(
            f"  {kind:26}{row['sent']:>6}{row['success']:>6}{row['failed']:>6}"
            f"{row['unaccounted']:>6}"
            f"{row['stored']:>7}{row['stored_malformed']:>7}{row['quarantined']:>6}  {top1}"
        )
    if a.get("top_reasons"):
        print("\n  top audit reasons:")
        for status, reason, count in a["top_reasons"][:6]:
            print(f"    {count:>6} {status}: {reason[:90]}")
    print()
    for name, v in r["invariants"].items():
        print(f"  {'PASS' if v['ok'] else 'FAIL'}  {name}: {v['detail']}")
    print(f"\n  {'OK: every invariant holds' if r['ok'] else 'FAILED'}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--count", type=int, default=10_000, help="malformed objects to send")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--config", help="config of a running node (else we start our own)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, help="port of a running node (else we start our own)")
    p.add_argument("--called-ae", help="the node's AE title [DEID_NODE]")
    p.add_argument("--calling-ae", help="our AE title [FUZZER, or the config's first source]")
    p.add_argument("--data-dir", help="with --port: the node's data dir (audit.db, output/)")
    p.add_argument("--profile", help="with --port: the sender's profile (pseudonym scope)")
    p.add_argument("--node-log", help="with --config/--port: the node's log, for tracebacks")
    p.add_argument("--associations", type=int, default=4, choices=range(1, 9), metavar="1..8")
    p.add_argument("--per-association", type=int, default=100, help="objects per association")
    p.add_argument(
        "--control-every", type=int, default=100, help="a valid control after N (0: none)"
    )
    p.add_argument("--request-timeout", type=float, default=30.0, help="seconds per C-STORE")
    p.add_argument("--max-seconds", type=float, default=1800.0, help="total time limit")
    p.add_argument("--kinds", help="only these kinds, comma-separated (object ids unchanged)")
    p.add_argument("--oid", type=int, action="append", help="only this object id (repeatable)")
    p.add_argument(
        "--node-memory-mb",
        type=int,
        default=4096,
        help="address-space limit of our own node's processes (0: none)",
    )
    p.add_argument(
        "--restart-on-crash",
        action="store_true",
        help="restart our own node when it dies or wedges, and carry on (crashes are reported)",
    )
    p.add_argument("--max-restarts", type=int, default=20)
    p.add_argument(
        "--max-node-rss-mb",
        type=int,
        default=2048,
        help="invariant: our node's peak RSS (main + workers) stays below this (0: no check)",
    )
    p.add_argument(
        "--drain-stall",
        type=float,
        default=90.0,
        help="stop waiting for the spool to drain after this long without progress",
    )
    p.add_argument(
        "--stop-grace", type=float, default=30.0, help="seconds between SIGTERM and SIGKILL"
    )
    p.add_argument("--json", help="write the full report here")
    p.add_argument("--keep", action="store_true", help="keep our node's temp folder")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    args = p.parse_args(argv)
    if args.count < 0:
        p.error("--count must be >= 0")
    unknown = set(args.kinds.split(",")) - set(KINDS) if args.kinds else set()
    if unknown:
        p.error(f"unknown kind(s) {sorted(unknown)}; known: {', '.join(KINDS)}")
    if args.config and args.port:
        p.error("--config and --port exclude each other")
    return args


def options_from(args: argparse.Namespace) -> FuzzOptions:
    """The run's options from the parsed flags."""
    return FuzzOptions(
        count=args.count,
        seed=args.seed,
        config=Path(args.config) if args.config else None,
        host=args.host,
        port=args.port,
        called_ae=args.called_ae,
        calling_ae=args.calling_ae,
        data_dir=Path(args.data_dir) if args.data_dir else None,
        profile=args.profile,
        node_log=Path(args.node_log) if args.node_log else None,
        associations=args.associations,
        per_association=args.per_association,
        control_every=args.control_every,
        request_timeout=args.request_timeout,
        max_seconds=args.max_seconds,
        kinds=frozenset(args.kinds.split(",")) if args.kinds else None,
        oids=tuple(args.oid) if args.oid else None,
        node_memory_mb=args.node_memory_mb,
        restart_on_crash=args.restart_on_crash,
        max_restarts=args.max_restarts,
        max_node_rss_mb=args.max_node_rss_mb,
        drain_stall=args.drain_stall,
        stop_grace=args.stop_grace,
        keep=args.keep,
        quiet=args.quiet,
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        report = run(options_from(args))
    except RuntimeError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 1
    print_summary(report)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1, default=str) + "\n")
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
