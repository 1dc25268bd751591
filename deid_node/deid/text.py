"""The free-text cleaner: keep only what is recognised, replace the rest with a placeholder.

A kept description or report may name anyone and anything. Rather than look for what is
identifying (which never ends), the cleaner keeps what it knows: words of the shipped
vocabulary (data/vocabulary.txt: DICOM attribute names, code meanings of the standard
coding schemes, reporting and acquisition terms, units; names and places left out) and of
the profile's `allow_words`, short numbers, numbers with units, and short technical codes
such as T1, T2W or 3D. Every other token (unknown words, names, long digit runs, anything
shaped like a date, a phone number or an identifier) becomes PLACEHOLDER.

    "AX T1 POST GAD 3MM"       -> "AX T1 POST GAD 3MM"
    "CT for SMITH JOHN 12345"  -> "CT for [removed] [removed] [removed]"
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import lru_cache
from importlib import resources

from deid_node.deid.values import EAST_ASIAN as _EAST_ASIAN
from deid_node.dicom.pydicom_compat import sr_concepts

PLACEHOLDER = "[removed]"
# Coding schemes whose codes and meanings are standard (PS3.16 Table 8-1 and the
# designators it has replaced): items of these are kept as sent.
STANDARD_SCHEMES = frozenset(
    {
        "ACR",
        "ASTM-SIGPURPOSE",
        "BARI",
        "C4",
        "C5",
        "CD2",
        "DC",
        "DCM",
        "DCMUID",
        "FMA",
        "HPC",
        "I10",
        "I10P",
        "I9",
        "I9C",
        "IBSI",
        "ISO3166_1",
        "ISO639_1",
        "ISO639_2",
        "ITIS_TSN",
        "LN",
        "MA",
        "MDC",
        "MDNS",
        "MGI",
        "MSH",
        "NCBI",
        "NCDR",
        "NCIT",
        "NDC",
        "NEU",
        "NICIP",
        "NYUMCCG",
        "PUBCHEM_CID",
        "RADLEX",
        "RFC3066",
        "RFC5646",
        "RO",
        "RXNORM",
        "SCT",
        "SNM3",
        "SRT",
        "UBERON",
        "UCUM",
        "UMLS",
        "UNS",
        "UPC",
    }
)
# Every text tag of a coded entry: kept for a standard scheme, cleaned for any other.
CODE_TAGS = frozenset(
    {
        0x00080100,  # CodeValue
        0x00080102,  # CodingSchemeDesignator
        0x00080103,  # CodingSchemeVersion
        0x00080104,  # CodeMeaning
        0x00080119,  # LongCodeValue
        0x00080120,  # URNCodeValue
    }
)
DESIGNATOR_TAG = 0x00080102
CODE_VALUE_TAG = 0x00080100
MEANING_TAG = 0x00080104
# Designators pydicom spells otherwise, or that a newer one replaced.
_SCHEME_ALIASES = {"SRT": "SCT", "SNM3": "SCT", "NCIT": "NCIt"}


def _block(text: str) -> list[str]:
    return text.split()


_UNITS = frozenset(
    _block(
        """
    mm cm m um µm nm km ml cc l dl g mg ug µg kg mol mmol umol s sec ms us µs min mins h hr
    hrs hz khz mhz ghz t mt kv kvp mv ev kev mev ma mas a v w mw db gy cgy mgy ugy sv msv usv
    bq kbq mbq gbq ci mci uci deg ° % bpm ppm mmhg ch d st nd rd th x
    """
    )
)
# Runs of digits split by spaces, dashes, dots, slashes or brackets: phone numbers, dates,
# record numbers typed in groups. Judged together, before the tokens are.
_DIGIT_RUN = re.compile(r"(?<![^\W_])\+?\(?\d[\d\s().\-/]*\d\)?(?![^\W_])")
_EMAIL = re.compile(r"[^\s@]+@[^\s@]+")
# A street address: a house number, up to three capitalised words, a street type ("12 Elm St").
_STREET = re.compile(
    r"\b\d{1,5}[A-Za-z]?,?(?:\s+[A-Z][\w'-]*){1,3}?\s+(?i:st|street|str|ave|avenue|rd|road|"
    r"blvd|boulevard|ln|lane|dr|drive|ct|court|way|pl|place|ter|terrace|pkwy|parkway|cir|"
    r"circle|hwy|highway|sq|square|row|close|crescent|gardens|grove|mews|strasse|straße|"
    r"weg|gasse|platz|rue|via|calle|rua|straat|laan)\b\.?"
)
# An apartment or suite number ("Apt. 996", "Suite 300").
_UNIT = re.compile(
    r"\b(?:apt|apartment|suite|ste|unit|flat)\.?\s*#?\s*\d+[A-Za-z]?\b", re.IGNORECASE
)
# Ages and age phrases ("aged 93", "age: 45", "7-year-old", "ninety years old", "61 yo",
# "47y/o", "093Y"): an age over 89 identifies on its own, and the cleaner cannot tell.
_AGE = re.compile(
    r"\b(?:at\s+)?(?:aged?|age\s+of|ages)\s*[:=]?\s*\d{1,3}(?:\s*(?:years?|yrs?|y|months?|mos?|"
    r"weeks?|wks?|days?))?(?![^\W_])"
    r"|\b[^\W_]+(?:-[^\W_]+)?[\s-]+(?:years?|yrs?|yr|months?|mos?|weeks?|wks?|days?)[\s-]+old\b"
    r"|\b\d{1,3}\s*(?:y/?o|y\.o\.?|yoa|yrs?\s+old|years?\s+of\s+age)(?![^\W_])"
    r"|(?-i:\b\d{3}[YMWD]\b)",
    re.IGNORECASE,
)
# Titles and roles a name follows ("Dr. Violet Iris", "referred by Will Bridge"): the
# names after them go, vocabulary words or not. A bare "DR" is not one (digital radiography),
# nor a bare "BY" in upper-case text, where a name cannot be told by its capital.
_TITLE = re.compile(
    r"\b(?i:dr|doctor|prof|professor|mr|mrs|ms|mx|miss|sir|dame|nurse|sister|matron|rn|"
    r"attending|consultant|registrar|resident|fellow|intern|technologist|technician|tech|"
    r"radiographer|sonographer|physician|surgeon|radiologist|cardiologist|oncologist|"
    r"anaesthetist|anesthetist|anesthesiologist|midwife|physicist|therapist|clinician|"
    r"referrer|referring(?:\s+(?:physician|doctor|clinician|consultant))?|cc|"
    r"(?:referred|reported|read|dictated|signed|performed|seen|reviewed|verified|approved|"
    r"requested|ordered|scanned|transcribed|interpreted|examined|authori[sz]ed|"
    r"acquired|processed|supervised)\s+by|by)\b(?P<dot>\.?)[ \t:]*"
)
_NAME_WORD = re.compile(r"[^\W\d_][^\W\d_'’-]*(?:['’-][^\W\d_]+)*(?!\w)\.?")  # no T2
# Words that end a name after a title in upper-case text, where case cannot.
_NOT_NAMES = frozenset(
    _block("a an and or the of in on at for to with is was were has had by from as")
)
# Modalities and other abbreviations that end a name ("Dr Smithers CT").
_NOT_NAMES |= frozenset(
    _block(
        "ct mr mri pet us cr dx xa rf nm mg pt ot sr ecg ekg eeg iv po er ed icu spect pacs "
        "ris his wo re cc mrn dob id"
    )
)
_MAX_NAME_WORDS = 3
# A British postcode ("SW1A 1AA"), whose halves would pass as short codes.
_POSTCODE = re.compile(r"\b[A-Z]{1,2}\d[A-Z\d]?\s*\d[A-Z]{2}\b")
# A token: letters and digits, with inner dots, commas, dashes, slashes, colons, apostrophes.
_TOKEN = re.compile(r"[^\W_]+(?:['’.,:/\-+][^\W_]+)*")
_LETTERS = re.compile(r"^[^\W\d_]+$")
_NUMBER = re.compile(r"^\d{1,4}(?:[.,]\d{1,6})?$")
_WITH_UNIT = re.compile(r"^(\d{1,4}(?:[.,]\d{1,4})?)([^\W\d_]+|°|%)$")
_CODE = re.compile(r"^([^\W\d_]{1,12})(\d{1,2})([^\W\d_]{0,3})$")
_B_VALUE = re.compile(r"^[bB]\d{1,4}$")
_MATRIX = re.compile(r"^\d{1,4}(?:[xX]\d{1,4}){1,2}$")
_DECIMAL = re.compile(r"^\d{1,4}\.\d{1,6}$")
_MAX_RUN_DIGITS = 5  # a group of digit runs with this many digits is an identifier


@lru_cache(maxsize=1)
def vocabulary() -> frozenset[str]:
    """The shipped vocabulary, lower case (data/vocabulary.txt, scripts/gen_text_tables.py)."""
    text = resources.files("deid_node").joinpath("data/vocabulary.txt").read_text("utf-8")
    return frozenset(w for w in text.splitlines() if w and not w.startswith("#"))


@lru_cache(maxsize=1)
def _meanings() -> dict[tuple[str, str], frozenset[str]]:
    # Read on first use: the concept tables are large, and only an unusual meaning needs them.
    out: dict[tuple[str, str], set[str]] = {}
    for scheme, by_keyword in sr_concepts().items():
        for entries in by_keyword.values():
            for code, (meaning, _cids) in entries.items():
                out.setdefault((scheme.upper(), code), set()).add(meaning.casefold())
    return {key: frozenset(values) for key, values in out.items()}


def known_meaning(scheme: str, code: str, meaning: str) -> bool:
    """Whether pydicom's concept tables give this meaning to this code of a scheme."""
    scheme = _SCHEME_ALIASES.get(scheme, scheme).upper()
    return meaning.strip().casefold() in _meanings().get((scheme, code.strip()), ())


def _year_like(digits: str) -> bool:
    return len(digits) == 4 and 1800 <= int(digits) <= 2199


class TextCleaner:
    """Keeps the recognised tokens of a text; one per allow list, shared and stateless."""

    def __init__(self, allow_words: Iterable[str] = ()) -> None:
        self.words = vocabulary() | {w.strip().lower() for w in allow_words if w.strip()}
        self._memo: dict[str, str] = {}

    def clean(self, text: str) -> str:
        """The text with every token it does not recognise replaced by PLACEHOLDER."""
        if not text:
            return text
        found = self._memo.get(text)
        if found is not None:
            return found
        out = _EMAIL.sub(PLACEHOLDER, text)
        out = _STREET.sub(PLACEHOLDER, out)
        out = _POSTCODE.sub(PLACEHOLDER, out)
        out = _UNIT.sub(PLACEHOLDER, out)
        out = _AGE.sub(PLACEHOLDER, out)
        out = _after_titles(out)
        out = _DIGIT_RUN.sub(self._digit_run, out)
        out = _TOKEN.sub(self._token, out)
        if len(self._memo) < 4096:  # descriptions repeat across a series
            self._memo[text] = out
        return out

    def _digit_run(self, match: re.Match[str]) -> str:
        run = match.group(0)
        if _DECIMAL.match(run):
            return run  # a measurement ("15.512"), judged as a token
        digits = sum(c.isdigit() for c in run)
        groups = re.findall(r"\d+", run)
        if digits >= _MAX_RUN_DIGITS or (len(groups) >= 2 and any(_year_like(g) for g in groups)):
            return PLACEHOLDER
        return run

    def _token(self, match: re.Match[str]) -> str:
        token = match.group(0)
        return token if self.keeps(token) else PLACEHOLDER

    def keeps(self, token: str) -> bool:
        """Whether one token (no spaces) is recognised."""
        if token.endswith(("'s", "’s")):
            token = token[:-2]
        if _EAST_ASIAN.search(token):
            return token.lower() in self.words  # no single-letter rule: 王 is a name
        if _LETTERS.match(token):
            return len(token) == 1 or token.lower() in self.words
        if token.isdigit():
            return len(token) <= 3 or (len(token) == 4 and not _year_like(token))
        if _NUMBER.match(token) or _MATRIX.match(token) or _B_VALUE.match(token):
            return True
        unit = _WITH_UNIT.match(token)
        if unit:
            return unit.group(2).lower() in _UNITS
        code = _CODE.match(token)
        if code:
            head, tail = code.group(1).lower(), code.group(3).lower()
            return (len(head) <= 3 or head in self.words) and (len(tail) <= 1 or tail in self.words)
        parts = re.split(r"['’.,:/\-+]", token)
        if len(parts) == 1:
            return False  # letters and digits mixed in no known shape: an identifier
        if sum(p.isdigit() for p in parts) >= 2:
            return False  # dates, times, versions and identifiers in parts
        return all(p and self.keeps(p) for p in parts)


def _after_titles(text: str) -> str:
    """text with the names that follow a title or a role replaced by PLACEHOLDER.

    Up to three words after the title, each capitalised (in upper-case text: any word but
    a few function words); an initial keeps its dot, a name's full stop stays text.
    """
    if not _TITLE.search(text):
        return text
    upper = not any(c.islower() for c in text)
    out: list[str] = []
    pos = 0
    for title in _TITLE.finditer(text):
        said = title.group(0).rstrip(" \t:")
        if title.start() < pos or said == "DR" or (upper and said == "BY"):
            continue  # inside the previous title's names; digital radiography; SORTED BY
        out.append(text[pos : title.end()])
        pos = title.end()
        for _ in range(_MAX_NAME_WORDS):
            name = _NAME_WORD.match(text, pos)
            if name is None:
                break
            word = name.group(0)
            if len(word) > 2 and word.endswith("."):
                word = word[:-1]  # the end of a sentence, not an initial
            if (
                (not upper and not word[0].isupper())
                or word.lower() in _NOT_NAMES
                or _TITLE.fullmatch(word + " ")
            ):
                break  # not a name, or another title with its own names
            out.append(text[pos : name.start()] + PLACEHOLDER)
            pos = name.start() + len(word)
            gap = _GAP.match(text, pos)
            if gap is None:
                break
            pos_next = gap.end()
            if _NAME_WORD.match(text, pos_next) is None:
                break
            out.append(gap.group(0))
            pos = pos_next
    out.append(text[pos:])
    return "".join(out)


_GAP = re.compile(r"[ \t]+")
_PLACEHOLDER_RUN = re.compile(
    re.escape(PLACEHOLDER) + r"(?:[\s,.;:/^-]+" + re.escape(PLACEHOLDER) + ")+"
)


def fit(text: str, limit: int) -> str:
    """text within a VR's maximum length: runs of placeholders merged first, then cut."""
    if len(text) <= limit:
        return text
    text = _PLACEHOLDER_RUN.sub(PLACEHOLDER, text)
    return text[:limit].rstrip()


@lru_cache(maxsize=32)
def cleaner(allow_words: tuple[str, ...] = ()) -> TextCleaner:
    """The shared cleaner for an allow list."""
    return TextCleaner(allow_words)
