"""Generate deid-node's de-identification tables from the reference data.

Writes, into ``deid_node/data/`` by default:

* ``annex_e.csv``: DICOM PS3.15 Table E.1-1 (edition 2024b), one row per attribute,
  with pydicom's keyword and VR added.
* ``safe_private.csv``: private elements that may be kept under the Retain Safe
  Private Option, from PS3.15 Table E.3.10-1 and the TCIA private tag knowledge base.

Run from the repository root::

    .venv/bin/python scripts/gen_tables.py [--reference DIR] [--output DIR]

The output depends only on the reference files and pydicom's data dictionary, so
running it twice gives byte-identical files.
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import sys
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from pydicom.datadict import dictionary_has_tag, dictionary_VR, keyword_for_tag

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_REFERENCE = REPO_ROOT.parent / "shared" / "reference"
DEFAULT_OUTPUT = REPO_ROOT / "deid_node" / "data"

ANNEX_E_SOURCE = "ps3.15-table-E.1-1-2024b.json"
TCIA_SOURCE = "tcia-private-tag-kb-2024-02-01.csv"
ANNEX_E_ROWS = 621  # rows in Table E.1-1 of the 2024b edition

# JSON key of each option column -> CSV column name, in CSV column order.
OPTION_COLUMNS: dict[str, str] = {
    "rtnSafePrivOpt": "retain-safe-private",
    "rtnUIDsOpt": "retain-uids",
    "rtnDevIdOpt": "retain-device-identity",
    "rtnInstIdOpt": "retain-institution-identity",
    "rtnPatCharsOpt": "retain-patient-characteristics",
    "rtnLongFullDatesOpt": "retain-longitudinal-full-dates",
    "rtnLongModifDatesOpt": "retain-longitudinal-modified-dates",
    "cleanDescOpt": "clean-descriptors",
    "cleanStructContOpt": "clean-structured-content",
    "cleanGraphOpt": "clean-graphics",
}
ANNEX_E_HEADER = ["tag", "keyword", "vr", "name", "basic", *OPTION_COLUMNS.values()]
BASIC_CODES = frozenset({"D", "Z", "X", "K", "C", "U", "X/Z", "X/D", "Z/D", "X/Z/D", "X/Z/U*"})
OPTION_CODES = frozenset({"K", "C"})

# Table E.1-1 rows that are patterns rather than single tags, and how the CSV spells them.
PATTERN_TAGS: dict[str, str] = {
    "(50XX,XXXX)": "50XXXXXX",
    "(60XX,3000)": "60XX3000",
    "(60XX,4000)": "60XX4000",
    "(GGGG,EEEE) WHERE GGGG IS ODD": "ODD",
}
PLAIN_TAG = re.compile(r"\(([0-9A-Fa-f]{4}),([0-9A-Fa-f]{4})\)")

SAFE_PRIVATE_HEADER = ["group", "creator", "element", "vr", "source"]
SOURCE_STANDARD = "E.3.10-1"
SOURCE_TCIA = "TCIA"

# DICOM PS3.15 Table E.3.10-1 "Safe Private Attributes", as (group, private creator,
# element byte, VR). Reconstructed by hand because it is not in the reference folder:
# only rows found both in the standard's text of the table (an earlier edition) and in a
# recent copy of it are listed, i.e. the long-standing core that edition 2024b still
# carries. Newer additions (e.g. the large Philips "Imaging DD 001/002/097/129" MR block)
# are left out until they can be checked against the 2024b text. An empty VR is empty
# in the standard too.
_SC2000 = "SIEMENS Ultrasound SC2000"
_TOYON = "SIEMENS SYNGO ULTRA-SOUND TOYON DATA STREAMING"
TABLE_E_3_10_1: tuple[tuple[int, str, int, str], ...] = (
    (0x7053, "Philips PET Private Group", 0x00, "DS"),  # SUV Factor
    (0x7053, "Philips PET Private Group", 0x09, "DS"),  # Activity Concentration Factor
    (0x00E1, "ELSCINT1", 0x21, "DS"),  # DLP
    (0x00E1, "ELSCINT1", 0x50, "DS"),  # Acquisition Duration
    (0x01E1, "ELSCINT1", 0x26, "CS"),  # Phantom Type
    (0x01F1, "ELSCINT1", 0x01, "CS"),  # Acquisition Type
    (0x01F1, "ELSCINT1", 0x07, "DS"),  # Table Velocity
    (0x01F1, "ELSCINT1", 0x26, "DS"),  # Pitch
    (0x01F1, "ELSCINT1", 0x27, "DS"),  # Rotation Time
    (0x0019, "GEMS_ACQU_01", 0x23, "DS"),  # Table Speed [mm/rotation]
    (0x0019, "GEMS_ACQU_01", 0x24, "DS"),  # Mid Scan Time [sec]
    (0x0019, "GEMS_ACQU_01", 0x27, "DS"),  # Rotation Speed (Gantry Period)
    (0x0019, "GEMS_ACQU_01", 0x9E, "LO"),  # Internal Pulse Sequence Name
    (0x0043, "GEMS_PARM_01", 0x27, "SH"),  # Scan Pitch Ratio
    (0x0043, "GEMS_PARM_01", 0x39, "IS"),  # 1st value is B Value
    (0x0043, "GEMS_PARM_01", 0x6F, "DS"),  # Scanner Table Entry + Gradient Coil Selected
    (0x0045, "GEMS_HELIOS_01", 0x01, "SS"),  # Number of Macro Rows in Detector
    (0x0045, "GEMS_HELIOS_01", 0x02, "FL"),  # Macro width at ISO Center
    (0x0025, "GEMS_SERS_01", 0x07, "SL"),  # Images in Series
    (0x0903, "GEIIS PACS", 0x10, "US"),  # Reject Image Flag
    (0x0903, "GEIIS PACS", 0x11, "US"),  # Significant Flag
    (0x0903, "GEIIS PACS", 0x12, "US"),  # Confidential Flag
    (0x2001, "Philips Imaging DD 001", 0x03, "FL"),  # Diffusion B-Factor
    (0x2001, "Philips Imaging DD 001", 0x04, "CS"),  # Diffusion Direction
    (0x2005, "Philips MR Imaging DD 001", 0x0D, "FL"),  # Scale Intercept
    (0x2005, "Philips MR Imaging DD 001", 0x0E, "FL"),  # Scale Slope
    (0x0019, "SIEMENS MR HEADER", 0x0C, "IS"),  # B Value
    (0x0019, "SIEMENS MR HEADER", 0x0D, "CS"),  # Diffusion Directionality
    (0x0019, "SIEMENS MR HEADER", 0x0E, "FD"),  # Diffusion Gradient Direction
    (0x0019, "SIEMENS MR HEADER", 0x27, "FD"),  # B Matrix
    (0x7E01, "HOLOGIC, Inc.", 0x01, "LO"),  # Codec Version
    (0x7E01, "HOLOGIC, Inc.", 0x02, "SH"),  # Codec Content Type
    (0x7E01, "HOLOGIC, Inc.", 0x10, "SQ"),  # High Resolution Data Sequence
    (0x7E01, "HOLOGIC, Inc.", 0x11, "SQ"),  # Low Resolution Data Sequence
    (0x7E01, "HOLOGIC, Inc.", 0x12, "OB"),  # Codec Content
    (0x0099, "NQHeader", 0x01, "UI"),  # Version
    (0x0099, "NQHeader", 0x02, "UI"),  # Analyzed Series UID
    (0x0099, "NQHeader", 0x04, "SS"),  # Return Code
    (0x0099, "NQHeader", 0x05, "LT"),  # Return Message
    (0x0099, "NQHeader", 0x10, "FL"),  # MI
    (0x0099, "NQHeader", 0x20, "SH"),  # Units
    (0x0099, "NQHeader", 0x21, "FL"),  # ICV
    # NQLeft / NQRight: per-structure brain volumes, (0199,xx01-16) and (0299,xx01-16).
    *((0x0199, "NQLeft", element, "FL") for element in range(0x01, 0x17)),
    *((0x0299, "NQRight", element, "FL") for element in range(0x01, 0x17)),
    (0x0119, _SC2000, 0x00, "LO"),  # Acoustic Meta Information Version
    (0x0119, _SC2000, 0x01, "OB"),  # Common Acoustic Meta Information
    (0x0119, _SC2000, 0x02, "SQ"),  # Multi Stream Sequence
    (0x0119, _SC2000, 0x03, "SQ"),  # Acoustic Data Sequence
    (0x0119, _SC2000, 0x04, "OB"),  # Per Transaction Acoustic Control Information
    (0x0119, _SC2000, 0x05, "UL"),  # Acoustic Data Offset
    (0x0119, _SC2000, 0x06, "UL"),  # Acoustic Data Length
    (0x0119, _SC2000, 0x07, "UL"),  # Footer Offset
    (0x0119, _SC2000, 0x08, "UL"),  # Footer Length
    (0x0119, _SC2000, 0x09, "SS"),  # Acoustic Stream Number
    (0x0119, _SC2000, 0x10, "SH"),  # Acoustic Stream Type
    (0x0119, _SC2000, 0x11, ""),  # Stage Timer Time
    (0x0119, _SC2000, 0x12, ""),  # Stop Watch Time
    (0x0119, _SC2000, 0x13, "IS"),  # Volume Rate
    (0x0119, _SC2000, 0x21, "SH"),  # (no meaning given)
    (0x0129, _SC2000, 0x00, "SQ"),  # MPR View Sequence
    (0x0129, _SC2000, 0x02, "UI"),  # Bookmark UID
    (0x0129, _SC2000, 0x03, ""),  # Plane Origin Vector
    (0x0129, _SC2000, 0x04, ""),  # Row Vector
    (0x0129, _SC2000, 0x05, ""),  # Column Vector
    (0x0129, _SC2000, 0x06, "SQ"),  # Visualization Sequence
    (0x0129, _SC2000, 0x07, "UI"),  # Bookmark UID
    (0x0129, _SC2000, 0x08, "OB"),  # Visualization Information
    (0x0129, _SC2000, 0x09, "SQ"),  # Application State Sequence
    (0x0129, _SC2000, 0x10, "OB"),  # Application State Information
    (0x0129, _SC2000, 0x11, "SQ"),  # Referenced Bookmark Sequence
    (0x0129, _SC2000, 0x12, "UI"),  # Referenced Bookmark UID
    (0x0129, _SC2000, 0x20, "SQ"),  # Cine Parameters Sequence
    (0x0129, _SC2000, 0x21, "OB"),  # Cine Parameters Schema
    (0x0129, _SC2000, 0x22, "OB"),  # Values of Cine Parameters
    (0x0129, _SC2000, 0x29, "OB"),  # (no meaning given)
    (0x0129, _SC2000, 0x30, "CS"),  # Raw Data Object Type
    (0x0139, _SC2000, 0x01, "SL"),  # Physio Capture ROI
    (0x0149, _SC2000, 0x01, "FD"),  # Vector of BROI Points
    (0x0149, _SC2000, 0x02, "FD"),  # Start/End Timestamps of Strip Stream
    (0x0149, _SC2000, 0x03, "FD"),  # Timestamps of Visible R-waves
    (0x7FD1, _SC2000, 0x01, "OB"),  # Acoustic Image and Footer Data
    (0x7FD1, _SC2000, 0x09, "UI"),  # Volume Version ID
    (0x7FD1, _SC2000, 0x10, "OB"),  # Volume Payload
    (0x7FD1, _SC2000, 0x11, "OB"),  # After Payload
    (0x7FD1, _TOYON, 0x01, "OB"),  # Padding
    (0x7FD1, _TOYON, 0x09, "UI"),  # Version ID
    (0x7FD1, _TOYON, 0x10, "OB"),  # Volume Payload
    (0x7FD1, _TOYON, 0x11, "OB"),  # After Payload
)

# TCIA signatures: private triples (gggg,"creator",ee) and public tags (gggg,eeee) joined
# by item markers [<n>]. Many rows lost a quote (mostly the opening one), so both quotes
# are optional.
ITEM_MARKER = re.compile(r"\[<\d+>\]")
PRIVATE_SEGMENT = re.compile(r'\(([0-9A-Fa-f]{4}),"?([^"]*?)"?,([0-9A-Fa-f]{2})\)')
PUBLIC_SEGMENT = re.compile(r"\([0-9A-Fa-f]{4},[0-9A-Fa-f]{4}\)")
# A creator that is itself a tag ("0021,1000") is a mangled signature, not a creator.
TAG_AS_CREATOR = re.compile(r"[0-9A-Fa-f]{4},[0-9A-Fa-f]{4}")
# TCIA's name for a block that had no Private Creator; no real data set carries it.
UNNAMED_BLOCK = "unnamed private block"


class PrivateKey(NamedTuple):
    """A private element independent of its block: group, creator (casefolded), element."""

    group: int
    creator: str
    element: int


class SafePrivateRow(NamedTuple):
    """One row of safe_private.csv."""

    group: int
    creator: str
    element: int
    vr: str
    source: str


@dataclass
class TciaStats:
    """Counts reported by the TCIA pass."""

    rows: int = 0
    unparseable: list[str] = field(default_factory=list)
    no_creator: int = 0
    even_group: int = 0
    elements: int = 0
    safe: int = 0
    mixed: int = 0
    tainted: int = 0
    dispositions: Counter[str] = field(default_factory=Counter)


def _annex_e_tag(raw: str) -> str:
    """Return the CSV spelling of a Table E.1-1 tag: 8 hex digits or a pattern name."""
    if raw in PATTERN_TAGS:
        return PATTERN_TAGS[raw]
    match = PLAIN_TAG.fullmatch(raw.strip())
    if match is None:
        raise ValueError(f"unexpected tag in Table E.1-1: {raw!r}")
    return (match[1] + match[2]).upper()


def build_annex_e(reference: Path) -> list[dict[str, str]]:
    """Read Table E.1-1 and return its CSV rows, sorted by tag."""
    entries = json.loads((reference / ANNEX_E_SOURCE).read_text(encoding="utf-8"))
    rows: list[dict[str, str]] = []
    for entry in entries:
        tag = _annex_e_tag(entry["tag"])
        keyword = vr = ""
        if tag not in PATTERN_TAGS.values():
            number = int(tag, 16)
            keyword = keyword_for_tag(number)
            # Kept as pydicom spells it, including "US or SS"-style multiple VRs.
            vr = dictionary_VR(number) if dictionary_has_tag(number) else ""
        basic = entry["basicProfile"].strip()
        if basic not in BASIC_CODES:
            raise ValueError(f"unexpected Basic Profile code {basic!r} for {entry['tag']}")
        # Collapse whitespace: a few cells carry line breaks (e.g. "Icon Image Sequence
        # (see Note 11)"), which would make multi-line CSV records.
        name = " ".join(entry["name"].split())
        row = {"tag": tag, "keyword": keyword, "vr": vr, "name": name, "basic": basic}
        for key, column in OPTION_COLUMNS.items():
            code = entry.get(key, "").strip()
            if code and code not in OPTION_CODES:
                raise ValueError(f"unexpected {key} code {code!r} for {entry['tag']}")
            row[column] = code
        rows.append(row)
    rows.sort(key=lambda row: row["tag"])
    tags = [row["tag"] for row in rows]
    if len(rows) != ANNEX_E_ROWS or len(set(tags)) != len(tags):
        raise ValueError(f"expected {ANNEX_E_ROWS} distinct tags, got {len(set(tags))}")
    return rows


def _parse_signature(signature: str) -> list[tuple[int, str, int]] | None:
    """Return the private (group, creator, element) triples of a TCIA signature, outermost
    first, or None if any segment is malformed."""
    triples: list[tuple[int, str, int]] = []
    for segment in ITEM_MARKER.split(signature.strip()):
        if PUBLIC_SEGMENT.fullmatch(segment):
            continue
        match = PRIVATE_SEGMENT.fullmatch(segment)
        if match is None or TAG_AS_CREATOR.fullmatch(match[2].strip()):
            return None
        triples.append((int(match[1], 16), match[2].strip(), int(match[3], 16)))
    return triples or None


def _has_creator(creator: str) -> bool:
    return bool(creator) and not creator.casefold().startswith(UNNAMED_BLOCK)


def _pick_vr(counts: Counter[str]) -> str:
    """Known VRs of an element: UN means "not known", several become "A or B"."""
    known = sorted(vr for vr in counts if vr and vr != "UN")
    return " or ".join(known)


def build_tcia(
    reference: Path,
) -> tuple[list[SafePrivateRow], dict[PrivateKey, set[str]], TciaStats]:
    """Return the TCIA elements judged safe, every element's dispositions, and counts.

    An element is safe when every row whose last private triple is that element says
    ``k``; a row that ends in a public element nested in a private sequence counts for
    that sequence, the last private triple. Being conservative, an element is also
    unsafe when any row nested inside it (a signature that passes through it) has a
    disposition other than ``k``, because a flat table cannot say "keep the sequence but
    not all of its contents".
    """
    stats = TciaStats()
    dispositions: dict[PrivateKey, set[str]] = defaultdict(set)
    vrs: dict[PrivateKey, Counter[str]] = defaultdict(Counter)
    spellings: dict[PrivateKey, Counter[str]] = defaultdict(Counter)
    tainted: set[PrivateKey] = set()
    with (reference / TCIA_SOURCE).open(encoding="utf-8-sig", newline="") as handle:
        for record in csv.DictReader(handle):
            stats.rows += 1
            signature = record["element_sig_pattern"]
            disposition = (record["private_disposition"] or "").strip().lower()
            stats.dispositions[disposition] += 1
            triples = _parse_signature(signature)
            if triples is None:
                stats.unparseable.append(signature)
                continue
            if disposition != "k":
                for group, creator, element in triples[:-1]:
                    if _has_creator(creator):
                        tainted.add(PrivateKey(group, creator.casefold(), element))
            group, creator, element = triples[-1]
            if not _has_creator(creator):
                stats.no_creator += 1
                continue
            if group % 2 == 0:
                stats.even_group += 1
                continue
            key = PrivateKey(group, creator.casefold(), element)
            dispositions[key].add(disposition)
            spellings[key][creator] += 1
            # A VR belongs to the triple only when the signature ends with it; otherwise
            # it is the VR of a public element nested inside the private one.
            if PRIVATE_SEGMENT.fullmatch(ITEM_MARKER.split(signature.strip())[-1]):
                vrs[key][(record["vr"] or "").strip().upper()] += 1
    safe: list[SafePrivateRow] = []
    for key, seen in dispositions.items():
        if seen != {"k"}:
            stats.mixed += "k" in seen
            continue
        if key in tainted:
            stats.tainted += 1
            continue
        # Most frequent spelling of the creator; ties go to the first in sort order.
        creator = min(spellings[key].items(), key=lambda item: (-item[1], item[0]))[0]
        safe.append(
            SafePrivateRow(key.group, creator, key.element, _pick_vr(vrs[key]), SOURCE_TCIA)
        )
    stats.elements = len(dispositions)
    stats.safe = len(safe)
    return safe, dispositions, stats


def build_safe_private(
    reference: Path,
) -> tuple[list[SafePrivateRow], TciaStats, list[PrivateKey], list[PrivateKey]]:
    """Merge Table E.3.10-1 and the TCIA safe elements into sorted, deduplicated rows.

    Returns the rows, the TCIA counts, the standard's elements TCIA also judged safe
    (kept once, as E.3.10-1), and the standard's elements TCIA disagrees with (kept,
    since the standard lists them).
    """
    rows: dict[PrivateKey, SafePrivateRow] = {}
    for group, creator, element, vr in TABLE_E_3_10_1:
        if group % 2 == 0:
            raise ValueError(f"Table E.3.10-1 entry in even group {group:04X}")
        key = PrivateKey(group, creator.strip().casefold(), element)
        if key in rows:
            raise ValueError(f"duplicate Table E.3.10-1 entry {key}")
        rows[key] = SafePrivateRow(group, creator.strip(), element, vr, SOURCE_STANDARD)
    tcia_safe, dispositions, stats = build_tcia(reference)
    overlap: list[PrivateKey] = []
    for row in tcia_safe:
        key = PrivateKey(row.group, row.creator.casefold(), row.element)
        if key in rows:
            overlap.append(key)
        else:
            rows[key] = row
    disagree = sorted(key for key in rows if dispositions.get(key, {"k"}) - {"k"})
    ordered = sorted(
        rows.values(), key=lambda row: (row.group, row.creator.casefold(), row.element)
    )
    return ordered, stats, sorted(overlap), disagree


def _write_csv(path: Path, header: list[str], rows: list[list[str]]) -> None:
    """Write a plain CSV with "\\n" line ends so output is the same on every platform."""
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


def generate(reference: Path, output: Path) -> str:
    """Write both tables into ``output`` and return a human-readable summary."""
    annex_e = build_annex_e(reference)
    safe_private, stats, overlap, disagree = build_safe_private(reference)
    output.mkdir(parents=True, exist_ok=True)
    _write_csv(
        output / "annex_e.csv",
        ANNEX_E_HEADER,
        [[row[c] for c in ANNEX_E_HEADER] for row in annex_e],
    )
    _write_csv(
        output / "safe_private.csv",
        SAFE_PRIVATE_HEADER,
        [[f"{r.group:04X}", r.creator, f"{r.element:02X}", r.vr, r.source] for r in safe_private],
    )
    by_source = Counter(row.source for row in safe_private)
    lines = [
        f"annex_e.csv: {len(annex_e)} rows from {ANNEX_E_SOURCE}",
        f"safe_private.csv: {len(safe_private)} rows "
        f"({by_source[SOURCE_STANDARD]} {SOURCE_STANDARD}, {by_source[SOURCE_TCIA]} {SOURCE_TCIA})",
        f"  {SOURCE_STANDARD}: {len(TABLE_E_3_10_1)} rows in the generator's literal table",
        f"  {SOURCE_TCIA}: {stats.rows} rows read from {TCIA_SOURCE}",
        f"    skipped, signature not parseable: {len(stats.unparseable)}",
        *(f"      {signature}" for signature in stats.unparseable),
        f"    skipped, no Private Creator (empty or 'Unnamed Private Block'): {stats.no_creator}",
        f"    skipped, even group: {stats.even_group}",
        f"    distinct private elements: {stats.elements}",
        f"    safe (every row k): {stats.safe}",
        f"    not safe, k mixed with another disposition: {stats.mixed}",
        f"    not safe, all k but a nested element is not k: {stats.tainted}",
        f"    also in {SOURCE_STANDARD} (kept once, as {SOURCE_STANDARD}): {len(overlap)}",
        "    dispositions after normalising: "
        + ", ".join(
            f"{name or '(empty)'}={count}" for name, count in sorted(stats.dispositions.items())
        ),
        f"  {SOURCE_STANDARD} rows TCIA does not judge safe (kept, the standard lists them): "
        f"{len(disagree)}",
        *(f"      ({k.group:04X},xx{k.element:02X}) {k.creator}" for k in disagree),
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; ``argv`` lets tests pass ``--output``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--reference", type=Path, default=DEFAULT_REFERENCE, help="reference data folder"
    )
    parser.add_argument(
        "--output", type=Path, default=DEFAULT_OUTPUT, help="folder to write the CSVs into"
    )
    args = parser.parse_args(argv)
    print(generate(args.reference, args.output))
    return 0


if __name__ == "__main__":
    sys.exit(main())
