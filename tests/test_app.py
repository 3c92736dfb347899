"""``python app.py`` as a user runs it: configuration errors, a real start, health, a card
posted, SIGTERM, and no secret in anything it prints."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from typing import Any

import aiohttp

from tests.conftest import BOT_TOKEN, CHANNEL, FLOKIT_KEY, SIGNING_SECRET, Harness
from tests.fakes.flokit import FakeFloKit
from tests.fakes.paths import REPO_ROOT
from tests.fakes.slack_api import FakeSlack


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def clean_env(**values: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "FLOKIT_", "FIELDKIT_", "DATABASE_URL", "APPROVERS"))}
    env.update(values)
    return env


async def test_missing_settings_exit_with_a_clear_message(tmp_path: Any) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(REPO_ROOT / "app.py"), cwd=tmp_path,
        env=clean_env(SLACK_BOT_TOKEN="xoxb-shh", FLOKIT_API_KEY="fk-shh"),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=30)
    assert proc.returncode == 2
    text = (out + err).decode()
    assert "SLACK_CHANNEL: is required" in text and "APPROVERS: is required" in text
    assert "shh" not in text


async def test_runs_serves_health_posts_a_card_and_stops_on_sigterm(
    tmp_path: Any, flokit: FakeFloKit, slack: FakeSlack
) -> None:
    action = flokit.add_action()
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(REPO_ROOT / "app.py"), cwd=tmp_path,
        env=clean_env(
            SLACK_BOT_TOKEN=BOT_TOKEN, SLACK_SIGNING_SECRET=SIGNING_SECRET, SLACK_API_URL=slack.api_url,
            SLACK_CHANNEL=CHANNEL, APPROVERS="U0APPROVER", FLOKIT_API_URL=flokit.url, FLOKIT_API_KEY=FLOKIT_KEY,
            DATABASE_URL=f"sqlite:///{tmp_path / 'bot.db'}", POLL_INTERVAL_SECONDS="0.2", PORT=str(port),
        ),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    try:
        async with aiohttp.ClientSession() as http:

            async def healthy() -> bool:
                try:
                    async with http.get(f"http://127.0.0.1:{port}/healthz") as r:
                        return r.status == 200
                except aiohttp.ClientError:
                    return False

            await slack.wait_for(healthy, timeout=20)
            await slack.wait_for(
                lambda: any(
                    (m.metadata or {}).get("event_payload", {}).get("external_id") == action["id"]
                    for m in slack.messages_in(CHANNEL)
                ),
                timeout=20,
            )
        proc.send_signal(signal.SIGTERM)
        out, _ = await asyncio.wait_for(proc.communicate(), timeout=30)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0, out.decode()[-2000:]
    text = out.decode()
    assert "signoff stopped" in text
    assert "will be unused" not in text  # Bolt's warning about the token it reads from the environment
    assert len(slack.calls_to("chat.postMessage")) == 1  # polled every 0.2 s, posted once
    for secret in (BOT_TOKEN, SIGNING_SECRET, FLOKIT_KEY):
        assert secret not in text


async def test_a_refused_app_token_is_a_clear_error_not_a_hang(tmp_path: Any, flokit: FakeFloKit, slack: FakeSlack) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(REPO_ROOT / "app.py"), cwd=tmp_path,
        env=clean_env(
            SLACK_BOT_TOKEN=BOT_TOKEN, SLACK_APP_TOKEN="xapp-wrong-token", SLACK_API_URL=slack.api_url,
            SLACK_CHANNEL=CHANNEL, APPROVERS="U0APPROVER", FLOKIT_API_URL=flokit.url, FLOKIT_API_KEY=FLOKIT_KEY,
            DATABASE_URL=f"sqlite:///{tmp_path / 'bot.db'}", PORT=str(free_port()),
        ),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout=30)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    text = out.decode()
    assert proc.returncode == 2, text[-2000:]
    assert "SLACK_APP_TOKEN was refused by Slack (invalid_auth)" in text
    assert "xapp-wrong-token" not in text


# --------------------------------------------------------------------------- credentials


async def run_to_exit(tmp_path: Any, flokit: FakeFloKit, slack: FakeSlack, **overrides: str) -> tuple[int, str]:
    """``python app.py`` against the fakes, expected to stop by itself; (exit code, output)."""
    values = dict(
        SLACK_BOT_TOKEN=BOT_TOKEN, SLACK_SIGNING_SECRET=SIGNING_SECRET, SLACK_API_URL=slack.api_url,
        SLACK_CHANNEL=CHANNEL, APPROVERS="U0APPROVER", FLOKIT_API_URL=flokit.url, FLOKIT_API_KEY=FLOKIT_KEY,
        DATABASE_URL=f"sqlite:///{tmp_path / 'bot.db'}", PORT=str(free_port()),
    )
    values.update(overrides)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(REPO_ROOT / "app.py"), cwd=tmp_path, env=clean_env(**values),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout=30)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode is not None
    return proc.returncode, (out + err).decode()


async def test_a_refused_bot_token_stops_the_start_naming_it(tmp_path: Any, flokit: FakeFloKit, slack: FakeSlack) -> None:
    code, text = await run_to_exit(tmp_path, flokit, slack, SLACK_BOT_TOKEN="xoxb-wrong-token")
    assert code == 2, text[-2000:]
    assert "signoff: SLACK_BOT_TOKEN was refused by Slack (invalid_auth)\n" in text
    assert [c.method for c in slack.calls] == ["auth.test"]  # asked once, nothing else tried
    assert "xoxb-wrong-token" not in text
    assert not flokit.calls("GET", "/v1/actions")


async def test_a_refused_flokit_key_stops_the_start_naming_it(tmp_path: Any, flokit: FakeFloKit, slack: FakeSlack) -> None:
    code, text = await run_to_exit(tmp_path, flokit, slack, FLOKIT_API_KEY="fk-wrong-key")
    assert code == 2, text[-2000:]
    assert "signoff: FLOKIT_API_KEY was refused by FloKit (HTTP 401)\n" in text
    assert len(flokit.calls("GET", "/v1/actions")) == 1  # one read, not a poll loop
    assert "fk-wrong-key" not in text


async def test_start_up_objects_are_kept_out_of_full_collections_while_running(harness: Harness) -> None:
    # The collector's full passes scanned everything start-up made, pausing the loop for
    # 100-170 ms under load (bench/ack.py); frozen while the bot runs, collectable after.
    import gc

    assert gc.get_freeze_count() == 0
    await harness.start()
    assert gc.get_freeze_count() > 10_000
    await harness.stop()
    assert gc.get_freeze_count() == 0
