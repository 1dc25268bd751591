"""The leak sweep: a token in every place PHI can hide, through every shipped profile.

`phi_everywhere` plants a unique token into every Table E.1-1 attribute pydicom knows,
private elements (text, OB, UN, private sequences), overlays, curves, nested sequences
and SR text. After de-identification no token, original UID or original date may occur
anywhere in the output bytes, except in an attribute the profile says to keep.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.datadict import dictionary_VR, keyword_for_tag, tag_for_keyword

from deid_node.config import Option, ProfileConfig
from deid_node.deid.decisions import STRING_VRS, is_curve_or_overlay
from deid_node.deid.pipeline import process_file
from deid_node.deid.profiles import TEXT_VRS, CompiledProfile, Op, compile_profile, unlisted_ops
from deid_node.object_status import Status
from deid_node.testing.synthetic import PhiTokens, phi_beyond_table, phi_everywhere, write_files
from deid_node.testing.synthetic.beyond import LOCAL_CODE_SEQUENCE, STANDARD_CODE
from tests.support.profiles import shipped_profiles

KEY = b"\x5a" * 32
# Cleaned text keeps no token: the free-text cleaner replaces every one (PHI00042Z).
_KEPT = {Op.KEEP, Op.KEEP_VERBATIM}
_PART = re.compile(r"^(?P<name>[A-Za-z0-9]+|\([0-9A-Fa-f]{4},[0-9A-Fa-fx]{4}\))(\[\d+\])?$")


def _tag(part: str) -> int | None:
    match = _PART.match(part.split("^")[0])
    if not match:
        return None
    name = match.group("name")
    if name.startswith("("):
        return int(name[1:5] + name[6:10].replace("x", "1").replace("X", "1"), 16)
    return tag_for_keyword(name)


def may_survive(path: str, profile: CompiledProfile) -> bool:
    """True if the profile keeps the value at this tag path (so a token there may stay)."""
    parts = path.split(".")
    dummy = False
    for part in parts[:-1]:
        tag = _tag(part)
        if tag is None or tag >> 16 & 1:
            return profile.keep_safe_private
        op = profile.ops.get(tag, Op.RECURSE)
        if op not in (Op.RECURSE, Op.KEEP, Op.CLEAN, Op.DUMMY_SEQUENCE, Op.KEEP_VERBATIM):
            return False
        if op is Op.DUMMY_SEQUENCE:
            dummy = True
        elif (keyword_for_tag(tag) or "").endswith("CodeSequence"):
            dummy = False
    tag = _tag(parts[-1])
    if tag is None or tag >> 16 & 1 or is_curve_or_overlay(tag >> 16):
        return tag is not None and tag >> 16 & 1 == 1 and profile.keep_safe_private
    op = profile.ops.get(tag)
    if op is None:  # not in E.1-1: names, dates and instance UIDs go; text by its row
        vr = dictionary_VR(tag) if keyword_for_tag(tag) else ""
        if vr in ("PN", "DA", "DT", "UI") or not vr:
            return vr == "UI" and profile.has(Option.RETAIN_UIDS)
        if dummy and vr in TEXT_VRS:
            return False
        op = unlisted_ops().get(tag, Op.REMOVE if vr in STRING_VRS else Op.KEEP)
    return op in _KEPT


def _leaks(data: bytes, tokens: PhiTokens, profile: CompiledProfile) -> list[str]:
    leaks = []
    for value in _survivors(data, tokens):
        paths = tokens.paths(value)
        if not any(may_survive(p, profile) for p in paths):
            leaks.append(f"{value} at {paths}")
    return leaks


def _survivors(data: bytes, tokens: PhiTokens) -> list[str]:
    found = []
    for value in tokens.values():
        raw = value.encode()
        # A planted date may occur by chance inside a 39-digit pseudonymous UID.
        pattern = rb"(?<![0-9])" + re.escape(raw) + rb"(?![0-9])" if value.isdigit() else None
        if (pattern and re.search(pattern, data)) or (not pattern and raw in data):
            found.append(value)
    return found


@pytest.mark.parametrize("name", sorted(shipped_profiles()))
def test_no_token_survives(name: str, tmp_path: Path) -> None:
    profile = compile_profile(shipped_profiles()[name])
    tokens = PhiTokens()
    [src] = write_files([phi_everywhere(tokens)], tmp_path / "in")
    assert len(tokens.values()) > 400
    outcome = process_file(src, profile, KEY, tmp_path / "out")
    assert outcome.status is Status.STORED, outcome.reason  # cleaned, not merely quarantined
    assert outcome.output_path is not None
    leaks = _leaks(outcome.output_path.read_bytes(), tokens, profile)
    assert not leaks, f"{len(leaks)} leaked under profile {name}: " + "; ".join(leaks[:20])


def test_sweep_really_detects_a_leak(tmp_path: Path) -> None:
    """The sweep's own check fails when a token is kept where the profile removes it."""
    tokens = PhiTokens()
    ds = phi_everywhere(tokens)
    profile = compile_profile(ProfileConfig(name="basic"))
    family = str(ds.PatientName).split("^")[0]
    assert family in _survivors(str(ds.PatientName).encode(), tokens)
    assert not any(may_survive(p, profile) for p in tokens.paths(family))


@pytest.mark.parametrize("name", sorted(shipped_profiles()))
def test_no_token_survives_beyond_table(name: str, tmp_path: Path) -> None:
    """Every standard text attribute E.1-1 does not list, top level and nested: only a
    `keep` row keeps its token, and a standard code survives where a local one does not."""
    profile = compile_profile(shipped_profiles()[name])
    tokens = PhiTokens()
    [src] = write_files([phi_beyond_table(tokens)], tmp_path / "in")
    assert len(tokens.values()) > 2000
    outcome = process_file(src, profile, KEY, tmp_path / "out")
    assert outcome.status is Status.STORED, outcome.reason
    assert outcome.output_path is not None
    leaks = _leaks(outcome.output_path.read_bytes(), tokens, profile)
    assert not leaks, f"{len(leaks)} leaked under profile {name}: " + "; ".join(leaks[:20])
    out = dcmread(outcome.output_path)
    kept = [
        (i.CodeValue, i.CodingSchemeDesignator, i.CodeMeaning)
        for i in out[LOCAL_CODE_SEQUENCE].value
        if "CodeValue" in i
    ]
    assert STANDARD_CODE in kept
