"""Generate the tables for text beyond PS3.15 Table E.1-1.

Writes, into ``deid_node/data/`` by default:

* ``unlisted.csv``: every public attribute of pydicom's data dictionary with a text VR
  that Table E.1-1 does not list (retired ones left out: the engine removes them), and a
  few binary ones reviewed by hand (record keys, HPGL documents), each
  with an action (``keep``, ``clean``, ``remove``, ``dummy``) and a one-line reason.
* ``vocabulary.txt``: the words the free-text cleaner keeps (deid_node/deid/text.py).

Run from the repository root (needs Faker, of the ``test`` extra, for its name lists)::

    .venv/bin/python scripts/gen_text_tables.py [--output DIR]

The output depends only on pydicom's dictionary and concept tables, Faker's name and
place lists and the rules below, so running it twice gives byte-identical files.
"""

from __future__ import annotations

import argparse
import csv
import importlib
import re
import sys
from collections.abc import Iterable
from pathlib import Path

import pydicom
from pydicom.datadict import DicomDictionary

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUTPUT = REPO_ROOT / "deid_node" / "data"
TEXT_VRS = ("AE", "AS", "CS", "LO", "LT", "PN", "SH", "ST", "UC", "UR", "UT")
UNLISTED_HEADER = ["tag", "keyword", "vr", "name", "action", "reason"]
ACTIONS = ("keep", "clean", "remove", "dummy")
# Where names and places come from: the locales synthetic test data is usually made in.
LOCALES = ("en_US", "en_GB", "de_DE", "fr_FR", "es_ES", "it_IT", "nl_NL", "pt_BR")

# -- the reviewed rows ------------------------------------------------------------------
# Keyword -> (action, reason): decided one by one, ahead of the pattern rules below.
REVIEWED: dict[str, tuple[str, str]] = {
    # Codes: the engine keeps them in items of a standard coding scheme (deid/text.py).
    "CodeValue": ("clean", "code value: kept as is in a standard coding scheme, else cleaned"),
    "CodeMeaning": ("clean", "code meaning: kept as is in a standard coding scheme, else cleaned"),
    "CodingSchemeDesignator": ("clean", "coding scheme: kept if standard, else cleaned"),
    "CodingSchemeVersion": ("clean", "coding scheme version: kept if standard, else cleaned"),
    "LongCodeValue": ("clean", "code value: kept as is in a standard coding scheme, else cleaned"),
    "URNCodeValue": ("clean", "code value: kept as is in a standard coding scheme, else cleaned"),
    "ExtendedCodeValue": ("clean", "private extension of a code: cleaned"),
    "ExtendedCodeMeaning": ("clean", "private extension of a code: cleaned"),
    # Technical by nature.
    "Manufacturer": ("keep", "manufacturer of the equipment (Type 2): technical"),
    "ManufacturerModelName": ("keep", "model of the equipment: technical"),
    "ManufacturerRelatedModelGroup": ("keep", "model group of the equipment: technical"),
    "ManufacturerModelVersion": ("keep", "model version: technical"),
    "SoftwareVersions": ("keep", "software versions of the equipment: technical"),
    "SecondaryCaptureDeviceManufacturer": ("keep", "manufacturer of the capture device"),
    "SecondaryCaptureDeviceManufacturerModelName": ("keep", "model of the capture device"),
    "SecondaryCaptureDeviceSoftwareVersions": ("keep", "software of the capture device"),
    "DetectorManufacturerName": ("keep", "manufacturer of the detector"),
    "DetectorManufacturerModelName": ("keep", "model of the detector"),
    "ReceiveCoilManufacturerName": ("keep", "manufacturer of the coil"),
    "TransmitCoilManufacturerName": ("keep", "manufacturer of the coil"),
    "WedgeManufacturerName": ("keep", "manufacturer of the wedge"),
    "IOLManufacturer": ("keep", "manufacturer of the intraocular lens"),
    "ApplicationManufacturer": ("keep", "maker of the software application"),
    "ApplicationSetupManufacturer": ("keep", "maker of the brachytherapy applicator"),
    "SourceApplicatorManufacturer": ("keep", "maker of the source applicator"),
    "ApplicationName": ("keep", "name of a software application"),
    "ApplicationVersion": ("keep", "version of a software application"),
    "AlgorithmName": ("keep", "name of an algorithm (Type 1 in algorithm identification)"),
    "AlgorithmVersion": ("keep", "version of an algorithm (Type 1 in algorithm identification)"),
    "AlgorithmSource": ("keep", "source of an algorithm: a vendor or product"),
    "SegmentAlgorithmName": ("keep", "name of a segmentation algorithm"),
    "ThreatDetectionAlgorithmAndVersion": ("keep", "name and version of an algorithm"),
    "ConvolutionKernel": ("keep", "reconstruction kernel: technical"),
    "SequenceName": ("keep", "pulse sequence name from the scanner: technical"),
    "PulseSequenceName": ("keep", "pulse sequence name: technical"),
    "ImagedNucleus": ("keep", "nucleus imaged (1H, 31P): technical"),
    "ReceiveCoilName": ("keep", "coil name: technical"),
    "TransmitCoilName": ("keep", "coil name: technical"),
    "MultiCoilElementName": ("keep", "coil element name: technical"),
    "MultiCoilConfiguration": ("keep", "coil configuration: technical"),
    "AcquisitionMode": ("keep", "acquisition mode: technical"),
    "DoseModeName": ("keep", "dose mode: technical"),
    "FilterType": ("keep", "filter type: technical"),
    "TypeOfFilters": ("keep", "filter types: technical"),
    "ImageFilter": ("keep", "image filter: technical"),
    "PlateType": ("keep", "plate type: technical"),
    "PhosphorType": ("keep", "phosphor type: technical"),
    "VideoImageFormatAcquired": ("keep", "video format: technical"),
    "DigitalImageFormatAcquired": ("keep", "digital format: technical"),
    "ContrastBolusRoute": ("keep", "route of administration: technical"),
    "RadiopharmaceuticalRoute": ("keep", "route of administration: technical"),
    "Radiopharmaceutical": ("keep", "name of a radiopharmaceutical: technical"),
    "InterventionDrugName": ("keep", "name of a drug: technical"),
    "SourceIsotopeName": ("keep", "name of an isotope: technical"),
    "TriggerSourceOrType": ("keep", "trigger source: technical"),
    "CardiacFramingType": ("keep", "framing type: technical"),
    "AttenuationCorrectionMethod": ("keep", "correction method: technical"),
    "ScatterCorrectionMethod": ("keep", "correction method: technical"),
    "ReconstructionMethod": ("keep", "reconstruction method: technical"),
    "DetectorLinesOfResponseUsed": ("keep", "lines of response: technical"),
    "RescaleType": ("keep", "units of rescaled values (HU, US): technical"),
    "ModalityLUTType": ("keep", "output units of the modality LUT: technical"),
    "ImageQualityIndicatorType": ("keep", "type of image quality indicator: technical"),
    "ImageQualityIndicatorMaterial": ("keep", "material of image quality indicator: technical"),
    "MIMETypeOfEncapsulatedDocument": ("keep", "a MIME type (Type 1): technical"),
    "ListOfMIMETypes": ("keep", "MIME types: technical"),
    "FontName": ("keep", "a font name: technical"),
    "CSSFontName": ("keep", "a CSS font name: technical"),
    "RequestedProcedurePriority": ("keep", "priority, defined terms (STAT, HIGH, ...)"),
    "ReportingPriority": ("keep", "priority, defined terms (STAT, HIGH, ...)"),
    "PrivateCreatorReference": ("keep", "the name of a vendor's private block"),
    "DimensionIndexPrivateCreator": ("keep", "the name of a vendor's private block"),
    "FunctionalGroupPrivateCreator": ("keep", "the name of a vendor's private block"),
    "SelectorSequencePointerPrivateCreator": ("keep", "the name of a vendor's private block"),
    "SelectorAttributePrivateCreator": ("keep", "the name of a vendor's private block"),
    "AttributeOccurrencePrivateCreator": ("keep", "the name of a vendor's private block"),
    "PrivateDataElementName": ("keep", "the name of a vendor's private element"),
    "PrivateDataElementKeyword": ("keep", "the keyword of a vendor's private element"),
    "SelectorAttributeKeyword": ("keep", "a DICOM keyword"),
    "EXIFVersion": ("keep", "a format version"),
    # Equipment accessories: required in RT IODs, so cleaned, not removed.
    "OpticalPathIdentifier": ("clean", "names an optical path (Type 1): cleaned"),
    "ReferencedOpticalPathIdentifier": ("clean", "refers to an optical path (Type 1): cleaned"),
    "FiducialIdentifier": ("clean", "names a fiducial (Type 1C): cleaned"),
    "DelayLawIdentifier": ("clean", "names a delay law: cleaned"),
    "StackID": ("clean", "names a stack of frames (Type 1C): cleaned"),
    "TrackingID": ("clean", "names a tracked finding (Type 1C): cleaned"),
    "ImplantAssemblyTemplateIssuer": ("clean", "maker of a template (Type 1): cleaned"),
    "ImplantTemplateGroupIssuer": ("clean", "maker of a template group (Type 1): cleaned"),
    "WedgeModelNumber": ("clean", "a model number: cleaned"),
    "ImplantPartNumber": ("clean", "a product part number (Type 1): cleaned"),
    "BreedRegistrationNumber": ("dummy", "an animal's registration number (Type 1)"),
    "CodingSchemeExternalID": ("remove", "an external identifier of a local coding scheme"),
    # People and records.
    "PatientBirthDateInAlternativeCalendar": ("remove", "a birth date, in another calendar"),
    "PatientDeathDateInAlternativeCalendar": ("remove", "a death date, in another calendar"),
    "ContactDisplayName": ("remove", "a person's name"),
    "HangingProtocolCreator": ("remove", "names who made the protocol"),
    "NTPSourceAddress": ("remove", "a network address of the site"),
    "PrinterName": ("remove", "names a device of the site"),
    "DeviceID": ("remove", "identifies one device"),
    "SecondaryCaptureDeviceID": ("remove", "identifies one capture device"),
    "GridID": ("remove", "identifies one grid"),
    "RouteOfAdmissions": ("clean", "how the patient was admitted: free text"),
    # Binary values that are records or documents, reviewed beside the text ones.
    "RecordKey": ("remove", "an opaque key of one record (OB): an identifier"),
    "PriorRecordKey": ("remove", "an opaque key of an earlier record (OB): an identifier"),
    "HPGLDocument": ("remove", "a drawing (OB) that can carry any text"),
}
_ACCESSORY_ID = re.compile(
    r"^(Wedge|Bolus|Material|Compensator|CompensatorTray|BlockTray|Applicator|SourceModel|"
    r"BrachyAccessoryDevice|AfterloaderChannel|SourceApplicator|ChannelShield|Snout|"
    r"RangeShifter|LateralSpreadingDevice|RangeModulator|BeamCurrentModulation|PatientSupport|"
    r"ScanSpotTune|GeneralAccessory|FluenceMode|PositionAcquisitionTemplate)ID$"
)
# (pattern on the keyword, action, reason), first match wins.
PATTERNS: list[tuple[re.Pattern[str], str, str]] = [
    (
        _ACCESSORY_ID,
        "clean",
        "names a treatment accessory (Type 1 in RT IODs): cleaned",
    ),
    (
        re.compile(r"(ID|IDs|Identifier|Identifiers|Number|Numbers)$"),
        "remove",
        "an identifier of a person, record, device or item",
    ),
    (re.compile(r"Issuer|AssigningAuthority"), "remove", "the issuer of an identifier"),
    (re.compile(r"Address|Telephone|Contact|Owner"), "remove", "contact details"),
]
BY_VR: dict[str, tuple[str, str]] = {
    "CS": ("keep", "code string: defined or enumerated terms, 16 characters of A-Z 0-9 _"),
    "PN": ("remove", "a person's name"),
    "AE": ("remove", "an application entity title names a device of the site"),
    "UR": ("remove", "a URI can name a host, a path or a record"),
    "AS": ("remove", "an age: a patient characteristic"),
}
CLEAN = ("clean", "free text: only words of the vocabulary are kept")


def classify(keyword: str, vr: str) -> tuple[str, str]:
    """The action and reason for an attribute the table does not list."""
    if keyword in REVIEWED:
        return REVIEWED[keyword]
    if vr in BY_VR:
        return BY_VR[vr]
    for pattern, action, reason in PATTERNS:
        if pattern.search(keyword):
            return action, reason
    return CLEAN


def annex_e_tags(data: Path) -> set[int]:
    with (data / "annex_e.csv").open(encoding="utf-8", newline="") as handle:
        return {int(r["tag"], 16) for r in csv.DictReader(handle) if r["keyword"]}


def unlisted_rows(listed: set[int]) -> list[list[str]]:
    rows = []
    for tag, (vr, _vm, name, retired, keyword) in sorted(DicomDictionary.items()):
        group = tag >> 16
        if tag in listed or retired or group in (0x0000, 0x0002, 0x0004):
            continue
        if vr not in TEXT_VRS and keyword not in REVIEWED:
            continue
        action, reason = classify(keyword, vr)
        rows.append([f"{tag:08X}", keyword, vr, " ".join(name.split()), action, reason])
    return rows


# -- the vocabulary ---------------------------------------------------------------------
_WORD = re.compile(r"[^\W\d_]+")


def _block(text: str) -> list[str]:
    """The words of a block of text, one list entry each."""
    return text.split()


# Words of reports and descriptions that no dictionary name or code meaning spells.
FUNCTION_WORDS = _block(
    """
a about above across after again against all along also although among an and any are
around as at be been before behind being below beneath beside between beyond both but by
can cannot could did do does done down during each either else every few for from had has
have having here how if in inside into is it its less more most much must near neither no
nor not now of off on once one only onto or other our out outside over per since so some
such than that the their them then there these they this those through throughout to too
toward towards two under until up upon us very via was we were what when where whether
which while who whom whose why with within without would yes you your
new old prior previous compared comparison stable unchanged increased decreased seen noted
"""
)
# Plain English of clinical notes and reports: people by role, never by name.
REPORT_WORDS = _block(
    """
i me my mine he him his she her hers it itself we our they them their myself himself herself
patient patients husband wife partner spouse son daughter mother father parent parents child
children brother sister family friend relative carer caregiver guardian baby infant boy girl
man woman male female adult elderly pediatric paediatric doctor physician surgeon nurse
radiologist radiographer technologist technician tech resident fellow consultant referrer
referring attending staff team clinic clinician ward department hospital unit home office
room bed street avenue road lane drive house apartment flat floor city town address phone
telephone mobile email fax number name date time today yesterday tomorrow morning afternoon
evening night week weeks month months year years day days hour hours ago age aged old
call called calling spoke discussed informed reviewed review reported report requested request
ordered order referred refer scheduled performed repeated repeat advised recommended
recommend recommendation suggest suggested suggests consider considered correlate correlation
clinically clinical history indication indications reason question query rule exclude
evaluate evaluation assess assessment concern concerning suspected suspicion suspicious
likely unlikely possible possibly probable probably consistent compatible representing
impression conclusion findings finding comment comments note notes addendum summary
technique procedure exam examination study series image images view views scan scans
routine standard protocol screening diagnostic followup follow surveillance staging
restaging baseline interval preliminary final amended corrected
normal abnormal unremarkable mild mildly moderate moderately severe severely marked markedly
minimal minor major small large tiny huge enlarged prominent subtle diffuse focal multiple
single several few many numerous scattered patchy extensive limited partial complete
acute chronic subacute old recent new known unknown resolved resolving improving improved
worsening worse worsened progression progressive regression persistent residual recurrent
present absent negative positive equivocal indeterminate definite definitely evidence
identified demonstrated demonstrates shows showed shown visualised visualized noted seen
measures measuring measured measurement size sized approximately approx about up down
pain tenderness swelling mass lump fever cough dyspnea shortness breath fall injury trauma
accident headache dizziness nausea vomiting bleeding weakness numbness seizure collapse
arrow marker label annotation ruler caliper calliper circle ellipse rectangle polygon
point line curve text region roi key
3d 2d 4d gadolinium turbo trufisp tfe ffe bffe sat fatsat satur saturation
jpeg lossless lossy reversible irreversible compressed uncompressed compression scaled
resampled resample conversion converted tra trans transverse cspine tspine lspine carotid
pilot template demonstration investigational smartscore plain comp cont ihe
mrn dob born birth sex gender
anonymous anonymised anonymized anonymisation anonymization deidentified pseudonymised
pseudonymized research trial subject participant project cohort arm placebo visit timepoint
site sponsor protocol phantom test testing quality assurance calibration
is are was were be been has have had will would should could may might must can do does
done did not no nor and or but if then so also too yes ok okay please thank thanks per
"""
)
# Abbreviations of acquisition, reconstruction and reporting, as written in descriptions.
IMAGING_TERMS = _block(
    """
abd abdo adc angio ap aq ax axi axial bh bilat bilateral bone brain bw calc cap cardiac
cbf cbv ce cine cor coronal cs csf ct cta ctp cxr dce delay delayed dixon dl dlp dose dsa
dti dwi dx echo eeg ekg ecg emb epi esp fat fbp fiesta flair flash fov fs fse fspgr fu gad
gado gre gd haste hr hrct hu ir iv ivc kub lat lt lll lul mip mpr mprage mra mrcp mri mrv
mtt ncct neg neuro ntx oblique obl pa pd pe pelvis perf pet post pos pre prone pw qa rad
rcc rll rml rlq rt rul ruq sag sagittal scout se ser sim sl spair spect spgr spir ssfp
ssfse stir supine swi sx tof topo topogram trufi tse tx us vibe vol vr wo wwo xr
localizer localiser survey recon reformat reformats thin thick stack stacks iso isotropic
contrast noncontrast enhanced unenhanced arterial venous portal phase phases equilibrium
inspiration expiration breath hold free breathing gated triggered navigator
"""
)
UNITS = _block(
    """
mm cm m um µm nm km ml cc l dl g mg ug µg kg mol mmol umol s sec ms us µs min mins h hr hrs
hz khz mhz ghz t mt gauss kv kvp mv ev kev mev ma mas a v w mw db gy cgy mgy ugy sv msv usv
bq kbq mbq gbq ci mci uci deg degree degrees ° % bpm ppm mmhg
"""
)
MONTHS = _block(
    """
january february march april may june july august september october november december
jan feb mar apr jun jul aug sep sept oct nov dec
"""
)


def _words(text: str) -> list[str]:
    return _WORD.findall(text)


def name_words(locales: Iterable[str]) -> tuple[set[str], set[str]]:
    """Words of the given and family names, and of the place names, of Faker's locales."""
    people: set[str] = set()
    places: set[str] = set()

    def add(out: set[str], values: Iterable[object]) -> None:
        for value in values:
            out.update(w.lower() for w in _words(str(value)))

    for locale in locales:
        person = importlib.import_module(f"faker.providers.person.{locale}").Provider
        for attr in dir(person):
            if attr.startswith(("first_names", "last_names")):
                add(people, getattr(person, attr))
        address = importlib.import_module(f"faker.providers.address.{locale}").Provider
        # Place names only: formats, prefixes and abbreviations are not names.
        for attr in ("cities", "countries", "states", "regions", "provinces", "counties"):
            value = getattr(address, attr, ())
            add(places, value if isinstance(value, list | tuple | dict) else ())
    return people, places


def concept_words() -> dict[str, int]:
    """Words of the code meanings pydicom ships (DCM, SCT, LN, UCUM, RADLEX, ...), with the
    number of meanings that write each in lower case.

    A word only ever written capitalised inside a meaning is a proper name (an eponym such
    as Hodgkin or Wilms): left out. Short all-capital words are acronyms (count 0).
    """
    from pydicom.sr import _concepts_dict

    lower: dict[str, int] = {}
    acronyms: set[str] = set()
    for scheme in _concepts_dict.concepts.values():
        for entries in scheme.values():
            for meaning, _cids in entries.values():
                for word in set(_words(meaning)):
                    if word.islower():
                        lower[word] = lower.get(word, 0) + 1
                    elif word.isupper() and len(word) <= 6:
                        acronyms.add(word.lower())
    return {**dict.fromkeys(acronyms, 0), **lower}


def dictionary_words() -> set[str]:
    """Words of every attribute name in pydicom's data dictionary."""
    out: set[str] = set()
    for _vr, _vm, name, _retired, _keyword in DicomDictionary.values():
        out.update(w.lower() for w in _words(name))
    return out


def inflections(words: set[str]) -> set[str]:
    """The words with their plural, past and -ing forms (names are dropped afterwards).

    Descriptions write "lesions", "projected", "tested" where the sources spell the stem.
    """
    out = set(words)
    for w in words:
        if len(w) < 3 or not w.isalpha() or not w.isascii():
            continue
        stem = w[:-1] if w.endswith("e") else w
        out.update({w + "s", w + "es", stem + "ed", stem + "ing"})
        if w.endswith("y"):
            out.update({w[:-1] + "ies", w[:-1] + "ied"})
    return out


# A word of a name in another language, or of a place, is still kept when this many code
# meanings write it in lower case (Latin anatomy, "post", "canal"); an English-locale name
# is never kept.
COMMON_IN_MEANINGS = 3


def vocabulary() -> tuple[list[str], dict[str, int]]:
    english, _ = name_words(("en_US", "en_GB"))
    other, places = name_words(LOCALES)
    concepts = concept_words()
    english_sources = (
        dictionary_words() | set(FUNCTION_WORDS) | set(REPORT_WORDS) | set(IMAGING_TERMS)
    )
    english_sources |= set(UNITS)
    words = inflections(english_sources | set(concepts))

    def dropped(word: str) -> bool:
        if word in MONTHS or word in english:
            return True
        if word in other or word in places:
            return word not in english_sources and concepts.get(word, 0) < COMMON_IN_MEANINGS
        return False

    out = {w for w in words if not dropped(w)}
    # A single letter is kept by the cleaner's own rule; long runs are not words.
    kept = sorted(w for w in out if 2 <= len(w) <= 40)
    stats = {
        "dictionary names": len(dictionary_words()),
        "code meanings": len(concepts),
        "function words": len(FUNCTION_WORDS),
        "report words": len(REPORT_WORDS),
        "imaging terms": len(IMAGING_TERMS),
        "units": len(UNITS),
        "names, places and months left out": len(words - out),
    }
    return kept, stats


def write_csv(path: Path, header: list[str], rows: list[list[str]]) -> None:
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    args = parser.parse_args(argv)
    try:
        import faker
    except ImportError:
        print("error: Faker is not installed (pip install -e '.[test]')", file=sys.stderr)
        return 2
    args.output.mkdir(parents=True, exist_ok=True)
    rows = unlisted_rows(annex_e_tags(DEFAULT_OUTPUT))
    write_csv(args.output / "unlisted.csv", UNLISTED_HEADER, rows)
    words, stats = vocabulary()
    header = (
        f"# deid-node free-text vocabulary: {len(words)} words; pydicom {pydicom.__version__}"
        f" dictionary and concepts; names and places of Faker {faker.VERSION} left out\n"
    )
    (args.output / "vocabulary.txt").write_text(header + "\n".join(words) + "\n", "utf-8")
    counts = {a: sum(1 for r in rows if r[4] == a) for a in ACTIONS}
    print(f"unlisted.csv: {len(rows)} rows: " + ", ".join(f"{a} {n}" for a, n in counts.items()))
    print(
        f"vocabulary.txt: {len(words)} words ("
        + ", ".join(f"{k} {v}" for k, v in stats.items())
        + ")"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
