"""Deterministic malformed objects: kind by object id, bytes by (seed, object id)."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from deid_node.testing.fuzz.draft import Base, Mutation, make_base
from deid_node.testing.fuzz.structure import (
    mut_bad_vr_length,
    mut_deep_nesting,
    mut_item_no_delimiter,
    mut_length_overflow,
    mut_not_dicom,
    mut_truncated,
    mut_undefined_length,
)
from deid_node.testing.fuzz.values import (
    mut_charset_lie,
    mut_control,
    mut_duplicate_tag,
    mut_embedded_nul,
    mut_huge_vm,
    mut_missing_sop_instance_uid,
    mut_odd_length,
    mut_out_of_order,
    mut_sop_class_mismatch,
)
from deid_node.testing.synthetic import (
    UID_PREFIX,
    PhiTokens,
    SyntheticPatient,
    ct_series,
    phi_everywhere,
    rt_structure_set,
    secondary_capture,
    sr_document,
)

__all__ = [
    "CONTROL",
    "KINDS",
    "MUTATIONS",
    "FuzzObject",
    "Generator",
    "make_pool",
    "make_schedule",
    "object_uid",
]

MUTATIONS: dict[str, Callable[[random.Random, Base, str], Mutation]] = {
    "truncated": mut_truncated,
    "bad_vr_length": mut_bad_vr_length,
    "undefined_length": mut_undefined_length,
    "item_no_delimiter": mut_item_no_delimiter,
    "length_overflow": mut_length_overflow,
    "deep_nesting": mut_deep_nesting,
    "not_dicom": mut_not_dicom,
    "sop_class_mismatch": mut_sop_class_mismatch,
    "charset_lie": mut_charset_lie,
    "duplicate_tag": mut_duplicate_tag,
    "out_of_order": mut_out_of_order,
    "missing_sop_instance_uid": mut_missing_sop_instance_uid,
    "odd_length": mut_odd_length,
    "embedded_nul": mut_embedded_nul,
    "huge_vm": mut_huge_vm,
}
KINDS: Final = tuple(MUTATIONS)
CONTROL: Final = "control"


@dataclass(frozen=True)
class FuzzObject:
    """One object to send: bytes, how to send them, and what was done to them."""

    oid: int
    kind: str
    base: str
    variant: str
    expect: str
    sop_class: str  # the presentation context's abstract syntax and Affected SOP Class
    sop_instance: str  # Affected SOP Instance UID (also the dataset's, unless mutated away)
    transfer_syntax: str
    body: bytes
    uids: tuple[str, ...]  # every SOP Instance UID the node could key this object on


def object_uid(seed: int, oid: int) -> str:
    """The SOP Instance UID of object ``oid`` of a run with ``seed``."""
    # Under the synthetic root, with a "0." arc no synthetic generator uses, so it can
    # never be a substring of a base object's UID (those end in one long digit run).
    return f"{UID_PREFIX}0.{seed}.{oid}"


class Generator:
    """Deterministic objects: the same (seed, oid) always gives the same bytes."""

    def __init__(self, seed: int, count: int) -> None:
        self.seed = seed
        self.count = count
        self.tokens = PhiTokens()
        self.pool = make_pool(self.tokens)
        self.controls = [b for b in self.pool if b.is_control]

    def kind_of(self, oid: int) -> str:
        """The mutation kind of an object id (ids past ``count`` are controls)."""
        return KINDS[oid % len(KINDS)] if oid < self.count else CONTROL

    def build(self, oid: int) -> FuzzObject:
        """Object ``oid``, the same bytes every time."""
        rng = random.Random(f"deid-node-fuzz/{self.seed}/{oid}")
        kind = self.kind_of(oid)
        base = rng.choice(self.controls if kind == CONTROL else self.pool)
        uid = object_uid(self.seed, oid)
        mutate = mut_control if kind == CONTROL else MUTATIONS[kind]
        m = mutate(rng, base, uid)
        return FuzzObject(
            oid=oid,
            kind=kind,
            base=base.name,
            variant=m.variant,
            expect=m.expect,
            sop_class=m.context_class or base.sop_class,
            sop_instance=uid,
            transfer_syntax=ExplicitVRLittleEndian if m.explicit else ImplicitVRLittleEndian,
            body=m.body,
            uids=(uid, *m.extra_uids),
        )


def make_pool(tokens: PhiTokens) -> list[Base]:
    """The valid objects every malformation starts from; their tokens go into `tokens`."""
    patient = SyntheticPatient.make(tokens, seed=11)
    cts = ct_series(3, patient=patient, rows=16, cols=16, seed=11)
    other = SyntheticPatient.make(tokens, seed=12)
    pool = [make_base(f"ct{i}", ds, is_control=True) for i, ds in enumerate(cts)]
    pool.append(make_base("phi_everywhere", phi_everywhere(tokens, seed=13)))
    pool.append(make_base("sr", sr_document(patient, seed=11)))
    pool.append(make_base("rtstruct", rt_structure_set(cts)))
    pool.append(make_base("sc", secondary_capture(other, "NO", rows=16, cols=16, seed=12)))
    return pool


def make_schedule(
    count: int, control_every: int, kinds: set[str] | None = None, oids: list[int] | None = None
) -> tuple[list[int], int]:
    """Send order: malformed oids 0..count-1 with a control oid after every N of them.

    Filters keep object ids (so `--oid 209` is the same object as in the full run).
    """
    order: list[int] = []
    controls = 0
    for oid in range(count):
        wanted_kind = kinds is None or KINDS[oid % len(KINDS)] in kinds
        if wanted_kind and (oids is None or oid in oids):
            order.append(oid)
        if control_every and (oid + 1) % control_every == 0:
            order.append(count + controls)
            controls += 1
    return order, controls
