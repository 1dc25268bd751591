"""Made-up patients and studies, and the modules every synthetic object shares."""

from __future__ import annotations

import datetime as dt
import weakref
from dataclasses import dataclass, field

from pydicom import Dataset
from pydicom.dataset import FileMetaDataset
from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid

from deid_node.testing.synthetic.tokens import PhiTokens

__all__ = [
    "IMPLEMENTATION_CLASS_UID",
    "IMPLEMENTATION_VERSION_NAME",
    "Study",
    "SyntheticPatient",
    "code_item",
    "equipment",
    "new_dataset",
    "patient_and_study",
    "study_of",
    "tokens_of_study",
]

IMPLEMENTATION_CLASS_UID = generate_uid(entropy_srcs=["deid-node synthetic implementation"])
IMPLEMENTATION_VERSION_NAME = "DEIDSYNTH_1"


@dataclass
class SyntheticPatient:
    """A made-up patient whose identifying values are tokens of ``tokens``."""

    name: str
    patient_id: str
    birth_date: str
    sex: str
    tokens: PhiTokens = field(default_factory=PhiTokens, repr=False, compare=False)
    seed: int = 0

    @classmethod
    def make(cls, tokens: PhiTokens, seed: int = 0) -> SyntheticPatient:
        """A new patient: name, ID and birth date are fresh tokens of ``tokens``."""
        name = tokens.new_name("PatientName")
        patient_id = tokens.new_token("PatientID", "id")
        start = dt.date(1940 + seed % 50, 1 + seed % 12, 1 + seed % 28)
        birth_date = tokens.new_date("PatientBirthDate", start=start)
        sex = "FMO"[seed % 3] if seed % 7 == 6 else "MF"[seed % 2]
        return cls(name, patient_id, birth_date, sex, tokens, seed)

    @property
    def family(self) -> str:
        """The family name component."""
        return self.name.split("^")[0]

    @property
    def given(self) -> str:
        """The given name component ("" if none)."""
        parts = self.name.split("^")
        return parts[1] if len(parts) > 1 else ""

    def age_on(self, date: str) -> str:
        """PatientAge (AS) on a DA date."""
        born = dt.datetime.strptime(self.birth_date, "%Y%m%d").date()
        day = dt.datetime.strptime(date, "%Y%m%d").date()
        years = day.year - born.year - ((day.month, day.day) < (born.month, born.day))
        return f"{max(years, 0):03d}Y"


@dataclass(frozen=True)
class Study:
    """Study-level values shared by every object of one synthetic study."""

    uid: str
    date: str
    time: str
    accession: str
    study_id: str
    referring: str
    institution: str
    description: str


# Token registry of each study made here, so that rt_structure_set(ct) can plant new tokens in
# the registry of the CT's patient.
_STUDY_TOKENS: weakref.WeakValueDictionary[str, PhiTokens] = weakref.WeakValueDictionary()


def tokens_of_study(study_uid: str) -> PhiTokens | None:
    """The registry of the patient a study was made for here, if it is still alive."""
    return _STUDY_TOKENS.get(study_uid)


def study_of(
    patient: SyntheticPatient, study_uid: str | None, seed: int, description: str
) -> Study:
    """Study-level values shared by every object of one study (memoised per token registry).

    Without ``study_uid`` the study is the patient's study for ``seed``; the first object made
    for a study decides its values (including the description).
    """
    tokens = patient.tokens
    if study_uid is None:
        uid = tokens.memo(
            ("study", patient.patient_id, seed),
            lambda: tokens.new_uid("StudyInstanceUID", "study", patient.patient_id, seed),
        )
    else:
        uid = tokens.record(study_uid, "StudyInstanceUID", "uid")

    def make() -> Study:
        start = dt.date(2021 + seed % 4, 1 + seed % 12, 1 + seed % 28)
        return Study(
            uid=uid,
            date=tokens.new_date("StudyDate", start=start),
            time=tokens.new_time("StudyTime", start=dt.time(7 + seed % 12, 30)),
            accession=tokens.new_token("AccessionNumber", "id"),
            study_id=tokens.new_token("StudyID", "id"),
            referring=tokens.new_name("ReferringPhysicianName"),
            institution=tokens.new_token("InstitutionName"),
            description=description,
        )

    result = tokens.memo(("study-uid", uid), make)
    _STUDY_TOKENS[uid] = tokens
    return result


def new_dataset(sop_class: str, sop_instance: str) -> Dataset:
    """An empty dataset with Part-10 file meta (Explicit VR Little Endian)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(sop_class)
    meta.MediaStorageSOPInstanceUID = UID(sop_instance)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = IMPLEMENTATION_CLASS_UID
    meta.ImplementationVersionName = IMPLEMENTATION_VERSION_NAME
    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_instance
    return ds


def patient_and_study(ds: Dataset, patient: SyntheticPatient, study: Study) -> None:
    """Plant the Patient and General Study modules (recording the patient's values)."""
    tokens = patient.tokens
    for value, path, kind in [
        (patient.family, "PatientName^family", "name"),
        (patient.given, "PatientName^given", "name"),
        (patient.patient_id, "PatientID", "id"),
        (patient.birth_date, "PatientBirthDate", "date"),
    ]:
        if value:
            tokens.record(value, path, kind)
    ds.PatientName = patient.name
    ds.PatientID = patient.patient_id
    ds.PatientBirthDate = patient.birth_date
    ds.PatientSex = patient.sex
    ds.StudyInstanceUID = study.uid
    ds.StudyDate = study.date
    ds.StudyTime = study.time
    ds.AccessionNumber = study.accession
    ds.StudyID = study.study_id
    ds.ReferringPhysicianName = study.referring
    ds.PatientAge = patient.age_on(study.date)
    ds.InstitutionName = study.institution
    ds.StudyDescription = study.description


def equipment(ds: Dataset, tokens: PhiTokens, *, model: str, path_prefix: str = "") -> None:
    """The General Equipment module, with a token serial number and station name."""
    ds.Manufacturer = "ACME Medical Systems"
    ds.ManufacturerModelName = model
    ds.DeviceSerialNumber = tokens.new_token(f"{path_prefix}DeviceSerialNumber", "id")
    ds.StationName = tokens.new_token(f"{path_prefix}StationName")
    ds.SoftwareVersions = "SYN 1.0"


def code_item(value: str, scheme: str, meaning: str) -> Dataset:
    """A code sequence item."""
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = scheme
    item.CodeMeaning = meaning
    return item
