"""The engine, one behaviour at a time: each action code, each option, overrides."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import (
    UID,
    CTImageStorage,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    UltrasoundImageStorage,
)

from deid_node.config import BurnedInPolicy, Option, ProfileConfig, TrialConfig
from deid_node.deid.dataset import deidentify_dataset
from deid_node.deid.pipeline import Outcome, process_file, process_file_dataset
from deid_node.deid.profiles import OPTION_CODES, Op, compile_profile, describe
from deid_node.deid.pseudonym import date_offset_days, pseudo_uid, shift_date
from deid_node.deid.verify import SURVIVED
from deid_node.errors import DeidError
from tests.support.files import save_in

KEY = bytes(range(32))
STUDY = "1.2.826.0.1.3680043.8.498.1001"
SERIES = "1.2.826.0.1.3680043.8.498.1002"
SOP = "1.2.826.0.1.3680043.8.498.1003"
FRAME = "1.2.826.0.1.3680043.8.498.1004"


def make_ds(**extra: object) -> Dataset:
    """A small synthetic CT header full of (made-up) identifiers."""
    ds = Dataset()
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = SOP
    ds.StudyInstanceUID = STUDY
    ds.SeriesInstanceUID = SERIES
    ds.FrameOfReferenceUID = FRAME
    ds.Modality = "CT"
    ds.PatientName = "SMITH^JOHN"
    ds.PatientID = "12345"
    ds.PatientBirthDate = "19600102"
    ds.PatientSex = "M"
    ds.PatientAge = "061Y"
    ds.AccessionNumber = "ACC778899"
    ds.StudyDate = "20210304"
    ds.SeriesDate = "20210304"
    ds.AcquisitionDate = "20210304"
    ds.StudyTime = "101112"
    ds.ContentDate = "20210305"
    ds.StudyDescription = "CT for SMITH JOHN 12345"
    ds.SeriesDescription = "AXIAL SMITH"
    ds.InstitutionName = "General Hospital"
    ds.StationName = "CTROOM7"
    ds.DeviceSerialNumber = "SN4711"
    ds.ReferringPhysicianName = "WHO^DOCTOR"
    ds.OtherPatientIDs = "OTHER99"
    ds.ProtocolName = "Chest SMITH"
    ds.SliceThickness = "2.5"
    ds.BurnedInAnnotation = "NO"
    ds.ReferencedImageSequence = Sequence([Dataset()])
    ds.ReferencedImageSequence[0].ReferencedSOPClassUID = CTImageStorage
    ds.ReferencedImageSequence[0].ReferencedSOPInstanceUID = SOP
    for key, value in extra.items():
        setattr(ds, key, value)
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = SOP
    ds.file_meta.SourceApplicationEntityTitle = "SENDER_AE"
    return ds


def profile(*options: str, **kw: object) -> ProfileConfig:
    return ProfileConfig(name="t", options=frozenset(Option(o) for o in options), **kw)  # type: ignore[arg-type]


def run(ds: Dataset, cfg: ProfileConfig | None = None) -> Dataset:
    return deidentify_dataset(ds, compile_profile(cfg or profile()), KEY).dataset


def codes(ds: Dataset) -> set[str]:
    return {item.CodeValue for item in ds.DeidentificationMethodCodeSequence}


# -- action codes ---------------------------------------------------------------


def test_action_x_removes() -> None:
    out = run(make_ds())
    assert "OtherPatientIDs" not in out
    assert "SeriesDescription" not in out  # X in the basic profile


def test_action_z_empties() -> None:
    out = run(make_ds())
    assert "AccessionNumber" in out and out.AccessionNumber == ""
    assert out.ReferringPhysicianName == ""
    assert out.PatientBirthDate == ""


def test_action_d_dummy_keeps_a_valid_value() -> None:
    ds = make_ds(VerifyingObserverName="VERIFIER^ANNA")
    out = run(ds)
    assert str(out.VerifyingObserverName) == "ANONYMIZED"


def test_action_k_keeps_unlisted_attributes() -> None:
    out = run(make_ds())
    assert out.SliceThickness == 2.5 and out.Modality == "CT"


def test_action_u_maps_uids_keyed_and_consistently() -> None:
    out = run(make_ds())
    expected = pseudo_uid(KEY, "t", STUDY)
    assert out.StudyInstanceUID == expected and expected.startswith("2.25.")
    assert out.SOPInstanceUID == pseudo_uid(KEY, "t", SOP)
    ref = out.ReferencedImageSequence[0]
    assert ref.ReferencedSOPInstanceUID == out.SOPInstanceUID  # references map alike
    assert ref.ReferencedSOPClassUID == CTImageStorage  # class UIDs are not identifiers
    assert out.FrameOfReferenceUID == pseudo_uid(KEY, "t", FRAME)


def test_action_c_cleans_text_of_the_objects_identifiers() -> None:
    out = run(make_ds(), profile("clean-descriptors", replace=()))
    text = str(out.StudyDescription)
    assert "CT for" in text
    for word in ("SMITH", "JOHN", "12345"):
        assert word not in text


@pytest.mark.parametrize(
    ("keyword", "value", "expected"),
    [
        ("AcquisitionDate", "20210304", ""),  # X/Z -> Z
        ("ProtocolName", "Chest SMITH", "ANONYMIZED"),  # X/D -> D
        ("ContentDate", "20210305", "19000101"),  # Z/D -> D
        ("InstitutionName", "General Hospital", "ANONYMIZED"),  # X/Z/D -> D
    ],
)
def test_combined_codes_pick_a_valid_strict_action(keyword: str, value: str, expected: str) -> None:
    out = run(make_ds(**{keyword: value}))
    assert str(out[keyword].value) == expected


def test_x_z_u_sequence_keeps_references_mapped() -> None:
    out = run(make_ds())
    assert len(out.ReferencedImageSequence) == 1  # X/Z/U*: kept, UIDs replaced


def test_patient_pseudonym_and_markers() -> None:
    out = run(make_ds(), profile(patient_id_prefix="RES"))
    assert out.PatientID.startswith("RES") and out.PatientID != "12345"
    assert str(out.PatientName) == out.PatientID
    assert out.PatientIdentityRemoved == "YES"
    assert "113100" in codes(out)
    assert out.LongitudinalTemporalInformationModified == "REMOVED"
    assert out.file_meta.MediaStorageSOPInstanceUID == out.SOPInstanceUID
    assert "SourceApplicationEntityTitle" not in out.file_meta


def test_scope_gives_unlinkable_pseudonyms() -> None:
    a = run(make_ds(), profile())
    b = run(make_ds(), replace(profile(), name="other"))
    assert a.PatientID != b.PatientID and a.StudyInstanceUID != b.StudyInstanceUID
    c = run(make_ds(), replace(profile(), name="other2", scope="t"))
    assert c.StudyInstanceUID == a.StudyInstanceUID  # same scope, same key: same pseudonyms


# -- options ----------------------------------------------------------------------


def test_every_option_is_recorded() -> None:
    for opt in Option:
        if opt in (Option.RETAIN_LONGITUDINAL_FULL_DATES, Option.CLEAN_PIXEL_DATA):
            continue
        out = run(make_ds(), profile(opt.value))
        assert OPTION_CODES[opt][0] in codes(out), opt


def test_clean_pixel_data_is_claimed_only_where_pixels_were_cleaned() -> None:
    # The code says pixels were cleaned; the dataset engine alone never cleans them.
    out = run(make_ds(), profile("clean-pixel-data"))
    assert "113101" not in codes(out) and out.PatientIdentityRemoved == "YES"


def test_retain_uids() -> None:
    out = run(make_ds(), profile("retain-uids"))
    assert out.StudyInstanceUID == STUDY and out.SOPInstanceUID == SOP


def test_retain_device_identity() -> None:
    out = run(make_ds(), profile("retain-device-identity"))
    assert out.StationName == "CTROOM7" and out.DeviceSerialNumber == "SN4711"
    plain = run(make_ds())
    assert plain.StationName != "CTROOM7" and "SN4711" not in str(plain.get("DeviceSerialNumber"))


def test_retain_institution_identity() -> None:
    out = run(make_ds(), profile("retain-institution-identity"))
    assert out.InstitutionName == "General Hospital"


def test_retain_patient_characteristics() -> None:
    out = run(make_ds(), profile("retain-patient-characteristics"))
    assert out.PatientSex == "M" and out.PatientAge == "061Y"
    plain = run(make_ds())
    assert plain.PatientSex == "" and "PatientAge" not in plain


def test_retain_full_dates() -> None:
    out = run(make_ds(), profile("retain-longitudinal-full-dates"))
    assert out.StudyDate == "20210304"
    assert out.LongitudinalTemporalInformationModified == "UNMODIFIED"
    assert "113106" in codes(out)


def test_retain_modified_dates_shifts_per_patient_and_keeps_intervals() -> None:
    out = run(make_ds(), profile("retain-longitudinal-modified-dates"))
    days = date_offset_days(KEY, "t", "id:12345")
    assert out.StudyDate == shift_date("20210304", days) != "20210304"
    assert out.ContentDate == shift_date("20210305", days)  # one day later, still
    assert out.StudyTime == "101112"  # times kept
    assert out.PatientBirthDate == ""  # never kept
    assert out.LongitudinalTemporalInformationModified == "MODIFIED"
    other = run(make_ds(PatientID="99999"), profile("retain-longitudinal-modified-dates"))
    assert date_offset_days(KEY, "t", "id:99999") != days or other.StudyDate == out.StudyDate


def test_clean_structured_content() -> None:
    def sr() -> Dataset:
        item = Dataset()
        item.ValueType = "TEXT"
        item.RelationshipType = "CONTAINS"
        item.TextValue = "Findings for SMITH JOHN: nodule"
        return make_ds(ContentSequence=Sequence([item]))

    plain = run(sr())
    assert plain.ContentSequence[0].TextValue == "ANONYMIZED"  # D on the sequence
    assert plain.ContentSequence[0].ValueType == "TEXT"
    cleaned = run(sr(), profile("clean-structured-content"))
    text = cleaned.ContentSequence[0].TextValue
    assert "nodule" in text and "SMITH" not in text and "JOHN" not in text


def test_clean_graphics_keeps_cleaned_annotation_text() -> None:
    def gr() -> Dataset:
        text = Dataset()
        text.UnformattedTextValue = "arrow SMITH"
        layer = Dataset()
        layer.TextObjectSequence = Sequence([text])
        return make_ds(GraphicAnnotationSequence=Sequence([layer]))

    plain = run(gr())
    assert plain.GraphicAnnotationSequence[0].TextObjectSequence[0].UnformattedTextValue == (
        "ANONYMIZED"
    )
    cleaned = run(gr(), profile("clean-graphics"))
    value = cleaned.GraphicAnnotationSequence[0].TextObjectSequence[0].UnformattedTextValue
    assert value.startswith("arrow") and "SMITH" not in value


def test_overlays_and_curves_removed() -> None:
    ds = make_ds()
    ds.add_new(0x60000010, "US", 8)
    ds.add_new(0x60003000, "OW", b"\x00" * 8)
    ds.add_new(0x60004000, "LT", "overlay SMITH")
    ds.add_new(0x50000022, "LO", "curve SMITH")
    out = run(ds)
    assert not any(int(t) >> 16 in (0x6000, 0x5000) for t in out.keys())  # noqa: SIM118


def test_private_elements_removed_unless_known_safe() -> None:
    def with_private() -> Dataset:
        ds = make_ds()
        ds.add_new(0x00190010, "LO", "GEMS_ACQU_01")
        ds.add_new(0x00191002, "SL", 7)  # known safe in TCIA's knowledge base
        ds.add_new(0x001910FE, "LO", "SMITH secret")  # not known safe
        ds.add_new(0x00090010, "LO", "ACME_PHI")
        ds.add_new(0x00091001, "LO", "PHI here")
        return ds

    plain = run(with_private())
    assert not any(int(t) >> 16 & 1 for t in plain.keys())  # noqa: SIM118
    kept = run(with_private(), profile("retain-safe-private"))
    assert kept[0x00191002].value == 7
    assert 0x00190010 in kept and 0x001910FE not in kept
    assert 0x00090010 not in kept and 0x00091001 not in kept


def test_clean_policy_refuses_what_the_caller_does_not_clean() -> None:
    # Only the pipeline, reading the object's file, cleans pixels: the engine on its own
    # must not let burned-in text through under "clean".
    ds = make_ds(BurnedInAnnotation="YES", PixelData=b"\x00" * 8, Rows=2, Columns=2)
    with pytest.raises(DeidError, match="pixels cannot be looked at here"):
        run(ds, profile("clean-pixel-data", burned_in_annotation=BurnedInPolicy.CLEAN))


# -- policy, overrides, trial -------------------------------------------------------


def test_burned_in_quarantined_by_default() -> None:
    ds = make_ds(BurnedInAnnotation="YES", PixelData=b"\x00" * 8, Rows=2, Columns=2)
    with pytest.raises(DeidError, match="burned-in"):
        run(ds)
    us = make_ds(SOPClassUID=UltrasoundImageStorage, Modality="US", PixelData=b"\x00" * 8)
    del us.BurnedInAnnotation
    with pytest.raises(DeidError, match="burned-in"):
        run(us)
    allowed = run(
        make_ds(BurnedInAnnotation="YES", PixelData=b"\x00" * 8),
        profile(burned_in_annotation=BurnedInPolicy.ALLOW),
    )
    assert allowed.PixelData == b"\x00" * 8


@pytest.mark.parametrize("burned_in", ["YES", "NO"])
def test_allowed_burned_in_text_is_not_declared_removed(burned_in: str) -> None:
    cfg = profile("clean-pixel-data", burned_in_annotation=BurnedInPolicy.ALLOW)
    out = run(make_ds(BurnedInAnnotation=burned_in, PixelData=b"\x00" * 8, Rows=2, Columns=2), cfg)
    if burned_in == "YES":  # the text is still in the pixels: no claim that it is gone
        assert out.PatientIdentityRemoved == "NO"
        assert "113101" not in codes(out)
        assert str(out.DeidentificationMethod).endswith("; burned-in text not removed")
    else:
        assert out.PatientIdentityRemoved == "YES"
        assert "113101" not in codes(out)  # nothing was cleaned
        assert "burned-in" not in str(out.DeidentificationMethod)


def test_keyword_sets_of_the_engine_name_real_attributes() -> None:
    from pydicom.datadict import tag_for_keyword

    from deid_node.deid import decisions

    sets = {n: v for n, v in vars(decisions).items() if n.endswith("_KEYWORDS")}
    assert sets  # the decisions both engines share still keep their lists this way
    for name, keywords in sets.items():
        unknown = sorted(k for k in keywords if tag_for_keyword(k) is None)
        assert unknown == [], f"{name} names no dictionary attribute: {unknown}"


def test_overrides_keep_remove_replace() -> None:
    cfg = profile(
        keep=(0x00081010,),  # StationName
        remove=(0x00180050,),  # SliceThickness
        replace=((0x00081030, "RESEARCH"),),
    )
    out = run(make_ds(), cfg)
    assert out.StationName == "CTROOM7"
    assert "SliceThickness" not in out
    assert out.StudyDescription == "RESEARCH"
    lines = {ln.keyword: ln for ln in describe(compile_profile(cfg))}
    assert lines["StudyDescription"].op == "replace with 'RESEARCH'"
    assert compile_profile(cfg).ops[0x00081010] is Op.KEEP_VERBATIM


def test_trial_attributes() -> None:
    trial = TrialConfig(sponsor="Uni", protocol_id="EX-1", site_id="01", site_name="One")
    out = run(make_ds(), profile(trial=trial))
    assert out.ClinicalTrialSponsorName == "Uni" and out.ClinicalTrialProtocolID == "EX-1"
    assert out.ClinicalTrialSubjectID == out.PatientID
    assert out.ClinicalTrialSiteID == "01"


def test_missing_uid_fails_closed() -> None:
    ds = make_ds()
    del ds.SOPInstanceUID
    with pytest.raises(DeidError, match="missing SOPInstanceUID"):
        run(ds)


def test_nested_sequences_any_depth() -> None:
    inner = Dataset()
    inner.PatientName = "DEEP^NAME"
    inner.StudyInstanceUID = STUDY
    mid = Dataset()
    mid.ReferencedInstanceSequence = Sequence([inner])
    out = run(make_ds(ReferencedSeriesSequence=Sequence([mid])))
    deep = out.ReferencedSeriesSequence[0].ReferencedInstanceSequence[0]
    assert str(deep.PatientName) == out.PatientID  # PatientName rule applies at any depth
    assert deep.StudyInstanceUID == out.StudyInstanceUID


def test_preamble_is_zeroed(tmp_path: Path) -> None:
    src = tmp_path / "in.dcm"
    make_ds().save_as(src, enforce_file_format=True)
    data = bytearray(src.read_bytes())
    data[:16] = b"SMITH JOHN 12345"  # a preamble may hold anything (TIFF headers, text)
    src.write_bytes(bytes(data))
    outcome = process_file(src, compile_profile(profile()), KEY, tmp_path / "out")
    assert outcome.output_path is not None
    assert outcome.output_path.read_bytes()[:132] == b"\x00" * 128 + b"DICM"


def test_elements_after_pixel_data_still_follow_the_profile(tmp_path: Path) -> None:
    ds = make_ds(Rows=2, Columns=2, BitsAllocated=8, SamplesPerPixel=1, PixelData=b"\x01" * 4)
    ds.add_new(0xFFFCFFFC, "OB", b"SMITH JOHN 12345")  # DataSetTrailingPadding: X
    src = tmp_path / "in.dcm"
    ds.save_as(src, enforce_file_format=True)
    outcome = process_file(src, compile_profile(profile()), KEY, tmp_path / "out")
    assert outcome.output_path is not None
    data = outcome.output_path.read_bytes()
    assert b"SMITH" not in data and data.endswith(b"\x01" * 4)


def test_truncated_encapsulated_pixel_data_is_quarantined(tmp_path: Path) -> None:
    from pydicom.encaps import encapsulate
    from pydicom.uid import RLELossless

    ds = make_ds(Rows=2, Columns=2, BitsAllocated=8, SamplesPerPixel=1)
    ds.PixelData = encapsulate([b"\x00" * 64])
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = RLELossless
    src = tmp_path / "in.dcm"
    ds.save_as(src, enforce_file_format=True)
    whole = process_file(src, compile_profile(profile()), KEY, tmp_path / "out")
    assert whole.status.value == "stored"
    src.write_bytes(src.read_bytes()[:-20])  # cut inside the last fragment
    cut = process_file(src, compile_profile(profile()), KEY, tmp_path / "out2")
    assert cut.status.value == "quarantined" and "truncated" in (cut.reason or "")


def test_absurdly_deep_sequences_are_refused() -> None:
    inner = Dataset()
    inner.PatientName = "DEEP^NAME"
    for _ in range(70):
        outer = Dataset()
        outer.ReferencedSeriesSequence = Sequence([inner])
        inner = outer
    with pytest.raises(DeidError, match="nested deeper than 64"):
        run(make_ds(ReferencedSeriesSequence=inner.ReferencedSeriesSequence))


@pytest.mark.parametrize(
    ("kept_text", "caught"),
    [
        ("see patient ACC778899", True),  # the accession number, kept verbatim
        ("prior OTHER99 scan", True),  # another patient ID
        (f"ref {SOP}.", True),  # an original UID, even before a full stop
        (f"ref {SOP}.7", False),  # a longer UID that starts with it is another UID
        ("Johnsmithson 1234", False),  # names only count as whole words
        ("written by smith", True),  # in any case
    ],
)
def test_verification_quarantines_an_original_identifier_in_the_output(
    tmp_path: Path, kept_text: str, caught: bool
) -> None:
    # A `keep` override leaves the text untouched, so only the output check stands
    # between the identifier and the output file.
    ds = make_ds(ImageComments=kept_text)
    src = tmp_path / "in.dcm"
    ds.save_as(src, enforce_file_format=True)
    cfg = profile(keep=(0x00204000,))  # ImageComments
    outcome = process_file(src, compile_profile(cfg), KEY, tmp_path / "out")
    if caught:
        assert outcome.status.value == "quarantined"
        assert outcome.reason == f"{SURVIVED} (in ImageComments)"
        assert not list((tmp_path / "out").rglob("*.dcm"))
    else:
        assert outcome.status.value == "stored", outcome.reason


def _process(tmp_path: Path, ds: Dataset, cfg: ProfileConfig) -> Outcome:
    src = tmp_path / "in.dcm"
    ds.save_as(src, enforce_file_format=True)
    return process_file(src, compile_profile(cfg), KEY, tmp_path / "out")


@pytest.mark.parametrize(
    ("where", "ds", "cfg"),
    [
        ("(0009,1001)", make_ds(), profile(keep=(0x00091001,))),  # private: its tag
        (
            "ReferencedImageSequence[0].ImageComments",
            make_ds(),
            profile(keep=(0x00204000,)),
        ),
    ],
)
def test_verification_names_the_attribute_a_survivor_is_in_never_the_value(
    tmp_path: Path, where: str, ds: Dataset, cfg: ProfileConfig
) -> None:
    ds.add_new(0x00090010, "LO", "ACME_NOTES")
    ds.add_new(0x00091001, "LO", "ACC778899")  # the accession number, in a private note
    ds.ReferencedImageSequence[0].ImageComments = "prior OTHER99 scan"  # another patient ID
    outcome = _process(tmp_path, ds, cfg)
    assert outcome.status.value == "quarantined"
    assert outcome.reason == f"{SURVIVED} (in {where})"
    assert "ACC778899" not in outcome.reason and "OTHER99" not in outcome.reason


def _with_trailer(note: str, padding: bytes) -> Dataset:
    ds = make_ds(Rows=4, Columns=4, BitsAllocated=16, BitsStored=16, HighBit=15)
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.PixelRepresentation = 0
    ds.PixelData = bytes(32)
    ds.add_new(0x7FE10010, "LO", "ACME_TRAILER")  # a private block after the pixel data
    ds.add_new(0x7FE11001, "LO", note)
    ds.DataSetTrailingPadding = padding
    return ds


@pytest.mark.parametrize("engine", ["stream", "dataset"])
@pytest.mark.parametrize(
    "syntax", [ExplicitVRLittleEndian, ImplicitVRLittleEndian, DeflatedExplicitVRLittleEndian]
)
@pytest.mark.parametrize(
    ("note", "padding", "where"),
    [
        ("ACC778899", b"\0" * 10, "(7FE1,1001)"),  # the accession number, kept private
        ("ROUTINE", b"SMITH^JOHN", "DataSetTrailingPadding"),  # the name in kept padding
        ("ROUTINE", b"\0" * 10, None),  # nothing to find: stored, trailer and all
    ],
)
def test_elements_after_the_pixel_data_are_verified_too(
    tmp_path: Path, engine: str, syntax: UID, note: str, padding: bytes, where: str | None
) -> None:
    src = save_in(_with_trailer(note, padding), syntax, tmp_path / "in.dcm")
    cfg = compile_profile(profile(keep=(0x7FE11001, 0xFFFCFFFC)))
    run = process_file if engine == "stream" else process_file_dataset
    outcome = run(src, cfg, KEY, tmp_path / "o")
    if where is None:
        assert outcome.status.value == "stored", outcome.reason
        assert outcome.output_path is not None
        written = dcmread(outcome.output_path)
        value = written[0x7FE11001].value  # implicit VR: a private element reads as bytes
        assert (value.encode() if isinstance(value, str) else bytes(value)).rstrip() == b"ROUTINE"
        assert written.PixelData == bytes(32)
    else:
        assert outcome.status.value == "quarantined"
        assert outcome.reason == f"{SURVIVED} (in {where})"
        assert not list((tmp_path / "o").rglob("*.dcm"))


@pytest.mark.parametrize("charset", ["ISO_IR 100", "ISO_IR 192"])
@pytest.mark.parametrize(
    "syntax", [ImplicitVRLittleEndian, ExplicitVRBigEndian, DeflatedExplicitVRLittleEndian]
)
def test_a_survivor_in_another_case_of_a_non_ascii_name_is_caught_in_every_encoding(
    tmp_path: Path, charset: str, syntax: UID
) -> None:
    ds = make_ds(PatientName="MÜLLER^HANS", SpecificCharacterSet=charset)
    ds.ReferencedImageSequence[0].ImageComments = "bei Müller"  # re.I folds ASCII only
    src = save_in(ds, syntax, tmp_path / "in.dcm")
    outcome = process_file(src, compile_profile(profile(keep=(0x00204000,))), KEY, tmp_path / "o")
    assert outcome.reason == f"{SURVIVED} (in ReferencedImageSequence[0].ImageComments)"


@pytest.mark.parametrize(
    ("changes", "cfg"),
    [
        ({"PatientName": "Anonymized"}, profile()),  # matches every ANONYMIZED dummy
        ({"PatientName": "anonymized"}, profile()),
        ({"PatientName": "RESEARCH"}, profile(replace=((0x00081030, "RESEARCH"),))),
        ({"PatientName": "LUNGSCREEN"}, profile(replace=((0x00081030, "LUNGSCREEN"),))),
        (  # kept unlisted attributes say UNKNOWN too
            {
                "PatientName": "Unknown^Patient",
                "PatientID": "UNKNOWN",
                "BodyPartExamined": "UNKNOWN",
            },
            profile(),
        ),
        ({"PatientBirthDate": "19000101"}, profile()),  # the DA dummy, as ContentDate gets
        ({"PatientID": "113100"}, profile()),  # the basic profile's code value
        ({"PatientName": "Holmes"}, profile(trial=TrialConfig("Holmes Institute", "EX-1"))),
    ],
)
def test_values_the_profile_writes_and_placeholders_are_no_survivors(
    tmp_path: Path, changes: dict[str, str], cfg: ProfileConfig
) -> None:
    outcome = _process(tmp_path, make_ds(**changes), cfg)
    assert outcome.status.value == "stored", outcome.reason


def test_a_reference_to_an_own_pseudonym_is_no_survivor(tmp_path: Path) -> None:
    # Partly de-identified data: a reference already holds the pseudonym this object's
    # SOPInstanceUID gets, so the output holds it as well, rightly.
    ds = make_ds()
    ds.ReferencedImageSequence[0].ReferencedSOPInstanceUID = pseudo_uid(KEY, "t", SOP)
    outcome = _process(tmp_path, ds, profile())
    assert outcome.status.value == "stored", outcome.reason


def test_a_placeholder_beside_a_real_name_still_catches_the_real_one(tmp_path: Path) -> None:
    ds = make_ds(PatientName="SMITH^Unknown", ImageComments="unknown, seen by Smith")
    outcome = _process(tmp_path, ds, profile(keep=(0x00204000,)))
    assert outcome.reason == f"{SURVIVED} (in ImageComments)"


@pytest.mark.parametrize(
    ("comments", "survives"),
    [
        ("seen by Dr Clean", True),  # the patient's name, kept verbatim: a leak
        (None, False),  # only the code meaning "Clean Descriptors Option" has the word
    ],
)
def test_a_name_that_is_a_word_of_what_the_profile_writes_is_still_checked(
    tmp_path: Path, comments: str | None, survives: bool
) -> None:
    ds = make_ds(PatientName="CLEAN^JOHN")
    if comments is not None:
        ds.ImageComments = comments
    outcome = _process(tmp_path, ds, profile("clean-descriptors", keep=(0x00204000,)))
    if survives:
        assert outcome.reason == f"{SURVIVED} (in ImageComments)"
    else:
        assert outcome.status.value == "stored", outcome.reason
        assert outcome.output_path is not None
        assert b"Clean Descriptors Option" in outcome.output_path.read_bytes()


def test_placeholders_and_profile_values_are_not_scrubbed_from_kept_text() -> None:
    ds = make_ds(
        PatientName="DOE^Anonymous",
        PatientID="RESEARCH",
        StudyDescription="anonymous research CT for Doe",
    )
    out = run(ds, profile("clean-descriptors", replace=()))
    assert out.StudyDescription == "anonymous research CT for ***"


def test_dates_in_free_text_are_cleaned_in_the_spellings_people_type() -> None:
    text = "CT 4 March 2021, see March 4, 2021 / 04-Mar-2021 / 3/4/2021 / 2021-03-04 / 4.3.2021"
    out = run(make_ds(StudyDescription=text), profile("clean-descriptors", replace=()))
    cleaned = str(out.StudyDescription)
    assert cleaned.startswith("CT ***")
    for leftover in ("March", "Mar", "2021", "3/4", "4.3"):
        assert leftover not in cleaned, cleaned
