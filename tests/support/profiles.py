"""Every shipped profile, and both engines run on one file."""

from __future__ import annotations

from pathlib import Path

from deid_node.config import Option, ProfileConfig, load_config
from deid_node.deid.pipeline import Outcome, process_file, process_file_dataset
from deid_node.deid.profiles import CompiledProfile
from tests.support.paths import REPO


def shipped_profiles() -> dict[str, ProfileConfig]:
    """The example config's profiles, plus basic, every option and full dates."""
    cfg = load_config(REPO / "config" / "deid-node.toml")
    profiles = dict(cfg.profiles)
    profiles["basic"] = ProfileConfig(name="basic")
    every = frozenset(Option) - {Option.RETAIN_LONGITUDINAL_FULL_DATES, Option.CLEAN_PIXEL_DATA}
    profiles["every-option"] = ProfileConfig(name="every-option", options=every)
    profiles["full-dates"] = ProfileConfig(
        name="full-dates", options=frozenset({Option.RETAIN_LONGITUDINAL_FULL_DATES})
    )
    return profiles


def both_engines(src: Path, profile: CompiledProfile, key: bytes, tmp: Path) -> Outcome:
    """Both engines on src: the same outcome and the same bytes; the stream's outcome."""
    old = process_file_dataset(src, profile, key, tmp / "old")
    new = process_file(src, profile, key, tmp / "new")
    assert (old.status, old.reason, old.pseudo_sop_uid) == (
        new.status,
        new.reason,
        new.pseudo_sop_uid,
    )
    if old.output_path is not None and new.output_path is not None:
        assert old.output_path.read_bytes() == new.output_path.read_bytes(), profile.name
    return new
