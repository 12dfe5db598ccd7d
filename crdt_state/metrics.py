"""The Prometheus series of one app (`/metrics`), listed in docs/OPERATIONS.md ("Metrics").

One `Metrics` per app, each with its own `CollectorRegistry` (never the process-wide default:
tests build several apps in one process). Two kinds of series:

- observed as things happen: the histograms (REST latency, commit latency and size, fan-out
  lag, catch-up time), the counter of refused input, the JSON socket gauge;
- read when scraped (`_ServerCollector`): rooms, Yjs connections, queued send bytes, pending
  changes, and the counters the core keeps as plain ints (commits, cache, rate limits).

The core never sees this module: `attach` hands the committer and replication plain
callbacks, and the faces call `request`, `refuse` and `refuse_close`. Every label takes its
values from a fixed set (route templates, not paths; error codes and close-code names, not
messages), so the number of series stays bounded whatever clients send.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Protocol

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

from . import status
from .errors import StateError

if TYPE_CHECKING:
    from .server import Server

PREFIX = "crdt_state"
OTHER = "other"  # a label value outside its fixed set
UNMATCHED = "unmatched"  # the route of a request no route took
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
FACES = ("rest", "yjs", "json", "hocuspocus")
# A close code's name: CLOSE_BAD_MESSAGE (4400) -> "bad_message".
CLOSE_NAMES = {
    value: name.removeprefix("CLOSE_").lower()
    for name, value in vars(status).items()
    if name.startswith("CLOSE_") and isinstance(value, int)
}
# Closes of a live Yjs socket that refuse what the client sent (the others: the server
# restarting, a deleted panel, an expired token, a client too slow to read).
INPUT_CLOSES = frozenset(
    {status.CLOSE_BAD_MESSAGE, status.CLOSE_TOO_LARGE, status.CLOSE_RATE_LIMITED}
)

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
COMMIT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
BATCH_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000)
LAG_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
CATCH_UP_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
CATCH_UP_TRIGGERS = frozenset({"join", "load", "gap", "reconnect"})


class QueuedSender(Protocol):
    """A live JSON socket, as the gauges see it."""

    @property
    def queued_bytes(self) -> int: ...


def _error_codes() -> frozenset[str]:
    codes: set[str] = set()
    waiting: list[type[StateError]] = [StateError]
    while waiting:
        kind = waiting.pop()
        codes.add(kind.code)
        waiting += kind.__subclasses__()
    return frozenset(codes)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.reasons = _error_codes() | frozenset(CLOSE_NAMES.values())
        self.http = Histogram(
            f"{PREFIX}_http_request_duration_seconds",
            "REST requests: seconds from the request to the end of its answer",
            ["method", "route", "status"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self._http_series: dict[tuple[str, str, int], Histogram] = {}
        self.commit_seconds = Histogram(
            f"{PREFIX}_commit_duration_seconds",
            "group-commit transactions: seconds the log took to write one",
            buckets=COMMIT_BUCKETS,
            registry=self.registry,
        )
        self.batch_size = Histogram(
            f"{PREFIX}_commit_batch_size",
            "group-commit transactions: changes written by one",
            buckets=BATCH_BUCKETS,
            registry=self.registry,
        )
        self.fanout_lag = Histogram(
            f"{PREFIX}_fanout_lag_seconds",
            "commit notices from other replicas: seconds from the change being made there "
            "to its notice arriving here",
            buckets=LAG_BUCKETS,
            registry=self.registry,
        )
        self.catch_up = Histogram(
            f"{PREFIX}_catch_up_seconds",
            "a room catching up from the log: seconds from the need to the last entry handed over",
            ["trigger"],
            buckets=CATCH_UP_BUCKETS,
            registry=self.registry,
        )
        self.refused = Counter(
            f"{PREFIX}_refused",
            "input refused: REST and JSON-socket errors by code, sockets closed by close code",
            ["face", "reason"],
            registry=self.registry,
        )
        self.json_sockets: set[QueuedSender] = set()  # live JSON sockets (faces/state_socket)
        # Live shared sockets of /ws/hocuspocus (faces/hocuspocus_socket), each any number
        # of documents; their documents are in the rooms' peers, face "hocuspocus".
        self.hocuspocus_sockets: set[QueuedSender] = set()
        self.server: Server | None = None
        self.registry.register(_ServerCollector(self))

    def attach(self, server: Server) -> None:
        """Observe a replica's core: commits, fan-out, catch-up; read the rest when scraped."""
        self.server = server
        server.committer.observe_batch = self.committed
        server.replication.observe_lag = self.fanout_lag.observe
        server.replication.observe_catch_up = self.caught_up

    # -- observations --------------------------------------------------------------------------

    def request(self, method: str, route: str, status_code: int, seconds: float) -> None:
        method = method if method in METHODS else OTHER
        key = (method, route, status_code)  # bounded: methods, route templates, our statuses
        series = self._http_series.get(key)
        if series is None:  # labels() checks and locks each time: once per series is enough
            series = self._http_series[key] = self.http.labels(method, route, str(status_code))
        series.observe(seconds)

    def committed(self, changes: int, seconds: float) -> None:
        self.commit_seconds.observe(seconds)
        self.batch_size.observe(changes)

    def caught_up(self, trigger: str, seconds: float) -> None:
        self.catch_up.labels(trigger if trigger in CATCH_UP_TRIGGERS else OTHER).observe(seconds)

    def refuse(self, face: str, reason: str) -> None:
        """Input refused by `face` (rest, yjs, json) with an error code or close-code name."""
        self.refused.labels(face, reason if reason in self.reasons else OTHER).inc()

    def refuse_close(self, face: str, code: int) -> None:
        """A socket closed (or refused) with `code` for what its client did or lacks."""
        self.refuse(face, CLOSE_NAMES.get(code, OTHER))

    # -- exposition ----------------------------------------------------------------------------

    def exposition(self, accept: str | None) -> tuple[bytes, str]:
        """The series in the format the scraper accepts (Prometheus text by default)."""
        encode, content_type = choose_encoder(accept or "")
        return encode(self.registry), content_type


class _ServerCollector(Collector):
    """What the core keeps as plain values, read at scrape time."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        json_sockets = list(self.metrics.json_sockets)
        server = self.metrics.server
        rooms = list(server.registry.rooms.values()) if server is not None else []
        peers = [conn for room in rooms for conn in room.peers.connections]
        yjs = [conn for conn in peers if getattr(conn, "face", "yjs") == "yjs"]
        hocuspocus = list(self.metrics.hocuspocus_sockets)

        connections = GaugeMetricFamily(
            f"{PREFIX}_websocket_connections", "live WebSocket clients by face", labels=["face"]
        )
        connections.add_metric(["yjs"], len(yjs))
        connections.add_metric(["json"], len(json_sockets))
        connections.add_metric(["hocuspocus"], len(hocuspocus))
        yield connections
        yield GaugeMetricFamily(
            f"{PREFIX}_hocuspocus_documents",
            "documents open on /ws/hocuspocus sockets (panel subscriptions in rooms)",
            value=len(peers) - len(yjs),
        )
        queued = GaugeMetricFamily(
            f"{PREFIX}_queued_send_bytes",
            "bytes waiting in WebSocket send queues, summed over the clients of a face",
            labels=["face"],
        )
        queued.add_metric(["yjs"], sum(conn.queued_bytes for conn in yjs))
        queued.add_metric(["json"], sum(sock.queued_bytes for sock in json_sockets))
        queued.add_metric(["hocuspocus"], sum(sock.queued_bytes for sock in hocuspocus))
        yield queued
        if server is None:
            return
        yield GaugeMetricFamily(
            f"{PREFIX}_rooms", "live rooms (panels with a doc in memory)", value=len(rooms)
        )
        yield GaugeMetricFamily(f"{PREFIX}_connections", "Yjs WebSocket clients", value=len(yjs))
        committer = server.committer
        yield GaugeMetricFamily(
            f"{PREFIX}_pending_changes", "changes waiting for the log", value=committer.pending
        )
        counters = server.panels.counters
        for name, help_text, value in (
            ("committed_changes", "changes committed to the log", committer.committed),
            ("commit_batches", "group-commit transactions", committer.batches),
            ("cache_hits", "REST reads served from the hot cache", counters.cache_hits),
            ("cache_misses", "REST reads that missed the hot cache", counters.cache_misses),
            ("cache_writes", "views written to the hot cache", server.materializer.cache_writes),
        ):
            yield CounterMetricFamily(f"{PREFIX}_{name}", help_text, value=value)
        limited = CounterMetricFamily(
            f"{PREFIX}_rate_limited",
            "requests, updates and messages over a rate limit",
            labels=["kind"],
        )
        for kind in ("rest", "creations", "yjs_updates", "awareness"):
            limited.add_metric([kind], server.limits.limited[kind])
        yield limited
