"""Every reach into pydicom beyond its documented API, in one place.

Each is here because the public API has no equivalent (or only a much slower one), and
each has a test in tests/test_pydicom_compat.py that fails when a pydicom upgrade breaks
it. Nothing else in deid_node imports a private pydicom name.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import BinaryIO

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
