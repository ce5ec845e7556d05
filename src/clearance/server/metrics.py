"""Prometheus metrics, in a registry of the app's own (no process-global state)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ..approvals.records import StoredApproval


class _RiskCache(Collector):
    """The risk signals' row cache, read at each scrape (nothing when risk is off)."""

    def __init__(self, risk: Callable[[], Any]) -> None:
        self._risk = risk

    def collect(self) -> Iterator[Metric]:
        risk = self._risk()
        if risk is None:
            return
        cache = risk.cache
        rows = GaugeMetricFamily(
            "clearance_risk_cache_rows", "Risk rows held in memory (at most risk cache size)"
        )
        rows.add_metric([], len(cache))
        yield rows
        whole = GaugeMetricFamily(
            "clearance_risk_cache_whole",
            "1 when the risk rows in memory are every row of the store (no check reads)",
        )
        whole.add_metric([], 1 if cache.whole else 0)
        yield whole
        lookups = CounterMetricFamily(
            "clearance_risk_cache_lookups",
            "Risk rows looked up in memory before a check, by whether they were there",
            labels=["result"],
        )
        lookups.add_metric(["hit"], cache.hits)
        lookups.add_metric(["miss"], cache.misses)
        yield lookups
        journal = risk.journal
        pending = GaugeMetricFamily(
            "clearance_risk_unfolded_checks",
            "Checks of this server counted in memory, not yet folded into the risk rows",
        )
        pending.add_metric([], journal.pending)
        yield pending
        folded = CounterMetricFamily(
            "clearance_risk_folded_checks", "Checks folded into the risk rows by this server"
        )
        folded.add_metric([], journal.folded_entries)
        yield folded


class Metrics:
    def __init__(self, risk: Callable[[], Any] | None = None) -> None:
        """`risk` returns the gateway's risk engine now (it changes on a reload), or None."""
        self.registry = CollectorRegistry(auto_describe=True)
        if risk is not None:
            self.registry.register(_RiskCache(risk))
        self.risk_pruned = Counter(
            "clearance_risk_pruned_rows",
            "Expired risk rows deleted by the server's housekeeping",
            registry=self.registry,
        )
        self.checks = Counter(
            "clearance_checks", "Checks answered, by effect", ["effect"], registry=self.registry
        )
        self.decision_seconds = Histogram(
            "clearance_check_latency_seconds",
            "Time to answer a check (policy, audit and approval creation)",
            buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 1.0),
            registry=self.registry,
        )
        self.approvals = Gauge(
            "clearance_approvals",
            "Approvals in the store, by state",
            ["state"],
            registry=self.registry,
        )
        self.time_to_decision = Histogram(
            "clearance_time_to_decision_seconds",
            "From request to final decision (approved, denied, expired, cancelled)",
            ["outcome"],
            buckets=(1, 10, 60, 300, 900, 3600, 4 * 3600, 24 * 3600, 7 * 24 * 3600),
            registry=self.registry,
        )

    def observe_check(self, effect: str, started: float) -> None:
        self.checks.labels(effect).inc()
        self.decision_seconds.observe(time.perf_counter() - started)

    def observe_change(self, stored: StoredApproval, events: tuple[str, ...]) -> None:
        a = stored.approval
        final = {"approval.approved", "approval.denied", "approval.expired", "approval.cancelled"}
        if a.is_final and a.decided_at is not None and final & set(events):
            elapsed = (a.decided_at - a.created_at).total_seconds()
            self.time_to_decision.labels(a.state.value).observe(max(elapsed, 0.0))

    def set_counts(self, counts: dict[str, int]) -> None:
        for state in ("pending", "approved", "denied", "expired", "cancelled"):
            self.approvals.labels(state).set(counts.get(state, 0))

    def render(self) -> bytes:
        return generate_latest(self.registry)
