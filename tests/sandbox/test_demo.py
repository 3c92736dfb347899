"""``python app.py demo`` as a newcomer runs it: one line with the address, no settings and no
network (production variables and ``.env`` ignored), Ctrl-C stops it in seconds, state kept
across restarts (the examples proposed once), ``--fresh`` starts anew, and a port taken or a
working directory it cannot write is a one-line reason with exit code 2."""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import app
from tests.fakes.paths import REPO_ROOT
from tests.fakes.waiting import describe, eventually
from tests.sandbox.conftest import start_sandbox, stop_sandbox

pytestmark = pytest.mark.timeout(120)

APP = str(REPO_ROOT / "app.py")
ADDRESS = re.compile(r"http://127\.0\.0\.1:(\d+)/sandbox")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def demo_env(port: int, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "FLOKIT_", "API_KEYS", "DATABASE_URL"))}
    env.update(PORT=str(port), PYTHONUNBUFFERED="1", **extra)
    return env


class Demo:
    def __init__(self, cwd: Path, port: int, *args: str, **env: str) -> None:
        self.port = port
        self.proc = subprocess.Popen(
            [sys.executable, APP, "demo", *args], cwd=cwd, env=demo_env(port, **env),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )

    def first_line(self) -> str:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()  # the demo prints it once it serves (or exits)
        if not line:
            raise AssertionError(f"the demo exited ({self.proc.wait()}): {self.proc.stderr.read() if self.proc.stderr else ''}")
        return line

    def state(self, since: int = -1) -> dict[str, Any]:
        """What the page shows; with ``since``, once it changed after that version (at most 20 s)."""
        url = f"http://127.0.0.1:{self.port}/sandbox/state?user=U0SBADA&since={since}"
        with urllib.request.urlopen(url, timeout=30) as r:
            data: dict[str, Any] = json.load(r)
            return data

    def cards(self, count: int, timeout: float = 30.0) -> dict[str, Any]:
        """The state once the channel holds ``count`` cards (each change awaited, as the page does)."""
        deadline = time.monotonic() + timeout
        state = self.state()
        while len(titles(state)) < count and time.monotonic() < deadline:
            state = self.state(since=state["version"])
        assert len(titles(state)) == count, titles(state)
        return state

    def interrupt(self) -> tuple[int, float, str]:
        started = time.monotonic()
        self.proc.send_signal(signal.SIGINT)
        try:
            _out, err = self.proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise
        return self.proc.returncode, time.monotonic() - started, err

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate()


@pytest.fixture
def demos() -> Iterator[list[Demo]]:
    started: list[Demo] = []
    yield started
    for d in started:
        d.kill()


def titles(state: dict[str, Any]) -> list[str]:
    return [m["blocks"][0]["text"]["text"] for m in state["messages"] if m["blocks"] and m["blocks"][0]["type"] == "header"]


def test_serves_one_line_ignores_production_settings_and_stops_on_ctrl_c(tmp_path: Path, demos: list[Demo]) -> None:
    # A production .env and production variables beside it: none of them is read.
    (tmp_path / ".env").write_text("SLACK_BOT_TOKEN=xoxb-production\nDATABASE_URL=postgresql://prod/db\nPORT=1\n")
    port = free_port()
    demo = Demo(tmp_path, port, SLACK_BOT_TOKEN="xoxb-production", SLACK_API_URL="http://127.0.0.1:9/api/",
                DATABASE_URL="postgresql://nobody@127.0.0.1:1/prod", SIGNOFF_CONFIG="/nonexistent.toml",
                FLOKIT_API_KEY="production-key")
    demos.append(demo)
    line = demo.first_line()
    assert ADDRESS.search(line) and ADDRESS.search(line).group(1) == str(port)  # type: ignore[union-attr]
    assert str(tmp_path / app.DEMO_DB) in line
    state = demo.cards(4)
    assert (tmp_path / app.DEMO_DB).exists()
    # A page open at the time: its pending wait for a change is answered, not waited out.
    def wait_for_change() -> None:
        try:
            demo.state(since=state["version"] + 1000)
        except (OSError, ValueError, http.client.HTTPException):
            pass  # the connection closed as the server stopped: an answer too

    waiting = threading.Thread(target=wait_for_change, daemon=True)
    waiting.start()
    code, took, err = demo.interrupt()
    assert code == 0, err
    assert took < 5
    waiting.join(timeout=5)
    assert not waiting.is_alive()
    assert "Traceback" not in err


def proposed(workdir: Path) -> set[str]:
    """The actions proposed through the API, as the demo's store holds them."""
    with sqlite3.connect(workdir / app.DEMO_DB) as db:
        return {row[0] for row in db.execute("SELECT external_id FROM api_actions")}


def test_state_is_kept_across_restarts_and_fresh_starts_anew(tmp_path: Path, demos: list[Demo]) -> None:
    port = free_port()
    first = Demo(tmp_path, port)
    demos.append(first)
    first.first_line()
    before = titles(first.cards(4))
    seeded = proposed(tmp_path)
    assert len(seeded) == 4
    assert first.interrupt()[0] == 0

    # As if the first start had died after proposing them but before it noted that it had:
    # proposed again with the same Idempotency-Keys, the API replays them.
    (tmp_path / app.DEMO_SEEDED).unlink()
    again = Demo(tmp_path, port)
    demos.append(again)
    again.first_line()  # printed once the examples are proposed
    assert proposed(tmp_path) == seeded
    assert titles(again.state()) == before  # the channel as it was, kept by the sandbox
    assert again.interrupt()[0] == 0

    fresh = Demo(tmp_path, port, "--fresh")
    demos.append(fresh)
    fresh.first_line()
    anew = proposed(tmp_path)
    assert len(anew) == 4 and not anew & seeded
    fresh.cards(4)
    assert fresh.interrupt()[0] == 0


def test_a_port_already_taken_is_one_line(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run([sys.executable, APP, "demo"], cwd=tmp_path, env=demo_env(port), capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0, done.stderr
    assert done.stderr.startswith(f"signoff: cannot serve the sandbox on port {port}")
    assert "Traceback" not in done.stderr


def test_a_working_directory_it_cannot_write_is_one_line(tmp_path: Path) -> None:
    readonly = tmp_path / "ro"
    readonly.mkdir()
    readonly.chmod(0o555)
    # root writes anywhere it has permission bits for; /proc takes no new files from anyone.
    cwd = readonly if os.geteuid() != 0 else Path("/proc")
    try:
        done = subprocess.run([sys.executable, APP, "demo"], cwd=cwd, env=demo_env(free_port()), capture_output=True, text=True, timeout=60)
    finally:
        readonly.chmod(0o755)
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0, done.stderr
    assert "cannot be written" in done.stderr and "Traceback" not in done.stderr


def test_demo_takes_only_fresh(capsys: pytest.CaptureFixture[str]) -> None:
    assert app.main(["demo", "--stale"]) == 2
    assert "demo takes only --fresh" in capsys.readouterr().err


async def test_rollback_rules_are_watched_against_the_values_a_visitor_sets(tmp_path: Path) -> None:
    """Approve the budget shift, then drop the metric below its rule: the card says it tripped."""
    import aiohttp

    running = await start_sandbox(tmp_path)
    try:
        base = running.url.removesuffix("/sandbox")
        async with aiohttp.ClientSession() as http:
            async def state() -> dict[str, Any]:
                async with http.get(f"{base}/sandbox/state", params={"user": "U0SBADA"}) as r:
                    return dict(await r.json())

            budget = next(m for m in (await state())["messages"] if "Shift 20% budget" in json.dumps(m["blocks"]))
            approve = next(
                e for b in budget["blocks"] if b["type"] == "actions" for e in b["elements"] if e["text"]["text"] == "Approve"
            )
            actions = next(b for b in budget["blocks"] if b["type"] == "actions")
            async with http.post(f"{base}/sandbox/click", json={
                "user": "U0SBADA", "where": "message", "channel": "C0SANDBOX", "ts": budget["ts"],
                "block_id": actions.get("block_id", ""), "element": approve,
            }) as r:
                assert r.status == 200, await r.text()
            modal = await wait_for(state, lambda s: s["modal"])
            async with http.post(f"{base}/sandbox/submit", json={
                "user": "U0SBADA", "view_id": modal["view_id"], "values": {},
            }) as r:
                assert (await r.json())["closed"] is True

            def card_text(s: dict[str, Any]) -> str:
                return json.dumps(next(m for m in s["messages"] if m["ts"] == budget["ts"]), ensure_ascii=False)

            await wait_for(state, lambda s: "Approved" in card_text(s))
            async with http.post(f"{base}/sandbox/metrics", json={"metric": "meta_search_trial_conversion_rate", "value": 0.5}) as r:
                assert r.status == 200
            # The watch checks every few seconds; the card (or its thread) then says the rule tripped.
            await wait_for(state, lambda s: "tripped" in card_text(s).lower(), timeout=60)
    finally:
        await stop_sandbox(running)


async def wait_for(read: Any, check: Any, timeout: float = 20.0) -> Any:
    """``check(await read())`` until it is truthy (the shared helper, polling every 0.2 s)."""
    last: list[Any] = [None]

    async def probe() -> Any:
        last[0] = await read()
        return check(last[0])

    return await eventually(
        probe, timeout=timeout, interval=0.2, what=describe(check),
        on_timeout=lambda: f"last state: {json.dumps(last[0])[:2000]}",
    )
