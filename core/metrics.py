"""What Signoff counts for an operator: the instruments behind ``GET /metrics``.

One :class:`Metrics` per running bot, each with its own ``CollectorRegistry`` (several bots
run in one test process; nothing here is a module-level singleton). The composition root
builds it and hands it to the parts that record; they call the small methods below, at their
natural seams, and know nothing else of Prometheus.

Every label value comes from a closed set (a configured source's name, a decision kind, an
outcome, a Slack method Signoff calls, a result class): never a user id, an action id or a
path a client sent, so the number of series stays bounded.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

CONTENT_TYPE = CONTENT_TYPE_LATEST

# Result classes of an upstream (Actions API) call.
RESULTS = ("ok", "conflict", "requirements", "permanent", "transient")
# Final outcomes of a decision carried upstream.
OUTCOMES = ("delivered", "conflict", "failed")
# Kinds of Slack request whose ack latency is measured (anything else is "other").
REQUEST_KINDS = ("block_actions", "view_submission", "slash_command", "event_callback", "other")
# Callback deliveries of the agents' API (not built yet: the metric exists with no samples).
CALLBACK_RESULTS = ("delivered", "retried", "failed")
# States of a watched rollback rule (store.models.Reading, plus tripped).
RULE_STATES = ("pending", "ok", "missing", "stale", "error", "no_provider", "tripped")
# Outbox stages: a decision still to be sent, or sent and followed while it runs upstream.
STAGES = ("send", "track")

# Seconds: Slack wants an answer within 3 s; upstream calls time out after 10 s by default.
ACK_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0)
CALL_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
POLL_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)

_CODE = re.compile(r"^[a-z0-9_]{1,48}$")


def error_label(code: object) -> str:
    """A Slack error code as a label value: Slack's codes are short snake_case words; anything
    else (never expected) is folded into ``other`` rather than minting a series."""
    return code if isinstance(code, str) and _CODE.match(code) else "other"


class Metrics:
    """The instruments of one bot, in its own registry."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.decisions = Counter(
            "signoff_decisions",
            "Decisions carried to their source, by source, kind and final outcome",
            ["source", "kind", "outcome"],
            registry=r,
        )
        self.ack_seconds = Histogram(
            "signoff_slack_ack_seconds",
            "Time from a Slack request's arrival to Signoff's answer, by request kind",
            ["kind"],
            buckets=ACK_BUCKETS,
            registry=r,
        )
        self.outbox_depth = Gauge(
            "signoff_outbox_depth",
            "Decisions not yet settled upstream (send: to be sent; track: followed), by source",
            ["source", "stage"],
            registry=r,
        )
        self.outbox_oldest = Gauge(
            "signoff_outbox_oldest_age_seconds",
            "Age of the oldest decision not yet settled upstream, by source",
            ["source"],
            registry=r,
        )
        self.upstream_calls = Counter(
            "signoff_upstream_calls",
            "Calls to an Actions API, by source, operation and result class",
            ["source", "operation", "result"],
            registry=r,
        )
        self.upstream_seconds = Histogram(
            "signoff_upstream_call_seconds",
            "Latency of calls to an Actions API, by source and operation",
            ["source", "operation"],
            buckets=CALL_BUCKETS,
            registry=r,
        )
        self.slack_calls = Counter(
            "signoff_slack_api_calls",
            "Slack Web API calls, by method and error (ok when none)",
            ["method", "error"],
            registry=r,
        )
        self.slack_seconds = Histogram(
            "signoff_slack_api_call_seconds",
            "Latency of Slack Web API calls (retries included), by method",
            ["method"],
            buckets=CALL_BUCKETS,
            registry=r,
        )
        self.slack_rate_limited = Counter(
            "signoff_slack_rate_limited",
            "Slack Web API answers with HTTP 429, by method",
            ["method"],
            registry=r,
        )
        self.slack_retries = Counter(
            "signoff_slack_api_retries",
            "Slack Web API calls retried after a 429, by method",
            ["method"],
            registry=r,
        )
        self.poll_seconds = Histogram(
            "signoff_poll_cycle_seconds",
            "Duration of one poll cycle of a source",
            ["source"],
            buckets=POLL_BUCKETS,
            registry=r,
        )
        self.poll_cycles = Counter(
            "signoff_poll_cycles",
            "Poll cycles, by source and result (ok, failed)",
            ["source", "result"],
            registry=r,
        )
        self.poll_pages = Counter(
            "signoff_poll_pages", "Pages listed by poll cycles, by source", ["source"], registry=r
        )
        self.poll_new = Counter(
            "signoff_poll_new_actions",
            "New actions stored by poll cycles, by source",
            ["source"],
            registry=r,
        )
        self.intake_requests = Counter(
            "signoff_intake_requests",
            "POST /intake/<source> requests, by source and answer",
            ["source", "answer"],
            registry=r,
        )
        self.rollback_rules = Gauge(
            "signoff_rollback_rules",
            "Watched rollback rules of running actions, by state",
            ["state"],
            registry=r,
        )
        self.callbacks = Counter(
            "signoff_callback_deliveries",
            "Callback deliveries of the agents' API, by result (delivered, retried, gave_up)",
            ["result"],
            registry=r,
        )

    # ---- recording (called by the core and the adapters) -------------------------------

    def callback(self, result: str) -> None:
        self.callbacks.labels(result).inc()

    def decision(self, source: str, kind: str, outcome: str) -> None:
        self.decisions.labels(source, kind, outcome).inc()

    def ack(self, kind: str, seconds: float) -> None:
        self.ack_seconds.labels(kind if kind in REQUEST_KINDS else "other").observe(seconds)

    def upstream_call(self, source: str, operation: str, result: str, seconds: float) -> None:
        self.upstream_calls.labels(source, operation, result).inc()
        self.upstream_seconds.labels(source, operation).observe(seconds)

    def slack_call(self, method: str, error: str, seconds: float) -> None:
        self.slack_calls.labels(method, error_label(error)).inc()
        self.slack_seconds.labels(method).observe(seconds)

    def slack_429(self, method: str, *, retried: bool) -> None:
        self.slack_rate_limited.labels(method).inc()
        if retried:
            self.slack_retries.labels(method).inc()

    def poll_cycle(self, source: str, *, seconds: float, pages: int, new: int, failed: bool) -> None:
        self.poll_seconds.labels(source).observe(seconds)
        self.poll_cycles.labels(source, "failed" if failed else "ok").inc()
        self.poll_pages.labels(source).inc(pages)
        self.poll_new.labels(source).inc(new)

    def intake(self, source: str, answer: str) -> None:
        self.intake_requests.labels(source, answer).inc()

    # ---- scrape-time state (set from the store just before each scrape) ----------------

    def set_backlog(
        self,
        sources: Iterable[str],
        depth: Mapping[tuple[str, str], int],
        oldest: Mapping[str, float],
    ) -> None:
        """The outbox as the store has it now; every configured source gets a sample (0 when
        nothing waits), so an age that falls back is seen falling, not vanishing."""
        self.outbox_depth.clear()
        self.outbox_oldest.clear()
        for source in sources:
            for stage in STAGES:
                self.outbox_depth.labels(source, stage).set(depth.get((source, stage), 0))
            self.outbox_oldest.labels(source).set(oldest.get(source, 0.0))

    def set_rules(self, states: Mapping[str, int]) -> None:
        for state in RULE_STATES:
            self.rollback_rules.labels(state).set(states.get(state, 0))

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
