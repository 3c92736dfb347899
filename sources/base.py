"""What every Actions API source speaks: Signoff's lifecycle, our own action model, the
source interface and its one error family.

A source module (``sources/flokit.py``, ...) is the only place that knows a source's own
words; it maps them onto these types (see ``shared/design/lifecycle.md``).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol


class Status(str, enum.Enum):
    """Lifecycle states seen upstream, plus Signoff's own states for a decision in flight."""

    DRAFT = "draft"
    READY = "ready"
    APPROVED = "approved"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    REJECTED = "rejected"
    ROLLED_BACK = "rolled_back"
    # Signoff's own, between a click and the upstream's confirmation.
    APPROVING = "approving"
    REJECTING = "rejecting"
    ROLLING_BACK = "rolling_back"
    # Signoff's own: nobody decided within EXPIRE_AFTER_SECONDS; no longer decidable here.
    # The upstream's word still wins if it moves the action (approved in its own UI, say).
    EXPIRED = "expired"

    @property
    def in_flight(self) -> bool:
        return self in IN_FLIGHT


IN_FLIGHT = frozenset({Status.APPROVING, Status.REJECTING, Status.ROLLING_BACK})
TERMINAL = frozenset({Status.SUCCEEDED, Status.FAILED, Status.REJECTED, Status.ROLLED_BACK})


class Op(str, enum.Enum):
    """A decision a person (or Signoff) can send upstream."""

    APPROVE = "approve"
    REJECT = "reject"
    ROLLBACK = "rollback"


@dataclass(frozen=True)
class Transition:
    """How an op moves the lifecycle: allowed from, in flight while, and landed in."""

    allowed_from: frozenset[Status]
    in_flight: Status
    outcome: Status


TRANSITIONS: dict[Op, Transition] = {
    Op.APPROVE: Transition(frozenset({Status.READY}), Status.APPROVING, Status.APPROVED),
    Op.REJECT: Transition(frozenset({Status.READY}), Status.REJECTING, Status.REJECTED),
    Op.ROLLBACK: Transition(
        frozenset({Status.APPROVED, Status.RUNNING, Status.SUCCEEDED}),
        Status.ROLLING_BACK,
        Status.ROLLED_BACK,
    ),
}


@dataclass(frozen=True)
class Capabilities:
    """What a source can do; cards offer only these."""

    ops: frozenset[Op]
    idempotency_keys: bool = False


@dataclass(frozen=True)
class Impact:
    metric: str
    direction: str
    magnitude: float | None


@dataclass(frozen=True)
class Signal:
    label: str
    value: str


@dataclass(frozen=True)
class Guardrail:
    check: str
    passed: bool
    detail: str


@dataclass(frozen=True)
class UpstreamAction:
    """One action as a source reports it, in Signoff's words.

    ``detailed`` is False for list entries that lack signals, guardrails and rollback
    conditions; the poll fetches the detail before it stores a new action.
    """

    external_id: str
    status: Status
    upstream_status: str
    type: str
    title: str
    rationale: str = ""
    expected_impact: Impact | None = None
    data_signals: tuple[Signal, ...] = ()
    guardrail_checks: tuple[Guardrail, ...] = ()
    rollback_conditions: tuple[str, ...] = ()
    created_at: datetime | None = None
    decided_at: datetime | None = None
    decided_by: str | None = None
    requested_by: str | None = None
    risk: str | None = None  # where the source rates its actions (Fieldkit's type catalog); routes match on it
    detailed: bool = False
    raw: dict[str, Any] = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class Page:
    actions: tuple[UpstreamAction, ...]
    total: int
    limit: int
    offset: int


@dataclass(frozen=True)
class DecisionRequest:
    """Everything a source needs to carry one decision upstream.

    ``idempotency_key`` is stable for the decision across every retry and replica.
    """

    op: Op
    external_id: str
    actor: str
    note: str | None
    idempotency_key: str


# ---- the one error family -------------------------------------------------------------


class SourceError(Exception):
    """Any failure talking to an Actions API. ``retryable`` says whether trying again can help."""

    retryable: bool = False

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class TransientError(SourceError):
    """Timeouts, refused or reset connections, 5xx and 429: the outcome is unknown, retry."""

    retryable = True


class BadResponseError(TransientError):
    """The upstream answered something that is not what its document promises."""


class ConflictError(SourceError):
    """409: the action is not in a state that allows the op; read it and adopt its state."""


class PermanentError(SourceError):
    """400/401/403/404/422 and the like: trying the same request again will not help."""


class NotFoundError(PermanentError):
    """The upstream does not know the action."""


class ActionSource(Protocol):
    """An Actions API, as the rest of Signoff sees it."""

    name: str
    capabilities: Capabilities

    async def list_actions(self, *, status: Status, limit: int, offset: int) -> Page: ...

    async def get_action(self, external_id: str) -> UpstreamAction: ...

    async def send(self, request: DecisionRequest) -> UpstreamAction | None:
        """Carry a decision upstream; returns the action's new state where the source says it."""
        ...

    def listed_statuses(self) -> tuple[Status, ...]:
        """Lifecycle states the source can list by, for the poll's status sync."""
        ...
