"""WHERE conditions from filters, shared by the database's reads and the outbox's.

Apart from both, so that neither imports the other.
"""

from __future__ import annotations

from sqlalchemy import ColumnElement

from deid_node.audit.records import Filters, format_time
from deid_node.audit.schema import OBJECTS

__all__ = ["object_conditions"]


def object_conditions(filters: Filters) -> list[ColumnElement[bool]]:
    """WHERE conditions on objects for the filters."""
    o = OBJECTS.c
    conditions: list[ColumnElement[bool]] = []
    if filters.since is not None:
        conditions.append(o.received_at >= format_time(filters.since))
    if filters.until is not None:
        conditions.append(o.received_at < format_time(filters.until))
    if filters.calling_ae is not None:
        conditions.append(o.calling_ae == filters.calling_ae)
    if filters.profile is not None:
        conditions.append(o.profile == filters.profile)
    if filters.status is not None:
        conditions.append(o.status == filters.status)
    if filters.study is not None:
        conditions.append(o.pseudo_study_uid == filters.study)
    if filters.node is not None:
        conditions.append(o.node == filters.node)
    return conditions
