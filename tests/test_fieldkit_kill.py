"""kill -9 and Fieldkit: a real ``python app.py`` process with Fieldkit on (the fake Fieldkit
and the fake Slack in this process), killed with SIGKILL after a decision committed, then
started again. The decide is sent with the same Idempotency-Key and the same body byte for
byte (stored with the decision), and Fieldkit decides once."""

from __future__ import annotations

import asyncio
import signal
import sys
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

import app
from tests.conftest import APPROVER, APPROVER_EMAIL, BOT_TOKEN, CHANNEL, SIGNING_SECRET
from tests.fakes.fieldkit import ADMIN_KEY, FakeFieldkit
from tests.fakes.paths import REPO_ROOT
from tests.fakes.slack_api import FakeSlack
from tests.test_app import clean_env, free_port
from tests.test_replicas import Replica, Store, card_ref, card_shows, eventually, submit

TOKEN = "fieldkit-intake-token"
TIMEOUT = "1"
LEASE_SECONDS = app.SLACK_TIMEOUT_SECONDS + 3 * float(TIMEOUT) + 5
TAKEOVER = LEASE_SECONDS + 30


@pytest.fixture
async def fieldkit() -> AsyncIterator[FakeFieldkit]:
    fake = FakeFieldkit()
    await fake.start()
    yield fake
    await fake.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    connector = aiohttp.TCPConnector(force_close=True)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=30)) as session:
        yield session


class Bot:
    def __init__(self, tmp_path: Path, fieldkit: FakeFieldkit, slack: FakeSlack, database_url: str, http: aiohttp.ClientSession) -> None:
        self.replica = Replica(name="bot", port=free_port(), key=ADMIN_KEY, log=tmp_path / "bot.log")
        self.env = clean_env(
            SLACK_BOT_TOKEN=BOT_TOKEN, SLACK_SIGNING_SECRET=SIGNING_SECRET, SLACK_API_URL=slack.api_url,
            SLACK_CHANNEL=CHANNEL, APPROVERS=APPROVER, DATABASE_URL=database_url,
            FIELDKIT_API_URL=fieldkit.url, FIELDKIT_API_KEY=ADMIN_KEY, FIELDKIT_INTAKE_TOKEN=TOKEN,
            FIELDKIT_TIMEOUT_SECONDS=TIMEOUT, PORT=str(self.replica.port), PYTHONUNBUFFERED="1",
            SLACK_POST_INTERVAL_SECONDS="0",
        )
        self.tmp_path = tmp_path
        self.http = http

    async def start(self) -> None:
        with self.replica.log.open("ab") as log:
            self.replica.proc = await asyncio.create_subprocess_exec(
                sys.executable, str(REPO_ROOT / "app.py"), cwd=self.tmp_path, env=self.env,
                stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=asyncio.subprocess.STDOUT,
            )

        async def healthy() -> bool:
            assert self.replica.alive, self.replica.log_tail()
            try:
                async with self.http.get(f"{self.replica.url}/healthz") as r:
                    return r.status == 200
            except (aiohttp.ClientError, asyncio.TimeoutError):
                return False

        await eventually(healthy, timeout=30, what="the bot healthy", on_timeout=self.replica.log_tail)

    async def kill(self) -> None:
        assert self.replica.proc is not None
        self.replica.proc.send_signal(signal.SIGKILL)
        await self.replica.proc.wait()

    async def stop(self) -> None:
        proc = self.replica.proc
        if proc is not None and proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), 30)
            except asyncio.TimeoutError:
                proc.kill()
                await proc.wait()

    async def push(self, action_id: str) -> int:
        async with self.http.post(
            f"{self.replica.url}/intake/fieldkit", json={"action_id": action_id},
            headers={"Authorization": f"Bearer {TOKEN}"},
        ) as r:
            return r.status


@pytest.fixture
async def bot(
    tmp_path: Path, fieldkit: FakeFieldkit, slack: FakeSlack, database_url: str, http: aiohttp.ClientSession
) -> AsyncIterator[Bot]:
    slack.add_user(APPROVER, email=APPROVER_EMAIL, real_name="Ada Lovelace")
    b = Bot(tmp_path, fieldkit, slack, database_url, http)
    yield b
    await b.stop()


async def carded(bot: Bot, fieldkit: FakeFieldkit, slack: FakeSlack) -> tuple[str, object]:
    await bot.start()
    x = fieldkit.submit()
    assert await bot.push(x) == 202
    ref = await eventually(lambda: card_ref(slack, x), timeout=20, what="the card", on_timeout=bot.replica.log_tail)
    return x, ref


async def test_sigkill_after_the_decision_commits_before_fieldkit_has_it(
    bot: Bot, fieldkit: FakeFieldkit, slack: FakeSlack, database_url: str, http: aiohttp.ClientSession
) -> None:
    x, ref = await carded(bot, fieldkit, slack)
    fieldkit.fail_next(f"/{x}/decide", status=0, times=1000)  # every attempt reset, none applied
    store = Store(database_url)
    try:
        assert (await submit(http, bot.replica, ref, APPROVER, "approve", "ship it")).acked  # type: ignore[arg-type]
        await eventually(
            lambda: store.rows("SELECT id FROM outbox WHERE attempts >= 1 AND lease_until IS NULL AND state = 'pending'"),
            timeout=20, what="a failed attempt recorded",
        )
        await bot.kill()
        stored = (await store.rows("SELECT idempotency_key, request_body FROM outbox"))[0]
        assert stored["request_body"] is not None and fieldkit.decisions == []
        assert (await store.rows("SELECT status FROM actions"))[0]["status"] == "approving"

        fieldkit._faults.clear()
        await bot.start()
        await eventually(lambda: card_shows(slack, x, "approved", APPROVER), timeout=TAKEOVER,
                         what="the card approved", on_timeout=bot.replica.log_tail)
        sent = fieldkit.decides(x)
        assert {r.headers["Idempotency-Key"] for r in sent} == {stored["idempotency_key"]}
        assert {r.body for r in sent} == {stored["request_body"].encode()}  # byte for byte, before and after
        assert [d["reason"] for d in fieldkit.decisions] == [f"Approved by Ada Lovelace <{APPROVER_EMAIL}> in Slack: ship it"]
        events = Counter(await store.events(ref.action_id))  # type: ignore[attr-defined]
        assert events["requested"] == 1 and events["confirmed"] == 1 and not events["failed"], events
    finally:
        await store.close()


async def test_sigkill_after_fieldkit_decided_before_the_answer_was_recorded(
    bot: Bot, fieldkit: FakeFieldkit, slack: FakeSlack, database_url: str, http: aiohttp.ClientSession
) -> None:
    x, ref = await carded(bot, fieldkit, slack)
    # Fieldkit decides at once; its answer does not come before the kill.
    fieldkit.fail_next(f"/{x}/decide", status=503, delay=TAKEOVER + 60, after_effect=True)
    store = Store(database_url)
    try:
        assert (await submit(http, bot.replica, ref, APPROVER, "approve", "ship it")).acked  # type: ignore[arg-type]
        await fieldkit.wait_decided(x)
        await bot.kill()
        assert "confirmed" not in await store.events(ref.action_id)  # type: ignore[attr-defined]

        await bot.start()  # waits out the killed process's lease, then sends the same request again
        await eventually(lambda: card_shows(slack, x, "approved", APPROVER), timeout=TAKEOVER,
                         what="the card approved", on_timeout=bot.replica.log_tail)
        sent = fieldkit.decides(x)
        assert len(sent) == 2 and sent[0].body == sent[1].body
        assert sent[0].headers["Idempotency-Key"] == sent[1].headers["Idempotency-Key"]
        assert len(fieldkit.decisions) == 1  # the second was a replay
        events = Counter(await store.events(ref.action_id))  # type: ignore[attr-defined]
        assert events["requested"] == 1 and events["confirmed"] == 1 and not events["conflict"], events
        assert "replayed the decision" in bot.replica.log.read_text()
    finally:
        await store.close()
