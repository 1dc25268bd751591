"""Region rules are data: read from the config and the shipped file, matched on the header
as it arrived, every matching rule applied; ultrasound regions kept, the rest blanked."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from pydicom.dataset import Dataset

from deid_node.config import ProfileConfig, RegionRule, parse_config
from deid_node.errors import ConfigError
from deid_node.pixels.ocr import Box
from deid_node.pixels.rules import (
    given_boxes,
    matches,
    outside,
    rule_regions,
    shipped_rules,
    ultrasound_regions,
)


def profile_from(text: str) -> ProfileConfig:
    raw = tomllib.loads('[node]\ndata_dir = "var"\n' + text)
    return parse_config(raw, base_dir=Path("/tmp")).profiles["p"]


def header(**values: object) -> Dataset:
    ds = Dataset()
    ds.Rows, ds.Columns = 480, 640
    for keyword, value in values.items():
        setattr(ds, keyword, value)
    return ds


def test_profile_rules_are_read_from_the_config() -> None:
    prof = profile_from(
        """
[profiles.p]
burned_in_annotation = "clean"
ultrasound_regions = true
shipped_pixel_rules = false
[[profiles.p.pixel_rules]]
name = "banner"
match = { Manufacturer = "ACME*", Rows = 480, ImageType = ["ORIGINAL\\\\*", "DERIVED\\\\*"] }
regions = [[0, 0, 640, 40], [-100, -20, 100, 20]]
"""
    )
    assert prof.ultrasound_regions and not prof.shipped_pixel_rules
    [rule] = prof.pixel_rules
    assert rule.name == "banner"
    assert dict(rule.match) == {
        "ImageType": ("ORIGINAL\\*", "DERIVED\\*"),
        "Manufacturer": ("ACME*",),
        "Rows": ("480",),
    }
    assert rule.regions == ((0, 0, 640, 40), (-100, -20, 100, 20))


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        (
            'match = { NotAKeyword = "x" }\nregions = [[0, 0, 1, 1]]',
            "match.NotAKeyword: not a DICOM",
        ),
        ("regions = [[0, 0, 1, 1]]", "match: is required"),
        ('match = { Modality = "US" }', "regions: is required"),
        ('match = { Modality = "US" }\nregions = [[0, 0, 1]]', "regions[0]: expected [left"),
        ('match = { Modality = "US" }\nregions = [[0, 0, 0, 5]]', "must be positive"),
        ("match = { Modality = true }\nregions = [[0, 0, 1, 1]]", "expected a pattern"),
        ('match = { Modality = "US" }\nregions = [[0, 0, 1, 1]]\nwhere = 1', "where: unknown key"),
    ],
)
def test_a_bad_rule_is_a_one_line_error_naming_its_key(rule: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        profile_from(f"[profiles.p]\n[[profiles.p.pixel_rules]]\n{rule}\n")
    text = str(caught.value)
    assert "\n" not in text and "profiles.p.pixel_rules[0]" in text and message in text


def test_matching_is_case_blind_with_wildcards_and_needs_every_attribute() -> None:
    rule = RegionRule(
        "r", (("Manufacturer", ("acme*",)), ("ImageType", ("ORIGINAL\\PRIMARY*",))), ((0, 0, 1, 1),)
    )
    assert matches(rule, header(Manufacturer="ACME Medical", ImageType=["ORIGINAL", "PRIMARY"]))
    assert not matches(rule, header(Manufacturer="ACME Medical", ImageType=["DERIVED"]))
    assert not matches(rule, header(Manufacturer="ACME Medical"))  # ImageType missing
    numeric = RegionRule("n", (("Rows", ("480", "600")),), ((0, 0, 1, 1),))
    assert matches(numeric, header()) and not matches(numeric, header(Rows=512))


def test_regions_count_from_the_far_edge_when_negative_and_stay_inside() -> None:
    rule = RegionRule("r", (("Rows", ("*",)),), ((-100, -20, 100, 20), (600, 0, 500, 10)))
    assert rule_regions(rule, 480, 640) == [Box(540, 460, 640, 480), Box(600, 0, 640, 10)]


def test_every_matching_rule_applies_with_the_shipped_ones() -> None:
    ds = header(Modality="US", ManufacturerModelName="Synthetica Sono 2", Manufacturer="ACME")
    top = RegionRule("top", (("Manufacturer", ("ACME",)),), ((0, 0, 50, 50),))
    side = RegionRule("side", (("Modality", ("US",)),), ((600, 0, 40, 480),))
    other = RegionRule("other", (("Modality", ("CT",)),), ((0, 0, 640, 480),))
    prof = ProfileConfig(name="p", pixel_rules=(top, side, other))
    boxes, names = given_boxes(ds, prof)
    assert names == ["Synthetica Sono patient banner", "top", "side"]
    assert boxes == [Box(0, 0, 640, 40), Box(0, 0, 50, 50), Box(600, 0, 640, 480)]
    alone = ProfileConfig(name="p", pixel_rules=(top,), shipped_pixel_rules=False)
    assert given_boxes(ds, alone) == ([Box(0, 0, 50, 50)], ["top"])


def test_the_shipped_rule_file_parses() -> None:
    rules = shipped_rules()
    assert rules and all(r.regions and r.match for r in rules)


def test_outside_the_ultrasound_regions_everything_is_covered_once() -> None:
    item = Dataset()
    item.RegionLocationMinX0, item.RegionLocationMinY0 = 100, 50
    item.RegionLocationMaxX1, item.RegionLocationMaxY1 = 539, 429
    second = Dataset()
    second.RegionLocationMinX0, second.RegionLocationMinY0 = 500, 400
    second.RegionLocationMaxX1, second.RegionLocationMaxY1 = 619, 469
    ds = header(SequenceOfUltrasoundRegions=[item, second])
    regions = ultrasound_regions(ds)
    assert regions == [Box(100, 50, 540, 430), Box(500, 400, 620, 470)]
    rest = outside(regions, 480, 640)
    cover = [[0] * 640 for _ in range(480)]
    for b in [*regions, *rest]:
        for y in range(b.top, b.bottom):
            for x in range(b.left, b.right):
                cover[y][x] += 1
    inside = {
        (y, x) for b in regions for y in range(b.top, b.bottom) for x in range(b.left, b.right)
    }
    for y in range(480):
        for x in range(640):
            assert cover[y][x] >= 1
            if (y, x) not in inside:
                assert cover[y][x] == 1  # the rest is covered exactly once, by `outside`
    assert not any(b.overlaps(r) for b in rest for r in regions)
    prof = ProfileConfig(name="p", ultrasound_regions=True, shipped_pixel_rules=False)
    assert given_boxes(ds, prof) == (rest, ["outside the ultrasound regions"])
    assert given_boxes(header(), prof) == ([], [])  # no regions declared: nothing given
