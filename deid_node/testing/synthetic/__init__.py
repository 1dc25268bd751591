"""Synthetic DICOM objects full of planted PHI tokens, for tests, the fuzzer and the bench.

Everything here is made up: no value comes from a real patient. Each generator plants its
identifying values as tokens of a :class:`PhiTokens` (see :mod:`.tokens`), so a test can
search output for every one of them. Generators are deterministic for a given ``seed`` and
token counter.
"""

from deid_node.testing.synthetic.beyond import beyond_table_tags, phi_beyond_table
from deid_node.testing.synthetic.captures import secondary_capture, us_multiframe
from deid_node.testing.synthetic.ct import ct_series, iter_ct_series
from deid_node.testing.synthetic.documents import rt_structure_set, sr_document
from deid_node.testing.synthetic.everywhere import (
    ACME_CREATOR,
    GEMS_CREATOR,
    SAFE_PRIVATE_VALUE,
    annex_e_tags,
    phi_everywhere,
)
from deid_node.testing.synthetic.files import write_bad_files, write_files
from deid_node.testing.synthetic.named import PETD_CREATOR, Planted, named_text_object
from deid_node.testing.synthetic.patient import SyntheticPatient
from deid_node.testing.synthetic.tokens import KINDS, TOKEN_RE, UID_PREFIX, PhiTokens, PlantedToken

__all__ = [
    "ACME_CREATOR",
    "GEMS_CREATOR",
    "KINDS",
    "PETD_CREATOR",
    "SAFE_PRIVATE_VALUE",
    "TOKEN_RE",
    "UID_PREFIX",
    "PhiTokens",
    "Planted",
    "PlantedToken",
    "SyntheticPatient",
    "annex_e_tags",
    "beyond_table_tags",
    "ct_series",
    "iter_ct_series",
    "named_text_object",
    "phi_beyond_table",
    "phi_everywhere",
    "rt_structure_set",
    "secondary_capture",
    "sr_document",
    "us_multiframe",
    "write_bad_files",
    "write_files",
]
