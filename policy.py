"""Routing and policy by action type, from an optional ``signoff.toml`` beside the environment.

The file holds a list of routes; for each action the first route whose ``types`` include the
action's type (or that names no types) applies, and whatever it leaves unset falls back to
the environment's settings. Validated once at start, by ``app.py``: an unknown key, a wrong
type or an unreadable file is a clear error naming the route and field, never a crash later.

    [[routes]]
    types = ["budget_shift"]
    auto_rollback = true

    [[routes]]
    types = ["creative_pause"]
    auto_rollback = false
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

DEFAULT_PATH = "signoff.toml"


class PolicyError(Exception):
    """The policy file is missing, unreadable or invalid; the message says where and why."""


class Route(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    types: tuple[str, ...] = ()  # action types this route applies to; empty: every type
    auto_rollback: bool | None = None  # roll back by itself when a rule trips; unset: AUTO_ROLLBACK

    def matches(self, action_type: str) -> bool:
        return not self.types or action_type in self.types


class PolicyFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    routes: tuple[Route, ...] = Field(default=())


@dataclass(frozen=True)
class Policy:
    """What applies to an action, given its type: the file's routes over the settings' defaults."""

    auto_rollback: bool = False
    routes: tuple[Route, ...] = ()

    def route_for(self, action_type: str) -> Route | None:
        return next((r for r in self.routes if r.matches(action_type)), None)

    def auto_rollback_for(self, action_type: str) -> bool:
        route = self.route_for(action_type)
        if route is not None and route.auto_rollback is not None:
            return route.auto_rollback
        return self.auto_rollback


def load_policy(path: str | None, *, auto_rollback: bool) -> Policy:
    """The policy from ``path`` (an error if given and missing), else from ``signoff.toml``
    in the working directory if there is one, else the settings alone."""
    explicit = path is not None
    file = Path(path if explicit else DEFAULT_PATH)
    if not file.exists():
        if explicit:
            raise PolicyError(f"SIGNOFF_CONFIG names {file}, which does not exist")
        return Policy(auto_rollback=auto_rollback)
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
    return Policy(auto_rollback=auto_rollback, routes=parsed.routes)


def _describe(error: ValidationError) -> str:
    lines = []
    for e in error.errors():
        where = ".".join(f"[{p + 1}]" if isinstance(p, int) else str(p) for p in e["loc"]).replace(".[", "[")
        msg = "unknown setting" if e["type"] == "extra_forbidden" else e["msg"]
        lines.append(f"  {where}: {msg}")
    return "\n".join(lines)
