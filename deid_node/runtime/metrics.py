"""The node's metrics, counted in the supervisor from what it already learns.

The node is several processes, but every event worth counting passes through the
supervisor anyway: the receiving processes' reports, the workers' results, the audit
writer's commits. Counting there needs no multiprocess metric files and adds one lock and
an addition per event. Gauges (spool, queue, forward outbox) are read when scraped.

Labels are configuration only: profile names, configured calling AE titles (any other
title is ``(unknown)``), destination names, a rejection's kind, a status code. Never a
UID, a peer address or anything a sender wrote.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from deid_node.clock import now
from deid_node.config import Config

UNKNOWN_AE: Final = "(unknown)"

# Seconds: an association lasts from a fraction of a second to many minutes; an object's
# processing from milliseconds (header only) to seconds (pixels looked at).
_ASSOCIATION_BUCKETS: Final = (0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800)
_OBJECT_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
_AUDIT_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)

# How a rejection reason (deid_node.intake.policy, .receiver) reads: the label it gets.
_REJECTIONS: Final = (
    ("is not this node's", "called_ae"),
    ("is not allowed from", "calling_ae_host"),
    ("is not a configured source", "calling_ae_unknown"),
    ("too many associations", "max_associations"),
    ("during negotiation", "negotiation"),
)

# The pixel summary (deid_node.pixels.release.PixelPlan.summary): "checked: no text in
# N frames ..." or "cleaned: R regions (...) in K of N frames; ...".
_CHECKED = re.compile(r"^checked: no text in (\d+) frames?\b")
_CLEANED = re.compile(r"^cleaned: .*? in (\d+) of (\d+) frames?\b")


def rejection_kind(reason: str) -> str:
    """The label of an association rejection reason (its kind, never its words)."""
    for words, kind in _REJECTIONS:
        if words in reason:
            return kind
    return "other"


def pixel_frames(summary: str | None) -> tuple[int, int]:
    """(frames looked at, frames cleaned) from an outcome's pixel summary."""
    if not summary:
        return 0, 0
    found = _CLEANED.match(summary)
    if found:
        return int(found.group(2)), int(found.group(1))
    found = _CHECKED.match(summary)
    return (int(found.group(1)), 0) if found else (0, 0)


@dataclass(frozen=True)
class Gauges:
    """Where the values read at scrape time come from (the node's parts)."""

    spool_objects: Callable[[], int]
    spool_bytes: Callable[[], int]
    in_flight: Callable[[], int]
    associations_open: Callable[[], int]
    forward_counts: Callable[[], Iterable[tuple[str, str, int]]]  # destination, state, jobs


class NodeMetrics:
    """Counters and histograms of one node, in its own registry (tests run several)."""

    def __init__(self, cfg: Config) -> None:
        """Metrics for the node configured by `cfg` (its AE titles name the labels)."""
        self._sources = frozenset(s.ae_title for s in cfg.sources)
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        by_source = ["profile", "calling_ae"]
        self._received = Counter(
            "deid_objects_received",
            "Objects acknowledged (durable in spool/)",
            by_source,
            registry=r,
        )
        self._received_bytes = Counter(
            "deid_objects_received_bytes",
            "Bytes of the objects acknowledged",
            by_source,
            registry=r,
        )
        self._recorded = Counter(
            "deid_objects",
            "Objects whose audit row is committed, by status "
            "(stored, duplicate, quarantined; rejected: a C-STORE answered with a failure)",
            [*by_source, "status"],
            registry=r,
        )
        self._refused = Counter(
            "deid_objects_refused",
            "C-STORE requests answered with a failure status, by status code",
            ["calling_ae", "code"],
            registry=r,
        )
        self._associations = Counter(
            "deid_associations_accepted",
            "Associations accepted",
            ["calling_ae"],
            registry=r,
        )
        self._rejected = Counter(
            "deid_associations_rejected",
            "Association requests rejected, by kind of reason",
            ["reason"],
            registry=r,
        )
        self._association_seconds = Histogram(
            "deid_association_duration_seconds",
            "How long accepted associations lasted",
            buckets=_ASSOCIATION_BUCKETS,
            registry=r,
        )
        self._object_seconds = Histogram(
            "deid_object_processing_seconds",
            "Time a worker took to de-identify and write one object",
            ["profile"],
            buckets=_OBJECT_BUCKETS,
            registry=r,
        )
        self._audit_seconds = Histogram(
            "deid_audit_write_seconds",
            "From an audit row queued to its commit (queue wait included)",
            buckets=_AUDIT_BUCKETS,
            registry=r,
        )
        self._frames_looked = Counter(
            "deid_pixel_frames_looked_at",
            "Pixel frames looked at for text",
            ["profile"],
            registry=r,
        )
        self._frames_cleaned = Counter(
            "deid_pixel_frames_cleaned", "Pixel frames with text blanked", ["profile"], registry=r
        )
        self._worker_crashes = Counter(
            "deid_worker_crashes", "Worker pools broken by a dying worker", registry=r
        )

    def _child(self, metric: Counter | Histogram, *labels: str) -> Any:
        """`metric.labels(*labels)`, kept: label values are configuration, so few, and the
        lookup costs more than the count (about 3 us against 1.5 us)."""
        key = (id(metric), labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def calling_ae(self, title: str) -> str:
        """A calling AE title as a label: configured titles only."""
        return title if title in self._sources else UNKNOWN_AE

    def add_gauges(self, gauges: Gauges) -> None:
        """Report the node's current state too, read at each scrape."""
        self.registry.register(_StateCollector(gauges))

    # -- events ---------------------------------------------------------------------------

    def object_received(self, profile: str, calling_ae: str, size: int) -> None:
        """An object was acknowledged."""
        ae = self.calling_ae(calling_ae)
        self._child(self._received, profile, ae).inc()
        self._child(self._received_bytes, profile, ae).inc(size)

    def object_recorded(
        self, profile: str, calling_ae: str, status: str, queued: float, pixels: str | None
    ) -> None:
        """An object's row is committed (`queued`: when it was handed to the writer)."""
        self._child(self._recorded, profile, self.calling_ae(calling_ae), status).inc()
        self._audit_seconds.observe(max(0.0, time.monotonic() - queued))
        looked, cleaned = pixel_frames(pixels)
        if looked:
            self._child(self._frames_looked, profile).inc(looked)
        if cleaned:
            self._child(self._frames_cleaned, profile).inc(cleaned)

    def object_refused(self, profile: str | None, calling_ae: str, code: int) -> None:
        """A C-STORE answered with a failure status; its row is committed."""
        ae = self.calling_ae(calling_ae)
        self._recorded.labels(profile or "", ae, "rejected").inc()
        self._refused.labels(ae, f"0x{code:04X}").inc()

    def object_processed(self, profile: str, seconds: float) -> None:
        """A worker finished an object in `seconds`."""
        self._child(self._object_seconds, profile).observe(seconds)

    def worker_crashed(self) -> None:
        """A worker died and broke its pool."""
        self._worker_crashes.inc()

    def association_accepted(self, calling_ae: str) -> None:
        """An association was accepted."""
        self._associations.labels(self.calling_ae(calling_ae)).inc()

    def association_rejected(self, reason: str) -> None:
        """An association request was rejected."""
        self._rejected.labels(rejection_kind(reason)).inc()

    def association_ended(self, started_at: datetime) -> None:
        """An accepted association ended."""
        self._association_seconds.observe(max(0.0, (now() - started_at).total_seconds()))


class _StateCollector(Collector):
    """Gauges read from the node when scraped."""

    def __init__(self, gauges: Gauges) -> None:
        self._g = gauges

    def describe(self) -> Iterable[Metric]:
        return []  # the names are only known when collected; nothing to check them against

    def collect(self) -> Iterator[Metric]:
        g = self._g
        pending = g.spool_objects()
        in_flight = g.in_flight()
        yield _gauge("deid_spool_objects", "Objects acknowledged, not yet recorded", pending)
        yield _gauge(
            "deid_spool_bytes", "Bytes taken in spool/ (published and arriving)", g.spool_bytes()
        )
        yield _gauge(
            "deid_work_queued", "Objects waiting for a worker", max(0, pending - in_flight)
        )
        yield _gauge("deid_work_in_flight", "Objects a worker is on", in_flight)
        yield _gauge("deid_associations_open", "Associations open now", g.associations_open())
        jobs = GaugeMetricFamily(
            "deid_forward_jobs",
            "Forward jobs in the audit database by destination and state "
            "(pending, in_flight, sent, failed)",
            labels=["destination", "state"],
        )
        for destination, state, count in g.forward_counts():
            jobs.add_metric([destination, state], count)
        yield jobs


def _gauge(name: str, text: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, text, value=value)


__all__ = ["UNKNOWN_AE", "Gauges", "NodeMetrics", "pixel_frames", "rejection_kind"]
