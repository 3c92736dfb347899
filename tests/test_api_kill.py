"""kill -9 and Signoff's own Actions API: a real ``python app.py`` process with only
``API_KEYS`` set, killed with SIGKILL after a status change committed and while its callback
is being delivered, then started again: the callback is delivered after the restart, and
once. And killed in the middle of a submission: the store has all of it or none of it."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import psycopg
import pytest
from aiohttp import web

from api.client import SignoffClient
from tests.api.test_actions_api import POLICY, SERVICE_KEY, verify
from tests.conftest import APPROVER, BOT_TOKEN, CHANNEL, SIGNING_SECRET
from tests.fakes.paths import REPO_ROOT
from tests.fakes.slack_api import FakeSlack
from tests.test_app import clean_env, free_port
from tests.test_replicas import Replica, eventually

KEYS = f"deployer:service:{SERVICE_KEY}"


class HoldingHook:
    """A callback endpoint that holds its first request unanswered, then answers 204."""

    def __init__(self) -> None:
        self.seen: list[bytes] = []
        self.delivered: list[tuple[dict[str, str], bytes]] = []
        self.hold = True
        self.release = asyncio.Event()
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/hook", self._hook)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}/hook"

    async def stop(self) -> None:
        self.release.set()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _hook(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.seen.append(body)
        if self.hold:
            self.hold = False
            await self.release.wait()
            return web.Response(status=503)
        self.delivered.append((dict(request.headers), body))
        return web.Response(status=204)


@pytest.fixture
async def hook() -> AsyncIterator[HoldingHook]:
    h = HoldingHook()
    await h.start()
    yield h
    await h.stop()


@pytest.mark.timeout(120)
async def test_sigkill_while_a_callback_is_being_delivered(
    tmp_path: Path, slack: FakeSlack, database_url: str, hook: HoldingHook,
) -> None:
    (tmp_path / "signoff.toml").write_text(POLICY, encoding="utf-8")
    replica = Replica(name="bot", port=free_port(), key="", log=tmp_path / "bot.log")
    env = clean_env(
        SLACK_BOT_TOKEN=BOT_TOKEN, SLACK_SIGNING_SECRET=SIGNING_SECRET, SLACK_API_URL=slack.api_url,
        SLACK_CHANNEL=CHANNEL, APPROVERS=APPROVER, DATABASE_URL=database_url, API_KEYS=KEYS,
        PORT=str(replica.port), PYTHONUNBUFFERED="1", SLACK_POST_INTERVAL_SECONDS="0",
    )
    connector = aiohttp.TCPConnector(force_close=True)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=30)) as http:
        try:
            await _start(replica, env, tmp_path, http)
            async with SignoffClient(replica.url, SERVICE_KEY, session=http) as api:
                x = (await api.submit("warm_cache", callback_url=hook.url))["action_id"]
                await api.report(x, "running")
                await eventually(lambda: bool(hook.seen), timeout=20, what="the callback sent", on_timeout=replica.log_tail)
                assert replica.proc is not None
                replica.proc.send_signal(signal.SIGKILL)
                await replica.proc.wait()
                hook.release.set()  # its answer goes nowhere: the sender is gone
                assert hook.delivered == []

                await _start(replica, env, tmp_path, http)
                await eventually(
                    lambda: bool(hook.delivered), timeout=60, what="the callback delivered after the restart",
                    on_timeout=replica.log_tail,
                )
                await asyncio.sleep(2.5)  # a further pass of the callbacks job sends nothing more
                assert len(hook.delivered) == 1
                headers, body = hook.delivered[0]
                assert verify(headers, body, SERVICE_KEY)
                assert json.loads(body)["event"] == "action.running" and json.loads(body)["action"]["action_id"] == x
                assert (await api.get(x))["status"] == "running"
        finally:
            await _stop(replica)


@pytest.mark.postgres
@pytest.mark.timeout(120)
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_sigkill_in_the_middle_of_a_submission_leaves_nothing_and_the_retry_is_carded_once(
    tmp_path: Path, slack: FakeSlack, database_url: str,
) -> None:
    """The submission is held mid-transaction (its card row waits on a table lock the test
    holds), the process is killed, and the store has none of it: no action that would never
    be carded, no key that replays nothing. The client's retry with the same key, once the
    dead request's hold on the key lapses, stores it once and it is carded."""
    (tmp_path / "signoff.toml").write_text(POLICY, encoding="utf-8")
    replica = Replica(name="bot", port=free_port(), key="", log=tmp_path / "bot.log")
    env = clean_env(
        SLACK_BOT_TOKEN=BOT_TOKEN, SLACK_SIGNING_SECRET=SIGNING_SECRET, SLACK_API_URL=slack.api_url,
        SLACK_CHANNEL=CHANNEL, APPROVERS=APPROVER, DATABASE_URL=database_url, API_KEYS=KEYS,
        PORT=str(replica.port), PYTHONUNBUFFERED="1", SLACK_POST_INTERVAL_SECONDS="0",
    )
    body = {"action_type": "restart_service", "payload": {"service": "web"}}
    headers = {"X-API-Key": SERVICE_KEY, "Idempotency-Key": "deploy-42"}
    connector = aiohttp.TCPConnector(force_close=True)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=30)) as http:
        db = await psycopg.AsyncConnection.connect(database_url, autocommit=True)
        try:
            await _start(replica, env, tmp_path, http)
            await db.execute("BEGIN")
            await db.execute("LOCK TABLE cards IN EXCLUSIVE MODE")
            submitting = asyncio.create_task(http.post(f"{replica.url}/api/v1/actions", json=body, headers=headers))

            async def held() -> bool:
                # (read outside the lock's transaction: within one, pg_stat_activity stays as first read)
                async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as watcher:
                    cur = await watcher.execute(
                        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                        " AND wait_event_type = 'Lock' AND query ILIKE 'INSERT INTO cards%'"
                    )
                    row = await cur.fetchone()
                return row is not None and row[0] > 0

            await eventually(held, timeout=20, what="the submission waiting on the card row", on_timeout=replica.log_tail)
            assert replica.proc is not None
            replica.proc.send_signal(signal.SIGKILL)
            await replica.proc.wait()
            with pytest.raises(aiohttp.ClientError):
                await submitting
            await db.execute("ROLLBACK")

            async def count(table: str) -> int:
                cur = await db.execute(f"SELECT count(*) FROM {table}")  # noqa: S608 - the test's own table names
                row = await cur.fetchone()
                assert row is not None
                return int(row[0])

            # None of it: the dead request's transaction never committed.
            assert await count("api_actions") == 0
            assert await count("actions") == 0
            cur = await db.execute("SELECT status FROM api_idempotency_keys WHERE key = 'deploy-42'")
            assert [r[0] for r in await cur.fetchall()] in ([], [None])
            # The key is held by the dead request for a minute; let that minute pass.
            await db.execute("UPDATE api_idempotency_keys SET locked_until = now() - interval '1 second'")

            await _start(replica, env, tmp_path, http)
            async with http.post(f"{replica.url}/api/v1/actions", json=body, headers=headers) as r:
                assert r.status == 201, await r.text()
                assert "X-Idempotent-Replay" not in r.headers
                x = (await r.json())["action_id"]
            async with http.post(f"{replica.url}/api/v1/actions", json=body, headers=headers) as r:
                assert r.status == 201 and r.headers.get("X-Idempotent-Replay") == "true"
                assert (await r.json())["action_id"] == x
            assert await count("api_actions") == 1 and await count("actions") == 1

            def carded() -> bool:
                return any(
                    ((m.metadata or {}).get("event_payload") or {}).get("external_id") == x
                    for m in slack.messages_in(CHANNEL) if m.thread_ts is None
                )

            await eventually(carded, timeout=30, what="the retried submission carded", on_timeout=replica.log_tail)
            assert sum(1 for m in slack.messages_in(CHANNEL) if m.thread_ts is None) == 1
        finally:
            await db.close()
            await _stop(replica)


async def _start(replica: Replica, env: dict[str, str], cwd: Path, http: aiohttp.ClientSession) -> None:
    with replica.log.open("ab") as log:
        replica.proc = await asyncio.create_subprocess_exec(
            sys.executable, str(REPO_ROOT / "app.py"), cwd=cwd, env=env,
            stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=asyncio.subprocess.STDOUT,
        )

    async def healthy() -> bool:
        assert replica.alive, replica.log_tail()
        try:
            async with http.get(f"{replica.url}/healthz") as r:
                return r.status == 200
        except (aiohttp.ClientError, TimeoutError):
            return False

    await eventually(healthy, timeout=30, what="the bot healthy", on_timeout=replica.log_tail)


async def _stop(replica: Replica) -> None:
    proc = replica.proc
    if proc is not None and proc.returncode is None:
        proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), 30)
        except TimeoutError:
            proc.kill()
            await proc.wait()
