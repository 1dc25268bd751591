"""Names that are words, names run together, ages, names in other scripts and third-party
names in kept private values (issue 22): planted at the top level and nested, in several
scripts and character sets, through every shipped profile, in both engines (byte-equal)."""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from faker import Faker
from pydicom import dcmread
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from deid_node.deid.private import Kind, kind_for, listed_kinds
from deid_node.deid.profiles import compile_profile
from deid_node.deid.text import PLACEHOLDER, TextCleaner, vocabulary
from deid_node.object_status import Status
from deid_node.testing.synthetic import PETD_CREATOR, named_text_object
from tests.support.leaks import name_leaks
from tests.support.profiles import both_engines, shipped_profiles

KEY = b"\x5a" * 32
# Words of the planted text and of what the profile writes: a name chosen among them
# could not be told from them in the output.
_TEMPLATE = set(
    " ".join(
        [
            "reports chest pain seen referred aged year old age yo contrast report note on",
            "context scanner tech for by a ct dr clean retain safe private option options",
            "profile basic application confidentiality dates modified full longitudinal",
            "temporal information structured content graphics descriptors device",
            "identity institution patient characteristics uids removed anonymized yes no",
        ]
    ).split()
)


def _word_names(seed: int, count: int) -> list[str]:
    """Names that are words of the vocabulary (Faker's English lorem words)."""
    fake = Faker("en_US")
    fake.seed_instance(seed)
    words = vocabulary()
    found: list[str] = []
    while len(found) < count:
        w = fake.word()
        if w.isalpha() and len(w) >= 3 and w in words and w not in _TEMPLATE and w not in found:
            found.append(w)
    return [w.capitalize() for w in found]


@dataclass(frozen=True)
class Case:
    """One patient: names in a locale's scripts, a character set."""

    id: str
    kwargs: dict[str, Any]


def _cases() -> list[Case]:
    cases = []
    for seed in range(3):
        family, given, first, last = _word_names(seed, 4)
        kwargs = {"family": family, "given": given, "third_party": (first, last)}
        cases.append(Case(f"words-{seed}", kwargs))
    third = tuple(_word_names(7, 2))
    for locale, charset in (
        ("en_GB", "ISO_IR 100"),
        ("de_DE", "ISO_IR 100"),
        ("ru_RU", "ISO_IR 144"),
        ("el_GR", "ISO_IR 192"),
    ):
        fake = Faker(locale)
        fake.seed_instance(5)
        family, given = fake.last_name(), fake.first_name()
        kwargs = {"family": family, "given": given, "third_party": third, "charset": charset}
        cases.append(Case(locale, kwargs))
    zh = Faker("zh_CN")
    zh.seed_instance(2)
    kwargs = {
        "family": zh.last_romanized_name(),
        "given": zh.first_romanized_name(),
        "ideographic": ("王", "小东"),  # a one-character family name
        "third_party": third,
    }
    cases.append(Case("zh_CN-utf8", kwargs))
    ja = Faker("ja_JP")
    ja.seed_instance(4)
    kwargs = {
        "family": ja.last_romanized_name(),
        "given": ja.first_romanized_name(),
        "ideographic": (ja.last_name(), ja.first_name()),
        "phonetic": (ja.last_kana_name(), ja.first_kana_name()),
        "third_party": third,
        "charset": "\\ISO 2022 IR 87",
    }
    cases.append(Case("ja_JP-ir87", kwargs))
    ko = Faker("ko_KR")
    ko.seed_instance(6)
    kwargs = {
        "family": "Hong",
        "given": "Gildong",
        "ideographic": ("洪", "吉童"),
        "phonetic": ("홍", ko.first_name()),
        "third_party": third,
        "charset": "\\ISO 2022 IR 149",
    }
    cases.append(Case("ko_KR-ir149", kwargs))
    return cases


CASES = _cases()
PROFILES = sorted(shipped_profiles().items())


@pytest.mark.parametrize(
    "ts", [ExplicitVRLittleEndian, ImplicitVRLittleEndian], ids=["explicit", "implicit"]
)
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_no_name_age_or_joined_name_survives_any_profile(
    case: Case, ts: str, tmp_path: Path
) -> None:
    uid_root = f"2.25.{zlib.crc32(f'{case.id} {ts}'.encode())}"
    ds, planted = named_text_object(uid_root, **case.kwargs)
    ds.file_meta.TransferSyntaxUID = ts
    src = tmp_path / "in.dcm"
    ds.save_as(src, enforce_file_format=True)
    for name, config in PROFILES:
        profile = compile_profile(config)
        outcome = both_engines(src, profile, KEY, tmp_path / name)
        assert outcome.status is Status.STORED, (name, outcome.reason)
        assert outcome.output_path is not None
        out = dcmread(outcome.output_path)
        assert name_leaks(out, planted) == [], name
        if "ImageComments" in out:  # kept and cleaned: the clinical words stay
            assert "chest pain" in out.ImageComments and PLACEHOLDER in out.ImageComments


@pytest.mark.parametrize(
    "ts", [ExplicitVRLittleEndian, ImplicitVRLittleEndian], ids=["explicit", "implicit"]
)
@pytest.mark.parametrize(("name", "config"), PROFILES, ids=[n for n, _ in PROFILES])
def test_safe_private_values_keep_only_their_listed_kind(
    name: str, config: Any, ts: str, tmp_path: Path
) -> None:
    case = CASES[0]
    ds, planted = named_text_object("2.25.4242", **case.kwargs)
    # (0009,xx01) of GEIIS_RA1000 is listed as a code: the patient's name there is none.
    ds.private_block(0x0009, "GEIIS_RA1000", create=True).add_new(
        0x01, "CS", case.kwargs["family"].upper()
    )
    reference = ds.ReferencedImageSequence[0]
    reference.private_block(0x0009, "GEIIS_RA1000", create=True).add_new(0x01, "CS", "AXIAL")
    ds.file_meta.TransferSyntaxUID = ts
    src = tmp_path / "in.dcm"
    ds.save_as(src, enforce_file_format=True)
    profile = compile_profile(config)
    outcome = both_engines(src, profile, KEY, tmp_path)
    assert outcome.status is Status.STORED and outcome.output_path is not None
    out = dcmread(outcome.output_path)
    if not profile.keep_safe_private:
        assert not any(t.group & 1 for t in out.keys())  # noqa: SIM118
        return
    assert list(out.private_creators(0x0009)) == [PETD_CREATOR]  # GEIIS_RA1000: emptied
    top = out.private_block(0x0009, PETD_CREATOR)
    count = top[0x16].value  # SL: a number, also where implicit VR leaves it as bytes
    assert (int.from_bytes(count, "little") if isinstance(count, bytes) else count) == 3
    assert _text(top[0x7F].value) == "2.5"  # a number stays a number
    # Free text in a kept private value is cleaned like any kept text.
    assert _text(top[0x11].value) == f"Scanner by {PLACEHOLDER} {PLACEHOLDER} for ***"
    item = out.ReferencedImageSequence[0]
    inner = item.private_block(0x0009, PETD_CREATOR)
    with pytest.raises(KeyError):
        inner[0x7F]  # a name where the list says a number: removed
    assert _text(inner[0x11].value) == f"Tech {PLACEHOLDER} {PLACEHOLDER}"
    assert _text(item.private_block(0x0009, "GEIIS_RA1000")[0x01].value) == "AXIAL"
    assert name_leaks(out, planted) == []


def _text(value: object) -> str:
    text = value.decode("ascii") if isinstance(value, bytes) else str(value)
    return text.strip("\0 ")


@pytest.mark.parametrize(
    ("text", "cleaned"),
    [
        ("aged 93, stable", f"{PLACEHOLDER}, stable"),
        ("a 7-year-old boy", f"a {PLACEHOLDER} boy"),
        ("61 yo female, 47yo male", f"{PLACEHOLDER} female, {PLACEHOLDER} male"),
        ("Age: 45. Follow-up 5 years", f"{PLACEHOLDER}. Follow-up 5 years"),
        ("ninety-three years old", PLACEHOLDER),
        (
            "Seen by Dr. Violet Iris and nurse Sky.",
            f"Seen by Dr. {PLACEHOLDER} {PLACEHOLDER} and nurse {PLACEHOLDER}.",
        ),
        (
            "SEEN BY DR. WILL BRIDGE AND NURSE SKY",
            f"SEEN BY DR. {PLACEHOLDER} {PLACEHOLDER} AND NURSE {PLACEHOLDER}",
        ),
        ("referred by Will Bridge for CT", f"referred by {PLACEHOLDER} {PLACEHOLDER} for CT"),
        ("Dr Smithers CT", f"Dr {PLACEHOLDER} CT"),
        ("DR CHEST PA", "DR CHEST PA"),  # digital radiography, not a doctor
        ("replaced by T2 FLAIR", "replaced by T2 FLAIR"),  # a code is no name
        ("SORTED BY SLICE", "SORTED BY SLICE"),
        ("the resident on call", "the resident on call"),
        ("王小东 胸部检查", f"{PLACEHOLDER} {PLACEHOLDER}"),
        ("홍 흉부", f"{PLACEHOLDER} {PLACEHOLDER}"),
        ("やまだ たろう CT", f"{PLACEHOLDER} {PLACEHOLDER} CT"),
    ],
)
def test_ages_titles_and_east_asian_runs(text: str, cleaned: str) -> None:
    assert TextCleaner().clean(text) == cleaned


@pytest.mark.parametrize(
    ("sent", "listed", "kind"),
    [
        ("UN", "LO", (Kind.TEXT, "LO")),  # implicit VR: read as the listed text, cleaned
        ("LO", "SH", (Kind.TEXT, "LO")),  # text VRs stand for one another
        ("LO", "", (Kind.TEXT, "LO")),  # no listed VR: the one it came with
        ("LO", "DS", (Kind.SHAPED, "DS")),  # a number sent as text must read as one
        ("UN", "DS or OB", (Kind.SHAPED, "DS")),
        ("UN", "OB or SL", (Kind.BINARY, "UN")),
        ("SL", "OB or SL", (Kind.BINARY, "SL")),
        ("OB", "SL", (Kind.NONE, "OB")),  # bytes where a number is listed
        ("UN", "", (Kind.NONE, "UN")),  # no kind known: removed
        ("UN", "PN", (Kind.NONE, "PN")),  # a person name is never kept
    ],
)
def test_the_kind_a_kept_private_value_must_have(
    sent: str, listed: str, kind: tuple[Kind, str]
) -> None:
    assert kind_for(sent, listed_kinds(listed)) == kind
