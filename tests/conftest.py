"""Shared fixtures: the fakes on loopback, a store per test (SQLite always, PostgreSQL where
reachable), and the real bot built by ``app.Signoff`` pointed at the fakes."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest

from app import Signoff
from core.deliver import RetryPolicy
from core.clock import Clock, utc_now
from settings import Settings
from tests.fakes.flokit import FakeFloKit
from tests.fakes.slack_api import FakeSlack
from tests.fakes.identities import (  # noqa: F401  (re-exported for the tests)
    APPROVER,
    APPROVER_EMAIL,
    BOT_TOKEN,
    CHANNEL,
    FLOKIT_KEY,
    GROUP,
    GROUP_MEMBER,
    OTHER_APPROVER,
    OUTSIDER,
    POSTGRES_URL,
    SIGNING_SECRET,
)
from tests.fakes.paths import slack_published_missing
from tests.fakes.slack_requests import SlackRequester

REQUIRE_POSTGRES = os.environ.get("SIGNOFF_REQUIRE_POSTGRES", "") not in ("", "0", "false")
REQUIRE_SLACK_PUBLISHED = os.environ.get("SIGNOFF_REQUIRE_SLACK_PUBLISHED", "") not in ("", "0", "false")
FAST_RETRY = RetryPolicy(base_seconds=0.05, cap_seconds=0.2, max_attempts=4)
_postgres_down: list[str | None] = []  # probed once per run: [None] when reachable, [reason] when not


def _postgres_unreachable() -> str | None:
    if not _postgres_down:
        import psycopg

        try:
            psycopg.connect(POSTGRES_URL, autocommit=True, connect_timeout=3).close()
            _postgres_down.append(None)
        except psycopg.OperationalError as e:
            _postgres_down.append(f"PostgreSQL not reachable at {POSTGRES_URL} ({str(e).strip().splitlines()[0]})")
    return _postgres_down[0]


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Skips what cannot run here, all for one reason each, so the summary has one line each
    (raised here rather than in a fixture, so pytest folds them into one location)."""
    if item.get_closest_marker("slack_published") is not None:
        missing = slack_published_missing()
        if missing and REQUIRE_SLACK_PUBLISHED:
            pytest.fail(f"{missing}, and SIGNOFF_REQUIRE_SLACK_PUBLISHED is set")
        if missing:
            pytest.skip(f"{missing}: the checks against them are skipped (CI runs them)")
    if item.get_closest_marker("postgres") is not None and not REQUIRE_POSTGRES:
        reason = _postgres_unreachable()
        if reason:
            pytest.skip(f"{reason}; set SIGNOFF_TEST_POSTGRES_URL or start PostgreSQL (see README)")


def _postgres_admin() -> Any:
    """A sync psycopg connection to the test server, or a skip saying why there is none."""
    import psycopg

    try:
        return psycopg.connect(POSTGRES_URL, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as e:
        reason = f"PostgreSQL not reachable at {POSTGRES_URL} ({str(e).strip().splitlines()[0]})"
        if REQUIRE_POSTGRES:
            pytest.fail(f"{reason}, and SIGNOFF_REQUIRE_POSTGRES is set")
        pytest.skip(f"{reason}; set SIGNOFF_TEST_POSTGRES_URL or start PostgreSQL (see README)")


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Any) -> Any:
    """A fresh, empty database for one test, on each store."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'signoff.db'}"
        return
    admin = _postgres_admin()
    name = f"signoff_test_{uuid.uuid4().hex[:12]}"
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        base = POSTGRES_URL.rsplit("/", 1)[0]
        try:
            yield f"{base}/{name}"
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
async def flokit() -> AsyncIterator[FakeFloKit]:
    fake = FakeFloKit(api_key=FLOKIT_KEY)
    await fake.start()
    yield fake
    await fake.stop()


@pytest.fixture
async def slack() -> AsyncIterator[FakeSlack]:
    fake = FakeSlack(bot_token=BOT_TOKEN)
    await fake.start()
    fake.add_user(APPROVER, email=APPROVER_EMAIL)
    fake.add_user(OTHER_APPROVER, email="other@example.com")
    fake.add_user(OUTSIDER, email="outsider@example.com")
    fake.add_user(GROUP_MEMBER, email=None)
    fake.add_usergroup(GROUP, [GROUP_MEMBER])
    yield fake
    assert fake.violations == [], f"the bot called Slack's Web API wrongly: {fake.violations}"
    await fake.stop()


def make_settings(*, flokit: FakeFloKit, slack: FakeSlack, database_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "slack_bot_token": BOT_TOKEN,
        "slack_signing_secret": SIGNING_SECRET,
        "slack_api_url": slack.api_url,
        "slack_channel": CHANNEL,
        "approvers": f"{APPROVER},{OTHER_APPROVER},{GROUP}",
        "database_url": database_url,
        "flokit_api_url": flokit.url,
        "flokit_api_key": FLOKIT_KEY,
        "poll_interval_seconds": 3600,
        "port": 0,
        "slack_post_interval_seconds": 0,  # tests that pace posts say so
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@dataclass
class Harness:
    """The bot under test with its fakes, and a signed-request client pointed at it."""

    flokit: FakeFloKit
    slack: FakeSlack
    database_url: str
    http: aiohttp.ClientSession
    bots: list[Signoff]
    bot: Signoff | None = None

    @property
    def requester(self) -> SlackRequester:
        assert self.bot is not None and self.bot.port
        return SlackRequester(f"http://127.0.0.1:{self.bot.port}/slack/events", SIGNING_SECRET, self.http)

    async def start(self, *, retry: RetryPolicy = FAST_RETRY, clock: Clock | None = None, **overrides: Any) -> Signoff:
        extra_sources = overrides.pop("extra_sources", None)
        settings = make_settings(flokit=self.flokit, slack=self.slack, database_url=self.database_url, **overrides)
        bot = Signoff(settings, retry=retry, clock=clock or utc_now, extra_sources=extra_sources)
        self.bots.append(bot)  # stopped at the end even if it fails to start
        await bot.start(host="127.0.0.1")
        self.bot = bot
        return bot

    async def stop(self) -> None:
        if self.bot is not None:
            await self.bot.stop()
            self.bots.remove(self.bot)
            self.bot = None

    async def restart(self, **overrides: Any) -> Signoff:
        await self.stop()
        return await self.start(**overrides)

    async def wait_for(self, predicate: Callable[[], Any], timeout: float = 10.0) -> Any:
        return await self.slack.wait_for(predicate, timeout=timeout)

    async def poll(self) -> None:
        """Run one poll now and wait until it is done."""
        await self.run_job("poll")

    async def run_job(self, name: str, bot: Signoff | None = None) -> None:
        """Run one of the bot's scheduled jobs now and wait until it is done."""
        bot = bot or self.bot
        assert bot is not None
        await bot.settle_live()  # what this process does at once (deliveries, card updates) first
        job = bot.jobs[name]
        await job.wait_idle()
        await job.run()


@pytest.fixture
async def harness(flokit: FakeFloKit, slack: FakeSlack, database_url: str) -> AsyncIterator[Harness]:
    async with aiohttp.ClientSession() as http:
        h = Harness(flokit=flokit, slack=slack, database_url=database_url, http=http, bots=[])
        try:
            yield h
        finally:
            for bot in list(h.bots):
                await bot.stop()


StartBot = Callable[..., Awaitable[Signoff]]
