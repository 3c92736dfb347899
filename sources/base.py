"""What every Actions API source speaks: Signoff's lifecycle, our own action model, the
source interface and its one error family.

A source module (``sources/flokit.py``, ...) is the only place that knows a source's own
words; it maps them onto these types (see ``shared/design/lifecycle.md``).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol, TypeGuard


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
    DECIDING = "deciding"  # one of the source's own named options, on its way upstream
    # Signoff's own: nobody decided within EXPIRE_AFTER_SECONDS; no longer decidable here.
    # The upstream's word still wins if it moves the action (approved in its own UI, say).
    EXPIRED = "expired"

    @property
    def in_flight(self) -> bool:
        return self in IN_FLIGHT


IN_FLIGHT = frozenset({Status.APPROVING, Status.REJECTING, Status.ROLLING_BACK, Status.DECIDING})
TERMINAL = frozenset({Status.SUCCEEDED, Status.FAILED, Status.REJECTED, Status.ROLLED_BACK})


class Op(str, enum.Enum):
    """The kind of a decision option: what it does to the lifecycle."""

    APPROVE = "approve"
    REJECT = "reject"
    ROLLBACK = "rollback"
    OTHER = "other"  # a source's own named action ("Escalate"): the upstream says what follows


@dataclass(frozen=True)
class Option:
    """One decision an action offers: its kind, the label the source gives it, and the
    source's own id for it (sent back upstream when a person picks it)."""

    kind: Op
    label: str
    key: str

    def to_json(self) -> dict[str, str]:
        return {"kind": self.kind.value, "label": self.label, "key": self.key}

    @staticmethod
    def from_json(data: object) -> Option | None:
        if not isinstance(data, dict):
            return None
        try:
            return Option(Op(data["kind"]), str(data["label"]), str(data["key"]))
        except (KeyError, ValueError):
            return None


@dataclass(frozen=True)
class Capabilities:
    """What a source can do; cards offer only these.

    ``ops``: the kinds of decision it can carry upstream at all; ``idempotency_keys``: it
    honours an ``Idempotency-Key``; ``own_options``: each action lists its own options
    (otherwise they follow from the action's state and ``ops``)."""

    ops: frozenset[Op]
    idempotency_keys: bool = False
    own_options: bool = False


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
class Detail:
    """One labelled fact a source shows about an action (a task field, a payload entry)."""

    label: str
    value: str


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
    # The decisions this action offers, where the source names them per action (Flowdash's
    # task actions); None: they follow from the status and the source's capabilities.
    options: tuple[Option, ...] | None = None
    # What else the card shows, in the source's own words: labelled facts, and where to see
    # the action upstream.
    details: tuple[Detail, ...] = ()
    url: str | None = None
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
    option_key: str = ""  # the source's own id for the option picked (FloKit: the op's name)
    option_label: str = ""
    # How many earlier attempts of this decision failed (0: the first send). A source with no
    # idempotency key reads the upstream before sending again (an earlier answer may be lost).
    attempt: int = 0
    actor_name: str = ""  # the person's name, where the directory knows it (for a body that names them)
    # The request body the source built once for this decision (``BodyBuilder``), stored with
    # it: sent as is on every attempt, by every replica.
    body: str | None = None


@dataclass(frozen=True)
class Landed:
    """The upstream acted on the decision; ``upstream`` is the action's new state where it said.
    ``note``: what the card and the audit trail should say about how it landed, where it is
    not the plain case ("landed; confirmation lost")."""

    upstream: UpstreamAction | None = None
    note: str | None = None


@dataclass(frozen=True)
class Accepted:
    """The upstream took the decision and works on it: follow ``reference`` (an execution
    id, say) with ``track`` until it lands or fails."""

    reference: str


Submitted = Landed | Accepted


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


class RequirementsError(PermanentError):
    """The upstream refused the decision for reasons a person must see and fix: ``messages``
    are shown to them as the upstream wrote them."""

    def __init__(self, messages: list[str] | tuple[str, ...], *, status: int | None = None) -> None:
        self.messages = tuple(m for m in messages if m) or ("requirements not met",)
        super().__init__("; ".join(self.messages), status=status)


class InProgressError(TransientError):
    """The upstream is busy with the action (an execution still running): try later."""


class ActionSource(Protocol):
    """An Actions API, as the rest of Signoff sees it."""

    name: str
    capabilities: Capabilities

    async def get_action(self, external_id: str) -> UpstreamAction: ...

    async def submit(self, request: DecisionRequest) -> Submitted:
        """Carry a decision upstream: it landed, or the upstream accepted it and ``track``
        follows it."""
        ...

    async def track(self, request: DecisionRequest, reference: str) -> Submitted:
        """Where an accepted decision is: ``Landed`` once it ended well, ``Accepted`` while it
        runs; a failure raises (``RequirementsError`` with the upstream's messages)."""
        ...


class BodyBuilder(Protocol):
    """A source whose upstream wants the same body on every attempt of a decision (Fieldkit:
    same ``Idempotency-Key``, same body, or 409 IDEMPOTENCY_CONFLICT). The core asks it once
    per decision, stores the text before the first send, and hands it back as
    ``DecisionRequest.body`` on every attempt."""

    def request_body(self, request: DecisionRequest) -> str: ...


def builds_body(source: ActionSource) -> bool:
    return callable(getattr(source, "request_body", None))


class PollingSource(ActionSource, Protocol):
    """A source whose actions are found by listing them (FloKit)."""

    async def list_actions(self, *, status: Status, limit: int, offset: int) -> Page: ...

    def listed_statuses(self) -> tuple[Status, ...]:
        """Lifecycle states the source can list by, for the poll's status sync."""
        ...


class IntakeError(Exception):
    """A pushed body that cannot be taken: ``field`` names what is wrong."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class PushSource(ActionSource, Protocol):
    """A source that tells Signoff about its actions (``POST /intake/<source>``)."""

    async def intake(self, body: dict[str, Any]) -> UpstreamAction:
        """The action a pushed body announces, read from the upstream where it can be
        (``IntakeError`` for a malformed body, ``SourceError`` for the upstream's)."""
        ...

    # Optional: ``track_body(ids: tuple[str, ...]) -> dict``, the intake body for an action a
    # person names by its ids (``/signoff track <source> <ids>``); ``IntakeError`` if they
    # do not name one.


def is_polling(source: ActionSource) -> TypeGuard[PollingSource]:
    return callable(getattr(source, "list_actions", None))


def is_push(source: ActionSource) -> TypeGuard[PushSource]:
    return callable(getattr(source, "intake", None))
