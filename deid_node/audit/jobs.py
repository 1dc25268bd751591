"""De-identification jobs of the web console: their SQL."""

from __future__ import annotations

import json
from datetime import datetime

from sqlalchemy import Engine, insert, select, update

from deid_node.audit.records import format_time
from deid_node.audit.schema import JOBS
from deid_node.audit.sql_engine import transaction, translate_errors
from deid_node.errors import AuditError

__all__ = ["JOB_STATES", "Jobs"]

JOB_STATES = ("queued", "running", "done", "failed")


class Jobs:
    """Jobs over the audit database's engine."""

    def __init__(self, engine: Engine) -> None:
        """Wrap the (migrated) audit engine."""
        self._engine = engine

    def add(self, now: datetime, user: str, profile: str, fields: dict[str, str]) -> int:
        """A new queued job; its id."""
        values = {
            "created_at": format_time(now),
            "user_name": user,
            "profile": profile,
            "fields": json.dumps(fields, sort_keys=True),
            "status": "queued",
            "total": 0,
            "done": 0,
            "written": 0,
            "quarantined": 0,
        }
        with translate_errors("add a job"), transaction(self._engine, write=True) as conn:
            key = conn.execute(insert(JOBS).values(values)).inserted_primary_key
        assert key is not None
        return int(key[0])

    def update(self, job_id: int, **changes: object) -> None:
        """Change a job's progress or state."""
        if "finished_at" in changes and isinstance(changes["finished_at"], datetime):
            changes["finished_at"] = format_time(changes["finished_at"])
        with translate_errors("update a job"), transaction(self._engine, write=True) as conn:
            conn.execute(update(JOBS).where(JOBS.c.id == job_id).values(changes))

    def get(self, job_id: int) -> dict[str, object]:
        """One job; AuditError if there is none."""
        with translate_errors("read a job"), transaction(self._engine, write=False) as conn:
            row = conn.execute(select(JOBS).where(JOBS.c.id == job_id)).first()
        if row is None:
            raise AuditError(f"no job {job_id}")
        job = dict(row._mapping)
        job["fields"] = json.loads(str(job["fields"]))
        return job

    def recent(self, limit: int = 20, user: str | None = None) -> list[dict[str, object]]:
        """The newest jobs first (only `user`'s if given)."""
        stmt = select(JOBS).order_by(JOBS.c.id.desc()).limit(limit)
        if user is not None:
            stmt = stmt.where(JOBS.c.user_name == user)
        with translate_errors("read jobs"), transaction(self._engine, write=False) as conn:
            rows = [dict(r._mapping) for r in conn.execute(stmt)]
        for row in rows:
            row["fields"] = json.loads(str(row["fields"]))
        return rows
