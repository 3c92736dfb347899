"""SIGKILL while a Flowdash execution is Pending: a real ``python app.py`` (Flowdash only, no
FloKit) is killed after Flowdash accepted the approval; a new process on the same database
finishes following the execution and settles the card, without running the action again."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bot import ids
from bot.listeners.common import ModalContext
from tests.conftest import APPROVER, BOT_TOKEN, CHANNEL, SIGNING_SECRET
from tests.fakes.cards import card_text
from tests.fakes.flowdash import FakeFlowdash
from tests.fakes.paths import REPO_ROOT
from tests.fakes.slack_api import FakeSlack, Message
from tests.fakes.slack_requests import SlackRequester, view_submission_body
from tests.test_app import clean_env, free_port
from tests.test_replicas import eventually

KEY = "flowdash-sigkill-key"
TOKEN = "flowdash-sigkill-token"


@pytest.fixture
async def flowdash() -> AsyncIterator[FakeFlowdash]:
    fake = FakeFlowdash(api_key=KEY)
    await fake.start()
    yield fake
    await fake.stop()


class Bot:
    def __init__(self, tmp_path: Path, slack: FakeSlack, flowdash: FakeFlowdash, http: aiohttp.ClientSession) -> None:
        self.tmp_path, self.slack, self.flowdash, self.http = tmp_path, slack, flowdash, http
        self.port = free_port()
        self.log = tmp_path / "bot.log"
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        env = clean_env(
            SLACK_BOT_TOKEN=BOT_TOKEN, SLACK_SIGNING_SECRET=SIGNING_SECRET, SLACK_API_URL=self.slack.api_url,
            SLACK_CHANNEL=CHANNEL, APPROVERS=APPROVER, FLOWDASH_API_URL=self.flowdash.url, FLOWDASH_API_KEY=KEY,
            FLOWDASH_INTAKE_TOKEN=TOKEN, FLOWDASH_TIMEOUT_SECONDS="1",
            DATABASE_URL=f"sqlite:///{self.tmp_path / 'signoff.db'}", PORT=str(self.port), PYTHONUNBUFFERED="1",
            SLACK_POST_INTERVAL_SECONDS="0",
        )
        env = {k: v for k, v in env.items() if not k.startswith("FLOKIT_")}
        with self.log.open("ab") as log:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable, str(REPO_ROOT / "app.py"), cwd=self.tmp_path, env=env,
                stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=asyncio.subprocess.STDOUT,
            )

        async def healthy() -> bool:
            assert self.proc is not None and self.proc.returncode is None, self.log.read_text(errors="replace")[-3000:]
            try:
                async with self.http.get(f"http://127.0.0.1:{self.port}/healthz") as r:
                    return r.status == 200
            except aiohttp.ClientError:
                return False

        await eventually(healthy, timeout=30, what="the bot healthy", on_timeout=self.tail)

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""

    async def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        await self.proc.wait()

    async def stop(self) -> int | None:
        if self.proc is None or self.proc.returncode is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)
        return await asyncio.wait_for(self.proc.wait(), 30)


def card(slack: FakeSlack, external_id: str) -> Message | None:
    for m in slack.messages_in(CHANNEL):
        if ((m.metadata or {}).get("event_payload") or {}).get("external_id") == external_id and m.thread_ts is None:
            return m
    return None


async def test_sigkill_while_pending_the_next_process_finishes_tracking(
    tmp_path: Path, slack: FakeSlack, flowdash: FakeFlowdash
) -> None:
    flowdash.add_task("wf1", "42")
    flowdash.hold = True  # the execution stays Pending until released
    async with aiohttp.ClientSession() as http:
        bot = Bot(tmp_path, slack, flowdash, http)
        await bot.start()
        try:
            async with http.post(
                f"http://127.0.0.1:{bot.port}/intake/flowdash", headers={"Authorization": f"Bearer {TOKEN}"},
                data=json.dumps({"workflow_id": "wf1", "task_id": "42", "title": "Laptop"}),
            ) as r:
                assert r.status == 202
                action_id = (await r.json())["id"]
            message = await eventually(lambda: card(slack, "wf1/42"), timeout=20, what="the card", on_timeout=bot.tail)
            body = view_submission_body(
                user_id=APPROVER, callback_id=ids.APPROVE_VIEW,
                private_metadata=ModalContext(action_id, CHANNEL, message.ts).dumps(),
                values={ids.NOTE_BLOCK: {ids.NOTE_INPUT: None}},
            )
            status, _, _ = await SlackRequester(f"http://127.0.0.1:{bot.port}/slack/events", SIGNING_SECRET, http).post(body)
            assert status == 200
            await eventually(
                lambda: (m := card(slack, "wf1/42")) and "Running 'Approve' in Flowdash" in card_text(m),
                timeout=20, what="the card saying the execution runs", on_timeout=bot.tail,
            )
            await bot.kill()
            flowdash.release()  # it ends in Flowdash while no Signoff is running
            await bot.start()  # a new process on the same database
            done = await eventually(
                lambda: (m := card(slack, "wf1/42")) and "Approved" in card_text(m) and m,
                timeout=30, what="the card settled by the new process", on_timeout=bot.tail,
            )
            assert f"<@{APPROVER}>" in card_text(done)
            assert len(flowdash.calls("POST", "/executions")) == 1 and len(flowdash.executions) == 1
            assert len([m for m in slack.messages_in(CHANNEL) if m.thread_ts is None]) == 1
        finally:
            code = await bot.stop()
        assert code == 0, bot.tail()
        assert "Traceback" not in bot.log.read_text(errors="replace"), bot.tail()
