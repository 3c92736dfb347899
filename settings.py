"""Typed settings, read from the environment (and a ``.env`` file) once, by ``app.py``.

Nothing else in Signoff reads the environment: the composition root builds ``Settings`` and
hands each part the values it needs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import time
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, SecretStr, ValidationError, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, NoDecode, PydanticBaseSettingsSource, SettingsConfigDict

from core.clock import QuietHours
from core.people import Approvers

_APPROVER = re.compile(r"^[UWS][A-Z0-9]{2,}$")
_CHANNEL = re.compile(r"^[CGD][A-Z0-9]{2,}$")


_API_KEY_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
API_ROLES = ("service", "admin")


@dataclass(frozen=True)
class ApiKey:
    """One client of Signoff's own Actions API (``API_KEYS``): its name, role and key."""

    name: str
    role: str  # "service": submits, reads and reports its own actions; "admin": also reads all and decides
    key: SecretStr

    @property
    def admin(self) -> bool:
        return self.role == "admin"


def parse_api_keys(text: str) -> list[ApiKey]:
    """``name:role:key,...``; a ValueError names what is wrong (never a key)."""
    keys: list[ApiKey] = []
    for i, raw in enumerate(e.strip() for e in text.split(",")):
        if not raw:
            continue
        parts = raw.split(":", 2)
        if len(parts) != 3:
            raise ValueError(f"entry {i + 1} must look like name:role:key")
        name, role, key = (p.strip() for p in parts)
        if not _API_KEY_NAME.match(name):
            raise ValueError(f"entry {i + 1}: the name must be letters, digits, '_', '.' or '-' (at most 64)")
        if role not in API_ROLES:
            raise ValueError(f"entry {i + 1} ({name}): the role must be service or admin")
        if len(key) < 16 or any(c.isspace() for c in key):
            raise ValueError(f"entry {i + 1} ({name}): the key must be at least 16 characters, without spaces")
        if any(k.name == name for k in keys):
            raise ValueError(f"the name {name} is used twice")
        if any(k.key.get_secret_value() == key for k in keys):
            raise ValueError(f"entry {i + 1} ({name}): the key is used twice")
        keys.append(ApiKey(name, role, SecretStr(key)))
    return keys


_SOURCES = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore", case_sensitive=False)


def database_url(v: str) -> str:
    """A SQLAlchemy URL Signoff can use (``postgres://`` spelled as SQLAlchemy wants it)."""
    scheme = v.split(":", 1)[0].split("+", 1)[0]
    if scheme not in ("sqlite", "postgresql", "postgres"):
        raise ValueError("must be a sqlite:///… or postgresql://… URL")
    return "postgresql" + v[len("postgres") :] if scheme == "postgres" and not v.startswith("postgresql") else v


class LogSettings(BaseSettings):
    """How the log is written (every command has a log): ``LOG_FORMAT`` and ``LOG_LEVEL``."""

    model_config = _SOURCES

    log_format: Literal["text", "json"] = "text"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"

    @field_validator("log_format", "log_level", mode="before")
    @classmethod
    def _any_case(cls, v: object, info: ValidationInfo) -> object:
        if not isinstance(v, str):
            return v
        return v.strip().upper() if info.field_name == "log_level" else v.strip().lower()


class DatabaseSettings(LogSettings):
    """What ``python app.py migrate`` needs, and nothing else: the database (and the log's format)."""

    model_config = _SOURCES

    database_url: str = "sqlite:///./signoff.db"

    @field_validator("database_url")
    @classmethod
    def _database(cls, v: str) -> str:
        return database_url(v)


class Settings(LogSettings):
    model_config = _SOURCES

    slack_bot_token: SecretStr
    slack_app_token: SecretStr | None = None  # before the signing secret: its check reads this
    # Required in HTTP mode; checked with the other fields, so it is named in the same error.
    slack_signing_secret: SecretStr | None = Field(default=None, validate_default=True)
    slack_api_url: str = "https://slack.com/api/"
    slack_channel: str
    approvers: Annotated[list[str], NoDecode]
    database_url: str = "sqlite:///./signoff.db"
    auto_migrate: bool = True  # apply pending schema migrations on start
    # The Actions APIs. Each is on when its key is set. Field checks (not model checks), so
    # that they are reported with every other bad setting: a check sees the fields above it.
    flowdash_api_url: str = "https://app.flowdash.com"
    flowdash_api_key: SecretStr | None = None  # set: Flowdash is on
    # What a Flowdash automation sends to POST /intake/flowdash; required when Flowdash is on.
    flowdash_intake_token: SecretStr | None = Field(default=None, validate_default=True)
    flowdash_timeout_seconds: float = Field(default=10.0, gt=0)
    # Fieldkit's Agent Actions API (seed 002): pushed to POST /intake/fieldkit, decided with idempotency keys.
    fieldkit_api_key: SecretStr | None = None  # an admin service-account key (X-API-Key); set: Fieldkit is on
    fieldkit_api_url: str | None = Field(default=None, validate_default=True)  # no default: an internal API
    # What Fieldkit (or its agents) send as Bearer to the intake; required when Fieldkit is on.
    fieldkit_intake_token: SecretStr | None = Field(default=None, validate_default=True)
    fieldkit_timeout_seconds: float = Field(default=10.0, gt=0)
    # Signoff's own Actions API (the ``signoff`` source): on when API_KEYS names a client.
    api_keys: Annotated[list[ApiKey], NoDecode] = Field(default_factory=list)
    api_rate_limit: int = Field(default=600, ge=1)  # requests a minute per key (bursts up to 60)
    callback_allowed_hosts: Annotated[list[str], NoDecode] = Field(default_factory=list)  # empty: any host
    flokit_api_url: str = "https://api.flokit.ai"
    # set: FloKit is on. The last of the sources' keys: its check sees whether any is set.
    flokit_api_key: SecretStr | None = Field(default=None, validate_default=True)
    flokit_timeout_seconds: float = Field(default=10.0, gt=0)
    poll_interval_seconds: float = Field(default=60.0, gt=0)
    port: int = Field(default=3000, ge=0, le=65535)
    # The rollback watch (issue 4): where metric values come from and how often rules are checked.
    metrics_url: str | None = None
    metrics_token: SecretStr | None = None
    metrics_timeout_seconds: float = Field(default=10.0, gt=0)
    metrics_max_age_seconds: float = Field(default=6 * 3600.0, gt=0)  # older values are "stale"
    rollback_check_interval_seconds: float = Field(default=300.0, gt=0)
    auto_rollback: bool = False  # roll back by itself when a rule trips (signoff.toml may override per type)
    # Routing and policy by action type; optional. The default path is used only if the file exists.
    signoff_config: str | None = None
    # Nothing waits forever unnoticed: reminders, escalation, expiry of undecided actions.
    remind_after_seconds: float | None = Field(default=4 * 3600.0, gt=0)
    escalate_after_seconds: float | None = Field(default=24 * 3600.0, gt=0)
    escalation_channel: str | None = None  # unset: no escalation
    expire_after_seconds: float | None = Field(default=None, gt=0)  # unset: never expire
    quiet_hours: str | None = None  # e.g. "22:00-07:00": reminders wait until it ends
    quiet_hours_timezone: str = "UTC"
    # Flood control: a poll finding more new actions than this posts one digest instead.
    digest_threshold: int = Field(default=10, ge=1)
    slack_post_interval_seconds: float = Field(default=1.0, ge=0)  # per channel, per process
    # How long a decision's card waits for its upstream call to land (counted from when the call
    # starts) before it is shown in flight ("Approving…"): a quick landing is rendered once.
    card_patience_seconds: float = Field(default=1.5, ge=0)
    # Running it as a service: GET /metrics behind this Bearer token when set (open when unset;
    # METRICS_TOKEN is the rollback watch's provider's), and the log's format and level.
    metrics_scrape_token: SecretStr | None = None

    @field_validator("slack_bot_token")
    @classmethod
    def _bot_token(cls, v: SecretStr) -> SecretStr:
        if not v.get_secret_value().startswith("xoxb-"):
            raise ValueError("must be a bot token starting with xoxb-")
        return v

    @field_validator("slack_app_token")
    @classmethod
    def _app_token(cls, v: SecretStr | None) -> SecretStr | None:
        if v is not None and not v.get_secret_value():
            return None
        if v is not None and not v.get_secret_value().startswith("xapp-"):
            raise ValueError("must be an app-level token starting with xapp-")
        return v

    @field_validator("slack_signing_secret")
    @classmethod
    def _signing_secret(cls, v: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        v = v if v is not None and v.get_secret_value() else None
        if v is None and info.data.get("slack_app_token") is None:
            raise ValueError("is required in HTTP mode (set SLACK_APP_TOKEN to use Socket Mode instead)")
        return v

    @field_validator(
        "flokit_api_key",
        "flowdash_api_key",
        "flowdash_intake_token",
        "fieldkit_api_url",
        "fieldkit_api_key",
        "fieldkit_intake_token",
        "metrics_url",
        "metrics_token",
        "metrics_scrape_token",
        "signoff_config",
        "escalation_channel",
        "quiet_hours",
        "remind_after_seconds",
        "escalate_after_seconds",
        "expire_after_seconds",
        mode="before",
    )
    @classmethod
    def _blank_is_unset(cls, v: object) -> object:
        return None if isinstance(v, str) and not v.strip() else v

    @field_validator("slack_api_url", "flokit_api_url", "flowdash_api_url", "fieldkit_api_url", "metrics_url")
    @classmethod
    def _http_url(cls, v: str | None) -> str | None:
        if v is None:
            return None
        if not re.match(r"^https?://[^/\s]+", v):
            raise ValueError("must be an http(s) URL")
        return v

    @field_validator("slack_api_url")
    @classmethod
    def _trailing_slash(cls, v: str) -> str:
        return v if v.endswith("/") else v + "/"

    @field_validator("quiet_hours")
    @classmethod
    def _quiet_hours(cls, v: str | None) -> str | None:
        if v is not None:
            quiet_window(v)  # raises ValueError with the reason
        return v

    @field_validator("quiet_hours_timezone")
    @classmethod
    def _timezone(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError) as e:
            raise ValueError("must be an IANA time zone such as Europe/Berlin or UTC") from e
        return v

    @field_validator("slack_channel", "escalation_channel")
    @classmethod
    def _channel(cls, v: str | None) -> str | None:
        if v is None:
            return None
        v = v.strip()
        if not _CHANNEL.match(v):
            raise ValueError("must be a channel ID such as C0123456789 (not a #name)")
        return v

    @field_validator("approvers", mode="before")
    @classmethod
    def _approvers(cls, v: object) -> list[str]:
        entries = [e.strip() for e in v.split(",")] if isinstance(v, str) else list(v)  # type: ignore[call-overload]
        entries = [e for e in entries if e]
        if not entries:
            raise ValueError("name at least one Slack user ID (U…/W…) or user-group ID (S…), or * for everyone")
        bad = [e for e in entries if e != "*" and not _APPROVER.match(e)]
        if bad:
            raise ValueError(f"not Slack user or user-group IDs: {', '.join(bad)}")
        return entries

    @field_validator("database_url")
    @classmethod
    def _database(cls, v: str) -> str:
        return database_url(v)

    @field_validator("flowdash_intake_token", mode="after")
    @classmethod
    def _flowdash_intake(cls, v: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        if v is None and info.data.get("flowdash_api_key") is not None:
            raise ValueError(
                "is required when Flowdash is on (FLOWDASH_API_KEY is set): "
                "the token Flowdash's automation sends to POST /intake/flowdash"
            )
        return v

    @field_validator("api_keys", mode="before")
    @classmethod
    def _api_keys(cls, v: object) -> object:
        if isinstance(v, str):
            return parse_api_keys(v)
        return v

    @field_validator("callback_allowed_hosts", mode="before")
    @classmethod
    def _hosts(cls, v: object) -> object:
        if isinstance(v, str):
            return [h.strip().lower() for h in v.split(",") if h.strip()]
        return v

    @field_validator("flokit_api_key", mode="after")
    @classmethod
    def _a_source(cls, v: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        if (
            v is None
            and info.data.get("flowdash_api_key") is None
            and info.data.get("fieldkit_api_key") is None
            and not info.data.get("api_keys")
        ):
            raise ValueError(
                "no Actions API is configured: set FLOKIT_API_KEY (FloKit), FLOWDASH_API_KEY (Flowdash), "
                "FIELDKIT_API_KEY (Fieldkit) or API_KEYS (Signoff's own API) to turn one on"
            )
        return v

    @field_validator("fieldkit_api_url", "fieldkit_intake_token", mode="after")
    @classmethod
    def _fieldkit(cls, v: object, info: ValidationInfo) -> object:
        if v is None and info.data.get("fieldkit_api_key") is not None:
            raise ValueError("is required when Fieldkit is on (FIELDKIT_API_KEY is set)")
        return v

    @property
    def sources_on(self) -> tuple[str, ...]:
        """The sources these settings turn on, by name."""
        on = []
        if self.flokit_api_key is not None:
            on.append("flokit")
        if self.flowdash_api_key is not None:
            on.append("flowdash")
        if self.fieldkit_api_key is not None:
            on.append("fieldkit")
        if self.api_keys:
            on.append("signoff")
        return tuple(on)

    @property
    def socket_mode(self) -> bool:
        return self.slack_app_token is not None

    @property
    def approver_set(self) -> Approvers:
        return Approvers(self.approvers)

    @property
    def quiet(self) -> QuietHours | None:
        if self.quiet_hours is None:
            return None
        start, end = quiet_window(self.quiet_hours)
        return QuietHours(start, end, ZoneInfo(self.quiet_hours_timezone))


class CodeSettings(Settings):
    """Settings from the arguments alone: no environment variable and no ``.env`` file is read
    (``python app.py demo`` must not pick up a production configuration)."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings,)


def quiet_window(text: str) -> tuple[time, time]:
    m = re.fullmatch(r"\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*", text)
    if not m:
        raise ValueError("must look like 22:00-07:00")
    h1, m1, h2, m2 = (int(g) for g in m.groups())
    if not (h1 < 24 and h2 < 24 and m1 < 60 and m2 < 60) or (h1, m1) == (h2, m2):
        raise ValueError("must be two different times of day, like 22:00-07:00")
    return time(h1, m1), time(h2, m2)


def describe_errors(error: ValidationError) -> str:
    """One line per bad setting, named as the user sets it, without echoing secret values."""
    lines = []
    for e in error.errors():
        name = "_".join(str(p) for p in e["loc"]).upper() or "settings"
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "missing":
            msg = "is required but not set"
        lines.append(f"  {name}: {msg}")
    return "invalid configuration:\n" + "\n".join(lines)


class McpSettings(BaseSettings):
    """``signoff-mcp``'s settings, and only these: where Signoff is and a key of its Actions API.
    Read from the environment alone (an MCP client passes them in its configuration file), never
    from a ``.env`` nor any of the bot's settings."""

    model_config = SettingsConfigDict(env_file=None, extra="ignore", case_sensitive=False)

    signoff_url: str
    signoff_api_key: SecretStr

    @field_validator("signoff_url")
    @classmethod
    def _url(cls, v: str) -> str:
        v = v.strip()
        if not re.match(r"^https?://[^/\s]+", v):
            raise ValueError("must be Signoff's http(s) address, e.g. https://signoff.example.com")
        return v.rstrip("/")

    @field_validator("signoff_api_key")
    @classmethod
    def _key(cls, v: SecretStr) -> SecretStr:
        if not v.get_secret_value().strip():
            raise ValueError("must not be empty")
        return SecretStr(v.get_secret_value().strip())
