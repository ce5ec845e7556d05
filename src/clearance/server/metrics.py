"""Prometheus metrics, in a registry of the app's own (no process-global state)."""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from ..approvals.records import StoredApproval


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
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
