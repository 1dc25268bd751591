"""The run's report: statuses, audit rows and output files joined per object, and the invariants."""

from __future__ import annotations

import re
from collections import Counter
from datetime import datetime
from typing import Any

from deid_node.deid.pseudonym import pseudo_uid
from deid_node.testing.fuzz.draft import MALFORMED, WELL_FORMED
from deid_node.testing.fuzz.generator import CONTROL, Generator
from deid_node.testing.fuzz.phi import PhiScanner, decoded_text
from deid_node.testing.fuzz.records import ACCEPTED_ROW, audit_rows, count_files
from deid_node.testing.fuzz.sender import Result, is_success
from deid_node.testing.fuzz.target import Target

__all__ = ["check_invariants", "per_kind_table", "pseudo_sop", "summarise"]

# The report is a JSON document (scripts/fuzz.py --json): its sections are plain dicts.
Section = dict[str, Any]


def pseudo_sop(target: Target, uid: str) -> str | None:
    """The pseudonym the node gives a SOP Instance UID, when we know its key and scope."""
    if target.key is None or target.scope is None:
        return None
    return pseudo_uid(target.key, target.scope, uid)


def summarise(
    gen: Generator,
    target: Target,
    results: dict[int, Result],
    schedule: list[int],
    since: datetime,
    final: Result | None = None,
) -> Section:
    """Join statuses, audit rows and output files into counts and per-object outcomes.

    `final` is the valid object sent after the run: its row and file are known, not counted.
    """
    for oid in schedule:  # objects never reached before the deadline
        if oid not in results:
            results[oid] = Result(oid, gen.kind_of(oid), "", "", "", (), 0)
    pseudo_to_oid: dict[str, int] = {}
    for res in [*results.values(), *([final] if final else [])]:
        for u in res.uids:
            p = pseudo_sop(target, u)
            if p:
                pseudo_to_oid[p] = res.oid
    rows = audit_rows(target, since)
    audit, stored_oids = _audit_section(rows, pseudo_to_oid, results, final)
    for res in results.values():
        res.outcome = _outcome(res, stored_oids, known=bool(target.key) and rows is not None)
    scanner = PhiScanner(gen.tokens, {u for r in results.values() for u in r.uids})
    return {
        "audit": audit,
        "output": _output_section(gen, target, results, pseudo_to_oid, scanner),
        "phi_elsewhere": _phi_elsewhere(target, scanner),
        "stored_by_oid": stored_oids,
    }


def _audit_section(
    rows: list[dict[str, object]] | None,
    pseudo_to_oid: dict[str, int],
    results: dict[int, Result],
    final: Result | None,
) -> tuple[Section, dict[int, str]]:
    """Audit counts, and the status of every object whose stored row maps back to it."""
    stored_oids: dict[int, str] = {}
    audit: Section = {"available": rows is not None}
    if rows is not None:
        audit["rows"] = len(rows)
        audit["by_status"] = dict(Counter(str(r["status"]) for r in rows))
        reasons = Counter(
            (str(r["status"]), re.sub(r"\d+", "N", str(r["reason"]))) for r in rows if r["reason"]
        )
        audit["top_reasons"] = [[s, r, n] for (s, r), n in reasons.most_common(12)]
        unmapped = 0
        for r in rows:
            if r["status"] in ("stored", "duplicate"):
                mapped = pseudo_to_oid.get(str(r["pseudo_sop_uid"] or ""))
                if mapped is None:
                    unmapped += 1
                else:
                    stored_oids[mapped] = str(r["status"])
        audit["stored_rows_not_mapped"] = unmapped
    accepted = sum(1 for r in results.values() if is_success(r.status) and r.oid >= 0)
    audit["accepted_objects"] = accepted
    if rows is not None:
        final_rows = 1 if final is not None and is_success(final.status) else 0
        audit["rows_for_accepted"] = (
            sum(1 for r in rows if r["status"] in ACCEPTED_ROW) - final_rows
        )
    return audit, stored_oids


def _outcome(res: Result, stored_oids: dict[int, str], *, known: bool) -> str:
    """What became of one object: stored, quarantined, accepted, failed or unaccounted."""
    if is_success(res.status):
        if res.oid in stored_oids:
            return "stored"
        return "quarantined" if known else "accepted"
    return "failed" if res.status.startswith("0x") else "unaccounted"


def _output_section(
    gen: Generator,
    target: Target,
    results: dict[int, Result],
    pseudo_to_oid: dict[str, int],
    scanner: PhiScanner,
) -> Section:
    """Every output file, by origin, scanned for every planted value (bytes and decoded)."""
    output: Section = {"dir": str(target.output_dir) if target.output_dir else None}
    leaked: list[Section] = []
    unreadable: list[str] = []  # output that pydicom cannot read is not valid Part-10
    from_kind: Counter[str] = Counter()
    files = 0
    if target.output_dir and target.output_dir.exists():
        for path in sorted(target.output_dir.rglob("*")):
            if not path.is_file():
                continue
            files += 1
            owner_oid = pseudo_to_oid.get(path.stem, -2)
            owner = results.get(owner_oid)
            origin = owner.kind if owner else "final" if owner_oid == -1 else "unknown"
            if owner and owner.expect == MALFORMED:
                origin = f"{origin} (malformed)"
            from_kind[origin] += 1
            hits = scanner.find(path.read_bytes())
            decoded = decoded_text(path) if path.suffix == ".dcm" else b""
            if decoded is None:
                unreadable.append(str(path.relative_to(target.output_dir)))
            else:
                hits |= scanner.find(decoded)
            if hits:
                leaked.append(
                    {
                        "file": str(path.relative_to(target.output_dir)),
                        "oid": owner.oid if owner else None,
                        "variant": owner.variant if owner else None,
                        "origin": origin,
                        "values": sorted(hits)[:8],
                        "kinds": sorted(
                            {gen.tokens.kind_of(h) if h in gen.tokens else "uid" for h in hits}
                        ),
                    }
                )
    output.update(
        files=files, by_origin=dict(from_kind), leaked_files=leaked, unreadable_files=unreadable
    )
    output["from_malformed"] = sum(n for k, n in from_kind.items() if k.endswith("(malformed)"))
    if target.data_dir:
        output["quarantine_files"] = count_files(target.data_dir / "quarantine")
        output["spool_files_left"] = count_files(target.data_dir / "spool")
    return output


def _phi_elsewhere(target: Target, scanner: PhiScanner) -> Section:
    """Planted values in the node's log and (without linkage) its audit database file."""
    found: Section = {}
    if target.log_path and target.log_path.exists():
        found["node_log"] = sorted(scanner.find(target.log_path.read_bytes()))[:8]
    if target.db_path and target.db_path.exists() and not target.record_linkage:
        # The file's bytes (and its WAL), not a query: PHI may sit in any column or page.
        blob = b"".join(
            p.read_bytes()
            for p in target.db_path.parent.glob(target.db_path.name + "*")
            if p.is_file()
        )
        found["audit_db"] = sorted(scanner.find(blob))[:8]
    return found


def per_kind_table(results: dict[int, Result]) -> dict[str, dict[str, Any]]:
    """Per mutation kind: how many were sent, got each status, were stored or quarantined."""
    table: dict[str, dict[str, Any]] = {}
    for res in sorted(results.values(), key=lambda r: r.oid):
        row = table.setdefault(
            res.kind,
            {
                "sent": 0,
                "success": 0,
                "failed": 0,
                "unaccounted": 0,
                "stored": 0,
                "stored_malformed": 0,
                "stored_well_formed": 0,
                "quarantined": 0,
                "statuses": Counter(),
                "stored_variants": Counter(),
            },
        )
        if res.status.startswith("0x") or res.status in ("abort", "no-response"):
            row["sent"] += 1
        row["statuses"][res.status] += 1
        if res.outcome == "stored":
            row["stored"] += 1
            row["stored_variants"][res.variant] += 1
            if res.expect == MALFORMED:
                row["stored_malformed"] += 1
            elif res.expect == WELL_FORMED:
                row["stored_well_formed"] += 1
        row["success"] += is_success(res.status)
        row["failed"] += res.outcome == "failed"
        row["unaccounted"] += res.outcome == "unaccounted"
        row["quarantined"] += res.outcome == "quarantined"
    for row in table.values():
        row["statuses"] = dict(row["statuses"].most_common())
        row["stored_variants"] = dict(row["stored_variants"].most_common())
    return table


def check_invariants(report: Section, results: dict[int, Result]) -> dict[str, Section]:
    """Each invariant the run must keep, with whether it held and the figures behind it."""
    inv: dict[str, Section] = {}
    _serving_invariants(report, inv)
    _delivery_invariants(report, results, inv)
    _safety_invariants(report, results, inv)
    return inv


def _put(inv: dict[str, Section], name: str, ok: bool, detail: str) -> None:
    inv[name] = {"ok": bool(ok), "detail": detail}


def _serving_invariants(report: Section, inv: dict[str, Section]) -> None:
    """The node still serves after the run, and its memory stayed bounded."""
    final = report["final"]
    _put(
        inv,
        "node_serving",
        final["echo"]
        and final["store"]["status"] == "0x0000"
        and final["store"]["written"] is not False
        and not report["node"].get("died_during_run")
        and not report.get("node_down_during_send"),
        f"C-ECHO {'ok' if final['echo'] else 'FAILED'}, valid C-STORE {final['store']['status']},"
        f" written {final['store']['written']},"
        f" node died/wedged {len(report['node'].get('crashes', []))} time(s),"
        f" refused associations mid-run: {'yes' if report.get('node_down_during_send') else 'no'}",
    )
    peak = report["node"].get("peak_rss_mb")
    limit = report.get("max_node_rss_mb", 0)
    if peak is not None and limit:
        _put(
            inv,
            "node_memory_bounded",
            peak <= limit,
            f"peak RSS {peak} MiB (node and workers), limit {limit} MiB",
        )


def _delivery_invariants(
    report: Section, results: dict[int, Result], inv: dict[str, Section]
) -> None:
    """Every object was sent, and got a status and (when accepted) an audit row."""
    not_sent = [r for r in results.values() if r.status.startswith(("not-sent", "error"))]
    _put(
        inv,
        "all_sent",
        not not_sent,
        f"{len(not_sent)} object(s) not sent (deadline, context or node down)",
    )
    lost = [r for r in results.values() if r.status in ("abort", "no-response")]
    audit = report["audit"]
    counts_ok = True
    detail = f"{len(lost)} object(s) without a DIMSE status (abort/no response)"
    if audit["available"]:
        counts_ok = audit.get("rows_for_accepted", 0) == audit["accepted_objects"]
        detail += (
            f"; {audit['accepted_objects']} accepted vs {audit.get('rows_for_accepted', 0)}"
            " stored/duplicate/quarantined audit rows"
        )
    _put(inv, "every_object_accounted", not lost and counts_ok, detail)


def _safety_invariants(
    report: Section, results: dict[int, Result], inv: dict[str, Section]
) -> None:
    """No escaped exception, no planted value anywhere, nothing malformed stored."""
    exc = report["exceptions"]
    c211 = sum(1 for r in results.values() if r.status == "0xC211")
    _put(
        inv,
        "no_escaped_exceptions",
        exc["tracebacks"] == 0 and c211 == 0,
        f"{exc['tracebacks']} traceback(s) in node log {exc['types']}, {c211} x 0xC211",
    )
    out = report["output"]
    elsewhere = report["phi_elsewhere"]
    _put(
        inv,
        "no_phi_leak",
        not out["leaked_files"] and not any(elsewhere.values()),
        f"{len(out['leaked_files'])} output file(s) with planted values;"
        f" log {len(elsewhere.get('node_log', []))}, audit db {len(elsewhere.get('audit_db', []))}",
    )
    _put(
        inv,
        "outputs_readable",
        not out.get("unreadable_files"),
        f"{len(out.get('unreadable_files', []))} output file(s) pydicom cannot read",
    )
    malformed_stored = [
        r for r in results.values() if r.outcome == "stored" and r.expect == MALFORMED
    ]
    _put(
        inv,
        "no_malformed_stored",
        not malformed_stored and out.get("from_malformed", 0) == 0,
        f"{len(malformed_stored)} malformed object(s) stored",
    )
    controls = [r for r in results.values() if r.kind == CONTROL]
    bad_controls = [r for r in controls if r.status != "0x0000" or r.outcome == "quarantined"]
    _put(
        inv,
        "controls_stored",
        not bad_controls,
        f"{len(controls) - len(bad_controls)}/{len(controls)} controls stored",
    )
