"""Every reach into pydicom beyond its documented API, in one place.

Each is here because the public API has no equivalent (or only a much slower one), and
each has a test in tests/dicom/test_pydicom_compat.py that fails when a pydicom upgrade breaks
it. Nothing else in deid_node reaches a private pydicom name: tests/test_private_names.py
fails if a module does.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping
from typing import BinaryIO, TypeAlias, cast

from pydicom._dicom_dict import DicomDictionary
from pydicom._uid_dict import UID_dictionary
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filereader import _read_file_meta_info
from pydicom.tag import BaseTag


def is_dictionary_uid(uid: str) -> bool:
    """Whether pydicom's dictionary names this UID (SOP classes, transfer syntaxes, ...).

    ``UID(uid).name`` says the same through the public API, at the cost of a UID object
    per lookup, on every UI element of every object.
    """
    return uid in UID_dictionary


def dictionary_entries() -> Mapping[int, tuple[str, str, str, str, str]]:
    """pydicom's data dictionary: tag -> (VR, VM, name, retired, keyword), every entry.

    The public functions look one tag or keyword up; the synthetic objects walk them all.
    """
    return DicomDictionary


def read_file_meta(fp: BinaryIO) -> FileMetaDataset:
    """The file meta group at `fp`'s position (after the preamble and "DICM").

    pydicom's public reader takes a path and reads the file again; the stream engine
    has the meta bytes in memory already.
    """
    return _read_file_meta_info(fp)


def element_dict(ds: Dataset) -> MutableMapping[BaseTag, DataElement | RawDataElement]:
    """The dataset's own element storage: raw elements go in and out undecoded.

    ``ds[tag] = elem`` and ``ds.update()`` convert raw elements; the engines copy and
    restore elements they do not change without decoding them.
    """
    return ds._dict


def character_set(ds: Dataset) -> str | list[str]:
    """The Python encodings the dataset's text is decoded with: its own Specific Character
    Set, or, in a sequence item without one, the enclosing dataset's.

    ``original_character_set`` is public but names the item's own only.
    """
    return ds._character_set


# {scheme: {keyword: {code: (meaning, [context group ids])}}}
SrConcepts: TypeAlias = Mapping[str, Mapping[str, Mapping[str, tuple[str, list[int]]]]]


def sr_concepts() -> SrConcepts:
    """pydicom's table of coded concepts (PS3.16), which ``pydicom.sr.codes`` is built on.

    ``codes`` looks a concept up by scheme and keyword; a code's meanings, by scheme and
    code, are in the table only. Imported on first call: it is large.
    """
    from pydicom.sr._concepts_dict import concepts

    # pydicom types the inner level as object.
    return cast(SrConcepts, concepts)
