"""The free-text cleaner and the table of text attributes Table E.1-1 does not list."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from faker import Faker
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from deid_node.config import BurnedInPolicy, Option, ProfileConfig, parse_config
from deid_node.deid.dataset import deidentify_dataset
from deid_node.deid.decisions import op_table
from deid_node.deid.profiles import (
    TEXT_VRS,
    Op,
    annex_e_rows,
    compile_profile,
    describe,
    unlisted_rows,
)
from deid_node.deid.text import PLACEHOLDER, TextCleaner, fit, vocabulary
from deid_node.errors import ConfigError
from tests.support.files import PYDICOM_FILES

KEY = bytes(range(32))
RESEARCH = frozenset(
    {
        Option.RETAIN_LONGITUDINAL_MODIFIED_DATES,
        Option.RETAIN_SAFE_PRIVATE,
        Option.CLEAN_DESCRIPTORS,
        Option.CLEAN_STRUCTURED_CONTENT,
    }
)
# Longest value of each VR the placeholders must fit in.
SHORT = {"SH": 16, "LO": 64}


@pytest.mark.parametrize(
    ("text", "cleaned"),
    [
        ("AX T1 POST GAD 3MM", "AX T1 POST GAD 3MM"),
        ("CT for SMITH JOHN 12345", "CT for [removed] [removed] [removed]"),
        ("CT, HEAD/BRAIN WO CONTRAST", "CT, HEAD/BRAIN WO CONTRAST"),
        ("DWI b1000 ADC 512x512", "DWI b1000 ADC 512x512"),
        ("Sag T2 FLAIR 5 mm, 24 slices", "Sag T2 FLAIR 5 mm, 24 slices"),
        ("seen with her husband John, 12 Elm St", "seen with her husband [removed], [removed]"),
        ("call 555-867-5309 or j.doe@example.org", "call [removed] or [removed]"),
        ("MRN 00482913, born 03/04/1961", "MRN [removed], born [removed]"),
        ("ref PHI00042Z", "ref [removed]"),
        ("Lossy compression ratio 15.512", "Lossy compression ratio 15.512"),
        ("40 Samantha Place, PO9 2WZ", "[removed], [removed]"),
    ],
)
def test_the_cleaner_keeps_what_it_recognises(text: str, cleaned: str) -> None:
    assert TextCleaner().clean(text) == cleaned


def test_allow_words_restore_a_project_vocabulary() -> None:
    text = "BRAINSTORM cohort visit 2"
    assert TextCleaner().clean(text) == f"{PLACEHOLDER} cohort visit 2"
    assert TextCleaner(["brainstorm"]).clean(text) == text


def test_allow_words_in_the_config_and_a_bad_one(tmp_path: Path) -> None:
    def load(words: str) -> ProfileConfig:
        raw = tomllib.loads(f'[node]\ndata_dir = "var"\n[profiles.p]\nallow_words = {words}\n')
        return parse_config(raw, base_dir=tmp_path).profiles["p"]

    assert load('["Brainstorm", "v2", "brainstorm"]').allow_words == ("brainstorm", "v2")
    with pytest.raises(ConfigError) as caught:
        load('["two words"]')
    message = str(caught.value)
    assert "profiles.p.allow_words[0]" in message and "one word" in message
    assert "\n" not in message


def test_fit_merges_placeholders_before_cutting() -> None:
    text = TextCleaner().clean("Dr JONES WILKINS")
    assert text == "Dr [removed] [removed]" and len(text) > SHORT["SH"]
    assert fit(text, SHORT["SH"]) == "Dr [removed]"


def test_no_faker_name_is_in_the_vocabulary() -> None:
    words = vocabulary()
    fake = Faker(["en_US", "en_GB"])
    fake.seed_instance(11)
    names = {w.lower() for _ in range(500) for w in re.findall(r"[A-Za-z]+", fake.name())}
    names -= {"dr", "mr", "mrs", "ms", "miss", "md", "phd", "dds", "dvm", "jr", "sr", "ii", "iii"}
    names -= {"iv", "v"}
    assert not names & words


def _realistic(fake: Faker, limit: int | None) -> tuple[str, list[str]]:
    """A note full of made-up PHI, and the values that must not survive."""
    first, last = fake.first_name(), fake.last_name()
    if limit is not None and limit <= SHORT["SH"]:
        return f"Dr {last}"[:limit], [last]
    phone = fake.phone_number()
    if limit is not None:
        return f"{first} {last} {phone}"[:limit], [first, last]
    street = fake.street_address()
    email = fake.email()
    text = (
        f"Axial CT reviewed with {first} {last} (tel {phone}), lives at {street}, "
        f"{fake.postcode()}; contact {email}."
    )
    street_name = street.split()[1]
    return text, [first, last, street_name, email, re.sub(r"\D", "", phone)]


def test_realistic_phi_in_every_cleaned_text_is_gone() -> None:
    """Faker notes in every top-level text the research profile cleans (E.1-1 C cells
    and the unlisted `clean` rows): no name, street, phone or e-mail survives."""
    profile = compile_profile(ProfileConfig(name="r", options=RESEARCH))
    fake = Faker("en_US")
    fake.seed_instance(5)
    vrs = {row.tag: row.vr for row in unlisted_rows()}
    vrs.update({row.tag_int: row.vr for row in annex_e_rows() if row.tag_int is not None})
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    ds.SOPInstanceUID = ds.StudyInstanceUID = ds.SeriesInstanceUID = "1.2.826.0.1.3680043.8.498.7"
    ds.PatientID = "P1"
    planted: dict[int, list[str]] = {}
    table = op_table(profile)
    for tag, vr in sorted(vrs.items()):
        if vr not in TEXT_VRS or (tag >> 16 in (0x0002, 0x0008) and tag < 0x00080020):
            continue
        if table.op(tag, False) is not Op.CLEAN:
            continue
        limit = {"SH": 16, "LO": 64, "ST": None, "LT": None, "UT": None, "UC": None}[vr]
        text, secrets = _realistic(fake, limit)
        ds.add_new(tag, vr, text)
        planted[tag] = secrets
    assert len(planted) > 300
    out = deidentify_dataset(ds, profile, KEY).dataset
    leaks = []
    for tag, secrets in planted.items():
        value = str(out[tag].value) if tag in out else ""
        assert len(value) <= (SHORT.get(out[tag].VR, 10**6) if tag in out else 0)
        for secret in secrets:
            if secret and re.search(rf"\b{re.escape(secret)}\b", value, re.IGNORECASE):
                leaks.append(f"{tag:08X}: {secret}")
    assert not leaks, leaks[:10]
    kept = [
        str(out[t].value) for t in planted if t in out and "Axial CT reviewed" in str(out[t].value)
    ]
    assert kept  # the words around the PHI stay


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, scheme, meaning
    return item


def test_standard_codes_are_kept_and_local_codes_cleaned() -> None:
    """Codes of a standard scheme are kept as sent, meanings when the scheme gives them."""
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    ds.SOPInstanceUID = ds.StudyInstanceUID = ds.SeriesInstanceUID = "1.2.826.0.1.3680043.8.498.8"
    ds.AnatomicRegionSequence = Sequence(
        [
            _code("1163005009", "SCT", "Hodgkin's lymphoma"),
            _code("JW-77", "99ACME", "Dr Wilkins CT"),
            _code("1929004", "SCT", "Lymphoma seen by Dr Wilkins"),
        ]
    )
    assert "hodgkin" not in vocabulary()  # an eponym: only kept inside a standard code
    out = deidentify_dataset(ds, compile_profile(ProfileConfig(name="b")), KEY).dataset
    standard, local, odd = out.AnatomicRegionSequence
    assert (standard.CodeValue, standard.CodeMeaning) == ("1163005009", "Hodgkin's lymphoma")
    # A standard code whose meaning the scheme does not give keeps only known words.
    assert (odd.CodeValue, odd.CodingSchemeDesignator) == ("1929004", "SCT")
    assert odd.CodeMeaning == f"Lymphoma seen by Dr {PLACEHOLDER}"
    assert local.CodingSchemeDesignator == PLACEHOLDER
    assert local.CodeMeaning == f"Dr {PLACEHOLDER} CT"
    assert "JW" not in local.CodeValue


def test_sr_text_is_cleaned_under_clean_structured_content() -> None:
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.88.11"
    ds.SOPInstanceUID = ds.StudyInstanceUID = ds.SeriesInstanceUID = "1.2.826.0.1.3680043.8.498.9"
    item = Dataset()
    item.ValueType = "TEXT"
    item.ConceptNameCodeSequence = [_code("121071", "DCM", "Finding")]
    item.TextValue = "Solid nodule, 4 mm. Discussed with Dr Okafor on 555 0199 8812."
    ds.ContentSequence = Sequence([item])
    profile = compile_profile(
        ProfileConfig(name="s", options=frozenset({Option.CLEAN_STRUCTURED_CONTENT}))
    )
    out = deidentify_dataset(ds, profile, KEY).dataset
    assert out.ContentSequence[0].TextValue == (
        f"Solid nodule, 4 mm. Discussed with Dr {PLACEHOLDER} on {PLACEHOLDER}."
    )


@pytest.mark.parametrize(
    ("name", "keyword", "kept"),
    [
        ("JPEG-lossy.dcm", "StudyDescription", "Whole Body Bone"),
        ("examples_overlay.dcm", "StudyDescription", "abdomen^liver"),
        ("examples_overlay.dcm", "SeriesDescription", "marked lesion<MPR Collection>"),
        ("liver_1frame.dcm", "SeriesDescription", "Liver Segmentation"),
        ("693_J2KI.dcm", "DerivationDescription", "lossy conversion"),
        ("test-SR.dcm", "StudyDescription", "Structured Reporting Test Document"),
        ("SC_rgb_dcmtk_+eb+cr.dcm", "DerivationDescription", "Lossy compression with JPEG"),
        ("SC_rgb_dcmtk_+eb+cr.dcm", "DerivationDescription", "quality factor 90"),
        ("image_dfl.dcm", "ImageComments", "FOR CLINICAL APPLICATION"),
    ],
)
def test_real_descriptions_keep_their_technical_words(name: str, keyword: str, kept: str) -> None:
    ds = dcmread(PYDICOM_FILES / name)
    config = ProfileConfig(name="r", options=RESEARCH, burned_in_annotation=BurnedInPolicy.ALLOW)
    profile = compile_profile(config)
    out = deidentify_dataset(ds, profile, KEY).dataset
    assert kept in str(out[keyword].value)


def test_profiles_show_lists_the_unlisted_rows() -> None:
    lines = describe(compile_profile(ProfileConfig(name="b")))
    by_keyword = {line.keyword: line for line in lines}
    assert by_keyword["SecondaryCaptureDeviceID"].op == "remove"
    assert by_keyword["Manufacturer"].op == "keep"
    assert by_keyword["ContentCreatorName"].source != ""  # an E.1-1 row stays as it was
    assert by_keyword["AcquisitionProtocolName"].source.startswith("not in E.1-1: ")
    assert lines[-1].name == "Any other text attribute" and lines[-1].op == "remove"
