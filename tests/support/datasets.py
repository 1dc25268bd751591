"""Small synthetic data sets the node tests send."""

from __future__ import annotations

import copy

from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from deid_node.testing.synthetic import PhiTokens, SyntheticPatient, ct_series


def small_ct(n: int, seed: int = 0, tokens: PhiTokens | None = None) -> list[Dataset]:
    """A CT series of n 16x16 slices of one synthetic patient."""
    patient = SyntheticPatient.make(tokens or PhiTokens(), seed=seed)
    return ct_series(n, patient=patient, rows=16, cols=16, seed=seed)


def with_new_sop_uid(ds: Dataset) -> Dataset:
    """A copy of ds that is another object (a new SOP Instance UID)."""
    clone = copy.deepcopy(ds)
    clone.SOPInstanceUID = clone.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    return clone
