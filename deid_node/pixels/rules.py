"""Rectangles given beforehand: region rules, and what lies outside ultrasound regions.

Rules are data (config.RegionRule): the file shipped in deid_node/data and each profile's
own `pixel_rules`. Every rule that matches applies, not only the first. They are matched
on the header as it arrived, before de-identification removes what they match on.
"""

from __future__ import annotations

import fnmatch
import itertools
import tomllib
from collections.abc import Iterable, Sequence
from functools import cache
from importlib import resources
from typing import Final

from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from deid_node.config import ProfileConfig, RegionRule, parse_region_rules
from deid_node.pixels.ocr import Box

SHIPPED_RULES: Final = "pixel_rules.toml"


@cache
def shipped_rules() -> tuple[RegionRule, ...]:
    """The rules in deid_node/data/pixel_rules.toml."""
    text = resources.files("deid_node").joinpath("data", SHIPPED_RULES).read_text("utf-8")
    return parse_region_rules(tomllib.loads(text).get("rules", []), "rules", None)


def _text(value: object) -> str:
    if isinstance(value, MultiValue | list | tuple):
        return "\\".join(str(v).strip() for v in value)
    return str(value).strip()


def matches(rule: RegionRule, ds: Dataset) -> bool:
    """Whether every attribute the rule names is in ds and matches one of its patterns."""
    for keyword, patterns in rule.match:
        if keyword not in ds:
            return False
        value = _text(ds.get(keyword)).upper()
        if not any(fnmatch.fnmatchcase(value, p.upper()) for p in patterns):
            return False
    return True


def rule_regions(rule: RegionRule, rows: int, columns: int) -> list[Box]:
    """The rule's rectangles as boxes within a rows x columns image."""
    boxes = []
    for left, top, width, height in rule.regions:
        x = left if left >= 0 else columns + left
        y = top if top >= 0 else rows + top
        box = Box(max(0, x), max(0, y), min(columns, x + width), min(rows, y + height))
        if box.right > box.left and box.bottom > box.top:
            boxes.append(box)
    return boxes


def ultrasound_regions(ds: Dataset) -> list[Box]:
    """The data regions of SequenceOfUltrasoundRegions (their max corners are inclusive)."""
    boxes = []
    for item in ds.get("SequenceOfUltrasoundRegions") or []:
        try:
            x0, y0 = int(item.RegionLocationMinX0), int(item.RegionLocationMinY0)
            x1, y1 = int(item.RegionLocationMaxX1), int(item.RegionLocationMaxY1)
        except (AttributeError, TypeError, ValueError):
            continue  # an incomplete item keeps nothing: everything outside others is blanked
        if x1 >= x0 and y1 >= y0:
            boxes.append(Box(x0, y0, x1 + 1, y1 + 1))
    return boxes


def outside(kept: Sequence[Box], rows: int, columns: int) -> list[Box]:
    """Boxes covering everything in the image that no box in `kept` covers."""
    kept = [
        Box(max(0, b.left), max(0, b.top), min(columns, b.right), min(rows, b.bottom)) for b in kept
    ]
    kept = [b for b in kept if b.right > b.left and b.bottom > b.top]
    edges = sorted({0, rows, *(b.top for b in kept), *(b.bottom for b in kept)})
    out = []
    for top, bottom in itertools.pairwise(edges):
        spans = sorted((b.left, b.right) for b in kept if b.top <= top and b.bottom >= bottom)
        x = 0
        for left, right in spans:
            if left > x:
                out.append(Box(x, top, left, bottom))
            x = max(x, right)
        if x < columns:
            out.append(Box(x, top, columns, bottom))
    return out


def given_boxes(ds: Dataset, profile: ProfileConfig) -> tuple[list[Box], list[str]]:
    """What the profile blanks in this object before looking: boxes, and why (rule names).

    `ds` is the header as it arrived. With `ultrasound_regions`, an object that declares
    ultrasound regions has everything outside them blanked.
    """
    rows, columns = int(ds.Rows), int(ds.Columns)
    rules: Iterable[RegionRule] = profile.pixel_rules
    if profile.shipped_pixel_rules:
        rules = (*shipped_rules(), *profile.pixel_rules)
    boxes: list[Box] = []
    names: list[str] = []
    for rule in rules:
        if matches(rule, ds):
            boxes += rule_regions(rule, rows, columns)
            names.append(rule.name)
    if profile.ultrasound_regions:
        regions = ultrasound_regions(ds)
        if regions:
            boxes += outside(regions, rows, columns)
            names.append("outside the ultrasound regions")
    return boxes, names
