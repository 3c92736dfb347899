"""SQLModel tables: actions, their Slack cards, the audit trail of decisions, the outbox,
the rollback watches and the notices posted in a card's thread."""

from __future__ import annotations

import enum
from datetime import datetime, timezone
from typing import Any

import sqlalchemy as sa
from sqlalchemy.types import TypeDecorator
from sqlmodel import Field, SQLModel


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite keeps none of its own)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(timezone.utc)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)


def _ts(*, nullable: bool = True, index: bool = False) -> Any:
    return Field(default=None, sa_type=UTCDateTime, nullable=nullable, index=index)


def _json() -> Any:
    return Field(default=None, sa_type=sa.JSON, nullable=True)


class CardState(str, enum.Enum):
    PENDING = "pending"  # not posted yet
    POSTING = "posting"  # a worker claimed it and is posting; check the channel before posting again
    POSTED = "posted"
    DIGESTED = "digested"  # listed in a digest (a flood) instead of posted; opened on demand
    HELD = "held"  # the action offers nothing to decide (a Flowdash task with no actions): not posted until it does


class OutboxState(str, enum.Enum):
    PENDING = "pending"
    DONE = "done"
    FAILED = "failed"


class AuditEvent(str, enum.Enum):
    REQUESTED = "requested"  # a person (or Signoff) decided; the upstream call is queued
    RETRIED = "retried"  # a person asked to try a failed call again
    CONFIRMED = "confirmed"  # the upstream accepted the decision
    CONFLICT = "conflict"  # the upstream refused (409); its real state was adopted
    FAILED = "failed"  # the upstream call failed for good
    UPSTREAM = "upstream"  # a state change seen upstream (decided in the source's own UI, say)
    DISCOVERED = "discovered"  # first seen
    ENDORSED = "endorsed"  # one approval of several a route requires (two-person rule); still ready
    EXPIRED = "expired"  # nobody decided in time (EXPIRE_AFTER_SECONDS); Signoff stopped offering it


class Action(SQLModel, table=True):
    __tablename__ = "actions"
    __table_args__ = (sa.UniqueConstraint("source", "external_id", name="uq_actions_source_external_id"),)

    id: int | None = Field(default=None, primary_key=True)
    source: str = Field(max_length=32)
    external_id: str = Field(max_length=255, index=True)  # also looked up without its source (/signoff show)
    type: str = Field(default="", max_length=255)
    title: str = ""
    rationale: str = ""
    status: str = Field(max_length=32, index=True)
    upstream_status: str = Field(default="", max_length=64)
    expected_impact: dict[str, Any] | None = _json()
    data_signals: list[dict[str, Any]] | None = _json()
    guardrail_checks: list[dict[str, Any]] | None = _json()
    rollback_conditions: list[str] | None = _json()
    requested_by: str | None = Field(default=None, max_length=255)
    upstream_created_at: datetime | None = _ts()
    decided_at: datetime | None = _ts()
    decided_by: str | None = Field(default=None, max_length=255)
    last_error: str | None = None
    raw: dict[str, Any] | None = _json()
    version: int = Field(default=1)
    first_seen_at: datetime | None = _ts()
    updated_at: datetime | None = _ts()
    # When the rollback watch was set up for this action (None: not yet, or never needed).
    watch_started_at: datetime | None = _ts()
    # The action's risk, where the source reports one (routes may match on it).
    risk: str | None = Field(default=None, max_length=32)
    # The decisions it offers, where its source names them per action (Option.to_json each).
    options: list[dict[str, Any]] | None = _json()
    # What else its card shows: {"fields": [[label, value], ...], "url": ...} (UpstreamAction.details).
    details: dict[str, Any] | None = _json()
    # For sources that cannot be listed: when this open action is read again (None: due now),
    # and how many reads in a row found nothing new (the backoff grows with it).
    refresh_at: datetime | None = _ts(index=True)
    refresh_misses: int = Field(default=0, sa_column_kwargs={"server_default": "0"})


class Card(SQLModel, table=True):
    """The one Slack message for an action. A row exists from the moment the action is stored,
    so that exactly one card is ever posted for it."""

    __tablename__ = "cards"

    id: int | None = Field(default=None, primary_key=True)
    action_id: int = Field(foreign_key="actions.id", unique=True)
    channel: str = Field(max_length=32)
    ts: str | None = Field(default=None, max_length=32, index=True)
    state: str = Field(default=CardState.PENDING.value, max_length=16, index=True)
    rendered_version: int = Field(default=0)
    # Set, with the action's new version, in the transaction that changes the action; cleared
    # once the card shows that version. Lets the card sync find its work through an index.
    # Both live in this row so that a concurrent change can never be overwritten as "done".
    wanted_version: int = Field(default=1)
    dirty: bool = Field(default=False, index=True)
    lease_until: datetime | None = _ts()
    attempts: int = Field(default=0)
    next_attempt_at: datetime | None = _ts()
    last_error: str | None = None
    posted_at: datetime | None = _ts()
    # Reminders for an action still awaiting a decision: each is owed once.
    reminded_at: datetime | None = _ts()
    escalated_at: datetime | None = _ts()
    # Set when the action arrived in a flood and is listed in a digest instead of posted.
    digest_id: int | None = Field(default=None, foreign_key="digests.id", index=True)


class Decision(SQLModel, table=True):
    """The audit trail: every state change of every action, appended, never updated or deleted."""

    __tablename__ = "decisions"

    id: int | None = Field(default=None, primary_key=True)
    action_id: int = Field(foreign_key="actions.id", index=True)
    event: str = Field(max_length=16)
    op: str | None = Field(default=None, max_length=16)
    actor: str = Field(max_length=255)
    note: str | None = None
    from_status: str | None = Field(default=None, max_length=32)
    to_status: str | None = Field(default=None, max_length=32)
    at: datetime | None = _ts(nullable=False, index=True)  # /signoff stats reads a window of it
    option: str | None = Field(default=None, max_length=255)  # the option's label, as the source names it


class Outbox(SQLModel, table=True):
    """One upstream call owed for a decision, delivered at least once, keyed for idempotency."""

    __tablename__ = "outbox"

    id: int | None = Field(default=None, primary_key=True)
    action_id: int = Field(foreign_key="actions.id", index=True)
    decision_id: int = Field(foreign_key="decisions.id")
    op: str = Field(max_length=16)
    actor: str = Field(max_length=255)  # the Slack user (or "signoff") who decided
    actor_identifier: str | None = Field(default=None, max_length=255)  # what the upstream records
    note: str | None = None
    idempotency_key: str = Field(max_length=64, unique=True)
    state: str = Field(default=OutboxState.PENDING.value, max_length=16, index=True)
    attempts: int = Field(default=0)
    next_attempt_at: datetime | None = _ts(nullable=False)
    lease_until: datetime | None = _ts()
    last_error: str | None = None
    notify_channel: str | None = Field(default=None, max_length=32)
    created_at: datetime | None = _ts(nullable=False)
    completed_at: datetime | None = _ts()
    option_key: str | None = Field(default=None, max_length=255)  # the source's own id for the option
    option_label: str | None = Field(default=None, max_length=255)
    # Set once the upstream accepted the decision and works on it (an execution id): the
    # entry is then followed (``track``) instead of sent again, until it ends.
    reference: str | None = Field(default=None, max_length=255)
    # The request body the source built once for this decision (sources.base.BodyBuilder):
    # sent as is on every attempt, by every replica.
    request_body: str | None = Field(default=None, sa_type=sa.Text, nullable=True)


class Reading(str, enum.Enum):
    """How the last check of a watched rule went."""

    PENDING = "pending"  # not checked yet
    OK = "ok"  # a fresh value was read and evaluated
    MISSING = "missing"  # the metrics provider has no such metric
    STALE = "stale"  # the provider's value is older than the staleness limit
    ERROR = "error"  # the provider could not be read, or answered garbage
    NO_PROVIDER = "no_provider"  # no metrics provider is configured


class Watch(SQLModel, table=True):
    """One parsed rollback condition of one approved or running action, checked on a schedule."""

    __tablename__ = "watches"
    __table_args__ = (sa.UniqueConstraint("action_id", "position", name="uq_watches_action_position"),)

    id: int | None = Field(default=None, primary_key=True)
    action_id: int = Field(foreign_key="actions.id", index=True)
    position: int  # the condition's index in the action's rollback_conditions
    condition: str  # the condition as the upstream wrote it
    rule: dict[str, Any] = Field(sa_type=sa.JSON, nullable=False)  # bot.rules.Rule.to_json()
    metric: str = Field(max_length=64)
    active: bool = Field(default=True, index=True)
    started_at: datetime | None = _ts(nullable=False)  # execution: the window counts from here
    ends_at: datetime | None = _ts()  # None: watched for as long as the action runs
    baseline: float | None = None
    baseline_at: datetime | None = _ts()
    reading: str = Field(default=Reading.PENDING.value, max_length=16)
    reading_detail: str | None = None
    last_value: float | None = None
    last_observed_at: datetime | None = _ts()
    checked_at: datetime | None = _ts()
    tripped: bool = Field(default=False)
    trips: int = Field(default=0)
    tripped_at: datetime | None = _ts()
    ended: str | None = Field(default=None, max_length=32)  # why it stopped: window_over, action_left
    next_check_at: datetime | None = _ts(nullable=False, index=True)
    lease_until: datetime | None = _ts()


class NoticeState(str, enum.Enum):
    PENDING = "pending"
    POSTING = "posting"  # a worker claimed it; look in the thread before posting again
    POSTED = "posted"
    FAILED = "failed"  # Slack refused it for good (the card's channel is gone, say)
    SKIPPED = "skipped"  # never owed after all: its action's card is held (no thread to post in)


class Notice(SQLModel, table=True):
    """A message owed in an action's card thread (a status change, a tripped rule), posted
    once: the key makes creating it idempotent, the state and lease make posting it so."""

    __tablename__ = "notices"

    id: int | None = Field(default=None, primary_key=True)
    action_id: int = Field(foreign_key="actions.id", index=True)
    key: str = Field(max_length=128, unique=True)
    kind: str = Field(max_length=32)
    payload: dict[str, Any] = Field(sa_type=sa.JSON, nullable=False)
    broadcast: bool = Field(default=False)  # also shown in the channel (reply_broadcast)
    # Posted at the top of this channel instead of in the card's thread (an escalation).
    channel: str | None = Field(default=None, max_length=32)
    state: str = Field(default=NoticeState.PENDING.value, max_length=16, index=True)
    attempts: int = Field(default=0)
    next_attempt_at: datetime | None = _ts(nullable=False)
    lease_until: datetime | None = _ts()
    last_error: str | None = None
    ts: str | None = Field(default=None, max_length=32, index=True)
    created_at: datetime | None = _ts(nullable=False)
    posted_at: datetime | None = _ts()


class Home(SQLModel, table=True):
    """Who opened Signoff's App Home tab lately, and what their Home last showed: the refresh
    job republishes a recent viewer's Home only when its content's fingerprint changed."""

    __tablename__ = "homes"

    user_id: str = Field(primary_key=True, max_length=32)
    opened_at: datetime | None = _ts(nullable=False)
    published_at: datetime | None = _ts()
    fingerprint: str | None = Field(default=None, max_length=128)


# A viewer's recent decisions are read by actor on every Home refresh: seek, never scan the trail.
sa.Index("ix_decisions_actor_id", Decision.__table__.c.actor, Decision.__table__.c.id)  # type: ignore[attr-defined]


class Digest(SQLModel, table=True):
    """One message listing the actions a single poll found when there were more than
    DIGEST_THRESHOLD: posted once instead of a wall of cards, re-rendered as they change."""

    __tablename__ = "digests"

    id: int | None = Field(default=None, primary_key=True)
    channel: str = Field(max_length=32)
    ts: str | None = Field(default=None, max_length=32, index=True)
    state: str = Field(default=CardState.PENDING.value, max_length=16, index=True)
    dirty: bool = Field(default=False, index=True)
    lease_until: datetime | None = _ts()
    attempts: int = Field(default=0)
    next_attempt_at: datetime | None = _ts()
    last_error: str | None = None
    created_at: datetime | None = _ts(nullable=False)


class ApiAction(SQLModel, table=True):
    """An action submitted through Signoff's own Actions API (the ``signoff`` source): what
    its client sees. ``status`` is the API's word (Fieldkit's); the card's action row
    (``actions``, source ``signoff``, the same ``external_id``) follows it."""

    __tablename__ = "api_actions"

    id: int | None = Field(default=None, primary_key=True)
    external_id: str = Field(max_length=64, unique=True)
    client: str = Field(max_length=64, index=True)
    status: str = Field(max_length=32, index=True)
    version: int = Field(default=1)  # bumped with every change a client can see (wait, callbacks)
    request: dict[str, Any] = Field(sa_type=sa.JSON, nullable=False)  # the submitted fields, as given
    callback_url: str | None = Field(default=None, max_length=2048)
    expires_at: datetime | None = _ts(index=True)
    decision: dict[str, Any] | None = _json()
    attempts: int = Field(default=0)
    started_at: datetime | None = _ts()
    completed_at: datetime | None = _ts()
    result: Any = _json()
    error: str | None = Field(default=None, sa_type=sa.Text, nullable=True)
    created_at: datetime = Field(sa_type=UTCDateTime, nullable=False)
    updated_at: datetime = Field(sa_type=UTCDateTime, nullable=False)


class ApiIdempotencyKey(SQLModel, table=True):
    """One ``Idempotency-Key`` a client sent on a write, kept 24 hours: the request's digest
    and, once answered, the answer (replayed for the same key and body)."""

    __tablename__ = "api_idempotency_keys"
    __table_args__ = (sa.UniqueConstraint("client", "key", name="uq_api_idempotency_client_key"),)

    id: int | None = Field(default=None, primary_key=True)
    client: str = Field(max_length=64)
    key: str = Field(max_length=255)
    digest: str = Field(max_length=64)
    status: int | None = Field(default=None)  # None: still being handled
    body: str | None = Field(default=None, sa_type=sa.Text, nullable=True)
    created_at: datetime = Field(sa_type=UTCDateTime, nullable=False, index=True)
    locked_until: datetime | None = _ts()


class ApiCallback(SQLModel, table=True):
    """One status change owed to a client's ``callback_url`` (an outbox): delivered once,
    retried with backoff for a day, by whichever replica claims it."""

    __tablename__ = "api_callbacks"
    __table_args__ = (sa.UniqueConstraint("api_action_id", "version", name="uq_api_callbacks_change"),)

    id: int | None = Field(default=None, primary_key=True)
    api_action_id: int = Field(foreign_key="api_actions.id", index=True)
    version: int
    url: str = Field(max_length=2048)
    body: str = Field(sa_type=sa.Text, nullable=False)
    state: str = Field(default="pending", max_length=16, index=True)  # pending, delivered, failed
    attempts: int = Field(default=0)
    next_attempt_at: datetime = Field(sa_type=UTCDateTime, nullable=False, index=True)
    created_at: datetime = Field(sa_type=UTCDateTime, nullable=False)
    delivered_at: datetime | None = _ts()
    last_error: str | None = Field(default=None, max_length=500)


class ApiRateBucket(SQLModel, table=True):
    """One API key's token bucket (``API_RATE_LIMIT`` a minute, bursts up to 60), in the store
    so that every replica takes from the same one: ``tokens`` left as of ``at`` (Unix seconds)."""

    __tablename__ = "api_rate_buckets"

    client: str = Field(primary_key=True, max_length=64)
    tokens: float = Field(sa_type=sa.Float, nullable=False)
    at: float = Field(sa_type=sa.Float, nullable=False)
