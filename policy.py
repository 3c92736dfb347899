"""Routing and policy by action type, from an optional ``signoff.toml`` beside the environment.

The file holds a list of routes; for each action the first route that matches it applies (its
``types`` include the action's type, or it names none; likewise ``risk`` and ``sources``), and whatever it
leaves unset falls back to the environment's settings. A route picks the channel, the
approvers, how many distinct approvers are needed (the two-person rule), whether failed
guardrails need a typed confirmation before Approve, the reminder timings and auto-rollback. Validated once at start, by ``app.py``: an unknown key, a wrong
type or an unreadable file is a clear error naming the route and field, never a crash later.

    [[routes]]
    types = ["budget_shift"]
    channel = "C0BUDGETS"
    approvers = ["S0FINANCE"]
    required_approvals = 2
    confirm_failed_guardrails = true
    remind_after = "2h"
    auto_rollback = true

    [[routes]]
    types = ["creative_pause"]
    auto_rollback = false
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator

DEFAULT_PATH = "signoff.toml"


class PolicyError(Exception):
    """The policy file is missing, unreadable or invalid; the message says where and why."""


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d|w)?\s*$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_CHANNEL = re.compile(r"^[CG][A-Z0-9]{2,}$")
_APPROVER = re.compile(r"^(\*|[UWS][A-Z0-9]{2,})$")


def _duration(value: object) -> object:
    """Seconds as a number, or text such as "90s", "30m", "4h", "2d", "1w"."""
    if isinstance(value, bool):
        raise ValueError("must be a duration such as 4h or a number of seconds")
    if isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str) and (m := _DURATION.match(value)):
        seconds = float(m.group(1)) * _UNITS[m.group(2) or "s"]
    else:
        raise ValueError("must be a duration such as 4h or a number of seconds")
    if seconds <= 0:
        raise ValueError("must be more than zero")
    return timedelta(seconds=seconds)


Duration = Annotated[timedelta, BeforeValidator(_duration)]


class Route(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    sources: tuple[str, ...] = ()  # sources (flokit, flowdash, ...) it applies to; empty: every source
    types: tuple[str, ...] = ()  # action types this route applies to; empty: every type
    risk: tuple[str, ...] = ()  # risks it applies to, where the source reports one; empty: any
    channel: str | None = None  # where the cards go; unset: SLACK_CHANNEL
    approvers: tuple[str, ...] | None = None  # who may decide; unset: APPROVERS
    required_approvals: int = Field(default=1, ge=1, le=5)  # distinct approvers needed
    confirm_failed_guardrails: bool = False  # Approve needs a typed confirmation if a guardrail failed
    remind_after: Duration | None = None
    escalate_after: Duration | None = None
    expire_after: Duration | None = None
    escalation_channel: str | None = None
    auto_rollback: bool | None = None  # roll back by itself when a rule trips; unset: AUTO_ROLLBACK

    def matches(self, action_type: str, risk: str | None = None, source: str | None = None) -> bool:
        if self.sources and (source is None or source.casefold() not in {s.casefold() for s in self.sources}):
            return False
        if self.types and action_type not in self.types:
            return False
        return not self.risk or (risk is not None and risk.casefold() in {r.casefold() for r in self.risk})

    @field_validator("channel", "escalation_channel")
    @classmethod
    def _channel(cls, v: str | None) -> str | None:
        if v is not None and not _CHANNEL.match(v):
            raise ValueError("must be a channel ID such as C0123456789 (not a #name)")
        return v

    @field_validator("approvers")
    @classmethod
    def _approvers(cls, v: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if v is None:
            return None
        bad = [e for e in v if not _APPROVER.match(e)]
        if bad or not v:
            raise ValueError(
                f"must list Slack user IDs (U…/W…), user-group IDs (S…) or *; not {', '.join(bad) or 'empty'}"
            )
        return v


@dataclass(frozen=True)
class Timings:
    """When an action still awaiting a decision is reminded about, escalated and expired."""

    remind_after: timedelta | None
    escalate_after: timedelta | None
    expire_after: timedelta | None
    escalation_channel: str | None


class ActionTypeDecl(BaseModel):
    """One entry of Signoff's own API's type catalog (``[[action_types]]``), with exactly
    Fieldkit's fields."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    action_type: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:-]+$")
    summary: str = ""
    risk: str | None = None
    approval_required_by_default: bool = True
    required_fields: tuple[str, ...] = ()
    example_payload: dict[str, Any] = Field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "action_type": self.action_type,
            "summary": self.summary,
            "risk": self.risk,
            "approval_required_by_default": self.approval_required_by_default,
            "required_fields": list(self.required_fields),
            "example_payload": self.example_payload,
        }


class PolicyFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    routes: tuple[Route, ...] = Field(default=())
    action_types: tuple[ActionTypeDecl, ...] = Field(default=())

    @field_validator("action_types")
    @classmethod
    def _unique_types(cls, v: tuple[ActionTypeDecl, ...]) -> tuple[ActionTypeDecl, ...]:
        names = [t.action_type for t in v]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"action types declared twice: {', '.join(dup)}")
        return v


@dataclass(frozen=True)
class Policy:
    """What applies to an action, given its type: the file's routes over the settings' defaults."""

    auto_rollback: bool = False
    routes: tuple[Route, ...] = ()
    defaults: Timings = Timings(None, None, None, None)
    action_types: tuple[ActionTypeDecl, ...] = ()  # Signoff's own API's catalog

    def route_for(self, action_type: str, risk: str | None = None, *, source: str | None = None) -> Route | None:
        return next((r for r in self.routes if r.matches(action_type, risk, source)), None)

    def auto_rollback_for(self, action_type: str, risk: str | None = None, *, source: str | None = None) -> bool:
        route = self.route_for(action_type, risk, source=source)
        if route is not None and route.auto_rollback is not None:
            return route.auto_rollback
        return self.auto_rollback

    def channel_for(self, action_type: str, risk: str | None, default: str, *, source: str | None = None) -> str:
        route = self.route_for(action_type, risk, source=source)
        return route.channel if route is not None and route.channel else default

    def required_approvals(self, action_type: str, risk: str | None = None, *, source: str | None = None) -> int:
        route = self.route_for(action_type, risk, source=source)
        return route.required_approvals if route is not None else 1

    def confirm_failed_guardrails(
        self, action_type: str, risk: str | None = None, *, source: str | None = None
    ) -> bool:
        route = self.route_for(action_type, risk, source=source)
        return route is not None and route.confirm_failed_guardrails

    def timings(self, action_type: str, risk: str | None = None, *, source: str | None = None) -> Timings:
        route, d = self.route_for(action_type, risk, source=source), self.defaults
        if route is None:
            return d
        return Timings(
            remind_after=route.remind_after or d.remind_after,
            escalate_after=route.escalate_after or d.escalate_after,
            expire_after=route.expire_after or d.expire_after,
            escalation_channel=route.escalation_channel or d.escalation_channel,
        )


def load_policy(path: str | None, *, auto_rollback: bool, defaults: Timings | None = None) -> Policy:
    """The policy from ``path`` (an error if given and missing), else from ``signoff.toml``
    in the working directory if there is one, else the settings alone."""
    explicit = path is not None
    file = Path(path if path is not None else DEFAULT_PATH)
    if not file.exists():
        if explicit:
            raise PolicyError(f"SIGNOFF_CONFIG names {file}, which does not exist")
        return Policy(auto_rollback=auto_rollback, defaults=defaults or Policy.defaults)
    try:
        data = tomllib.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as e:
        raise PolicyError(f"cannot read {file}: {e}") from e
    except tomllib.TOMLDecodeError as e:
        raise PolicyError(f"{file} is not valid TOML: {e}") from e
    try:
        parsed = PolicyFile.model_validate(data)
    except ValidationError as e:
        raise PolicyError(f"{file} is invalid:\n{_describe(e)}") from e
    return Policy(
        auto_rollback=auto_rollback,
        routes=parsed.routes,
        defaults=defaults or Policy.defaults,
        action_types=parsed.action_types,
    )


def _describe(error: ValidationError) -> str:
    lines = []
    for e in error.errors():
        where = ".".join(f"[{p + 1}]" if isinstance(p, int) else str(p) for p in e["loc"]).replace(".[", "[")
        msg = "unknown setting" if e["type"] == "extra_forbidden" else e["msg"]
        lines.append(f"  {where}: {msg}")
    return "\n".join(lines)
