"""Ack benchmark: how fast the real bot acknowledges Approve-button clicks (each checked and
answered with a modal) and the decision-committing modal submissions, next to a bare Bolt app
doing nothing but ack, how long until every decision landed in FloKit, and how many store
transactions each took (on the ack path, and per decision from click to settled card).

    python bench/ack.py                                   # 200 clicks, concurrency 16, SQLite
    python bench/ack.py --database postgresql --clicks 1000 --concurrency 16

Each click is a signed ``view_submission`` of the approve modal (callback
``bot.ids.APPROVE_VIEW``) for a distinct card, so every one commits a decision (compare-and-
set, audit entry, outbox entry) before the bot acks it. The bare app is a
``slack_bolt.AsyncApp`` on aiohttp with the same signing secret, request verification on and
one ``@app.view`` listener that only acks; it gets the same requests at the same concurrency.

Processes (2 cores here, so this matters): the load generator, the bot and the bare app each
run in a process of their own, so that neither side's event loop delays the other's
measurements. This process hosts the fake FloKit and fake Slack (real aiohttp servers on
loopback; the bot's outbox delivery and card updates reach them) and orchestrates. Latency is
measured by the load generator: from just before the signed POST to the end of the response.

The last line is the parseable summary, ``BENCH ack key=value ...``.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Awaitable
from pathlib import Path
from typing import Any

import _common
from _common import (
    APPROVER,
    APPROVER_EMAIL,
    BOT_TOKEN,
    CHANNEL,
    DEFAULT_POSTGRES_URL,
    FLOKIT_KEY,
    SIGNING_SECRET,
    percentile,
)

TARGET_P99_MS = 100.0
TARGET_RATIO = 0.5
TARGET_ACK_TRANSACTIONS = 2
TARGET_DECISION_TRANSACTIONS = 6
READY_TIMEOUT_S = 60.0
SERVER_MAX_LIFETIME_S = 3600.0  # a server process started here never outlives this
REQUEST_TIMEOUT_S = 60.0
WAIT_STEP_S = 0.005
BARE_PASSES = 3


# ---- the processes started by the orchestrator -------------------------------------------


async def _serve_until_told(
    port: int, stop: Callable[[], Awaitable[None]], stats: Callable[[], dict[str, Any]] | None = None
) -> None:
    """Announce the port, then serve until "stop" (or EOF) arrives on stdin; "stats" prints
    one line ``STATS <json>`` on stdout."""
    print(f"READY {port}", flush=True)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    deadline = loop.time() + SERVER_MAX_LIFETIME_S
    while True:
        try:
            line = await asyncio.wait_for(reader.readline(), timeout=max(0.0, deadline - loop.time()))
        except asyncio.TimeoutError:
            print("server lifetime exceeded; stopping", file=sys.stderr)
            break
        if line.strip() == b"stats" and stats is not None:
            print("STATS " + json.dumps(stats()), flush=True)
            continue
        break
    await stop()


async def role_bot(config: dict[str, Any]) -> None:
    import logging

    from app import Signoff
    from core.deliver import RetryPolicy
    from settings import Settings

    # As ``python app.py`` logs (INFO), into the log file the orchestrator gave as stderr.
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    settings = Settings(_env_file=None, **config["settings"])  # type: ignore[call-arg]
    if config.get("plain_aiosqlite"):
        import functools

        import app
        from store.db import Database

        app.Database = functools.partial(Database, inline=False)  # type: ignore[misc]
    bot = Signoff(settings, retry=RetryPolicy())
    statements: collections.Counter[str] = collections.Counter()
    if config.get("statements"):
        from sqlalchemy import event as sa_event

        @sa_event.listens_for(bot.db.engine.sync_engine, "before_cursor_execute")
        def _count_sql(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
            statements[" ".join(statement.split())[:100]] += 1
    await bot.start(host="127.0.0.1")
    assert bot.port
    profiler: list[Any] = []

    def start_profiler() -> None:
        # py-spy samples this process from outside (raw collapsed stacks, one line per stack).
        import shutil
        import subprocess

        spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
        profiler.append(subprocess.Popen(
            [spy, "record", "--pid", str(os.getpid()), "--format", "raw", "--rate", "250", "-o", config["profile"]],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        ))

    async def stop() -> None:
        await bot.stop()
        for spy in profiler:
            import signal

            spy.send_signal(signal.SIGINT)
            spy.wait(timeout=30)

    stats_asked = [0]
    # From which stats request on py-spy samples: 1, the measured clicks and all that follows
    # (not the set-up); 2, the measured decisions and all that follows; 3, what follows the
    # decisions' acks (delivery, settles, card renders, notices).
    # "click-acks" and "decision-acks": one burst alone, until its last ack.
    phase = config.get("profile_phase") or "all"
    profile_from, profile_until = {
        "all": (1, None), "click-acks": (1, 2), "decisions": (2, None), "decision-acks": (2, 3), "after-acks": (3, None),
    }[phase]

    def stats() -> dict[str, Any]:
        stats_asked[0] += 1
        if config.get("profile") and not profiler and stats_asked[0] == profile_from:
            start_profiler()
        elif profiler and stats_asked[0] == profile_until:
            import signal

            profiler[0].send_signal(signal.SIGINT)
        paths = bot.ack_paths
        return {
            "statements": dict(statements), "reads": bot.db.transactions.reads, "writes": bot.db.transactions.writes,
            "ack": {k: [paths.requests[k], paths.transactions[k], paths.most.get(k, 0)] for k in paths.requests},
        }

    await _serve_until_told(bot.port, stop, stats)


async def role_bare(config: dict[str, Any]) -> None:
    from aiohttp import web
    from slack_bolt.async_app import AsyncAck, AsyncApp
    from slack_sdk.web.async_client import AsyncWebClient

    # Same client setup as the bot (Bolt's single-team authorization calls auth.test once,
    # against the fake Slack, exactly as it does in the bot).
    client = AsyncWebClient(token=config["token"], base_url=config["slack_api_url"])
    app = AsyncApp(client=client, signing_secret=config["secret"], request_verification_enabled=True)

    @app.view(config["callback_id"])
    async def submitted(ack: AsyncAck) -> None:
        await ack()

    @app.action(config["action_id"])
    async def clicked(ack: AsyncAck) -> None:
        await ack()

    runner = web.AppRunner(app.web_app(path="/slack/events"), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    await _serve_until_told(port, runner.cleanup)


async def role_load() -> None:
    """Read a job (JSON) from stdin, fire each phase's bodies at the URL with the given
    concurrency, print per-request results (JSON) to stdout."""
    import aiohttp

    from tests.fakes.slack_requests import SlackRequester

    job = json.loads(sys.stdin.read())
    concurrency = int(job["concurrency"])
    out: dict[str, Any] = {}
    connector = aiohttp.TCPConnector(limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:
        requester = SlackRequester(job["url"], job["secret"], http)
        for phase in job["phases"]:
            bodies: list[str] = phase["bodies"]
            queue = collections.deque(range(len(bodies)))
            results: list[list[Any] | None] = [None] * len(bodies)

            async def worker() -> None:
                while queue:  # bounded: each pass takes one of the phase's bodies
                    i = queue.popleft()
                    sent_at = time.time()
                    t0 = time.perf_counter()
                    try:
                        status, text, _ = await requester.post(bodies[i])  # signs, POSTs, reads
                    except Exception as e:  # noqa: BLE001 - a failed request is a result
                        status, text = -1, f"{type(e).__name__}: {e}"
                    elapsed = time.perf_counter() - t0
                    ok = status == 200 and text.strip() in ("", "{}")
                    results[i] = [sent_at, elapsed, status, "" if ok else text[:300]]

            started = time.time()
            t0 = time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(min(concurrency, len(bodies)))))
            out[phase["name"]] = {"started": started, "wall": time.perf_counter() - t0, "results": results}
    sys.stdout.write(json.dumps(out))
    sys.stdout.flush()


# ---- orchestration ------------------------------------------------------------------------


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, from /proc (0.0 where unavailable)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


class Server:
    """A bot or bare-app process started by this script, on a loopback port."""

    def __init__(self, proc: asyncio.subprocess.Process, port: int, log_path: Path) -> None:
        self.proc = proc
        self.port = port
        self.log_path = log_path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/slack/events"

    @classmethod
    async def start(cls, role: str, config: dict[str, Any], log_path: Path) -> Server:
        log = open(log_path, "ab")  # noqa: SIM115 - handed to the child, closed below
        try:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, str(Path(__file__).resolve()), "--role", role, "--config", json.dumps(config),
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=log,
                cwd=str(_common.REPO_ROOT),
            )
        finally:
            log.close()
        assert proc.stdout is not None
        try:
            line = await asyncio.wait_for(proc.stdout.readline(), READY_TIMEOUT_S)
        except asyncio.TimeoutError:
            line = b""
        if not line.startswith(b"READY "):
            proc.kill()
            await proc.wait()
            tail = log_path.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"{role} process did not start; its log ends with:\n{tail}")
        return cls(proc, int(line.split()[1]), log_path)

    def cpu_seconds(self) -> float:
        return _cpu_seconds(self.proc.pid)

    async def stats(self) -> dict[str, Any]:
        """The bot's transaction counts so far (see role_bot)."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(b"stats\n")
        await self.proc.stdin.drain()
        line = await asyncio.wait_for(self.proc.stdout.readline(), READY_TIMEOUT_S)
        if not line.startswith(b"STATS "):
            raise RuntimeError(f"bot answered {line[:200]!r} to 'stats'")
        return json.loads(line[len(b"STATS "):])

    async def stop(self) -> None:
        if self.proc.returncode is not None:
            return
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(b"stop\n")
            await self.proc.stdin.drain()
            self.proc.stdin.close()
        except (BrokenPipeError, ConnectionResetError):
            pass
        try:
            await asyncio.wait_for(self.proc.wait(), 30)
        except asyncio.TimeoutError:
            self.proc.kill()  # this process only: it is ours
            await self.proc.wait()


async def run_load(url: str, phases: list[tuple[str, list[str]]], concurrency: int, timeout: float) -> dict[str, Any]:
    job = {"url": url, "secret": SIGNING_SECRET, "concurrency": concurrency,
           "phases": [{"name": name, "bodies": bodies} for name, bodies in phases]}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(Path(__file__).resolve()), "--role", "load",
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, cwd=str(_common.REPO_ROOT),
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(json.dumps(job).encode()), timeout)
    except asyncio.TimeoutError:
        proc.kill()
        await proc.wait()
        raise RuntimeError(f"load generator did not finish within {timeout:.0f}s") from None
    if proc.returncode != 0:
        raise RuntimeError(f"load generator failed (exit {proc.returncode})")
    return json.loads(out)


async def wait_until(what: str, predicate: Callable[[], Awaitable[bool] | bool], timeout: float, step: float = 0.05) -> float:
    """Seconds until ``predicate`` holds, checked every ``step``; raises after ``timeout``."""
    t0 = time.perf_counter()
    for _ in range(int(timeout / step) + 1):
        value = predicate()
        if not isinstance(value, bool):
            value = await value
        if value:
            return time.perf_counter() - t0
        await asyncio.sleep(step)
    raise RuntimeError(f"timed out after {timeout:.0f}s waiting for {what}")


def summarize(phase: dict[str, Any]) -> dict[str, Any]:
    results = phase["results"]
    latencies = [r[1] for r in results]
    errors = [r for r in results if r[3] or r[2] != 200]
    return {
        "n": len(results),
        "wall": phase["wall"],
        "rps": len(results) / phase["wall"] if phase["wall"] > 0 else float("nan"),
        "p50_ms": percentile(latencies, 50) * 1000,
        "p90_ms": percentile(latencies, 90) * 1000,
        "p99_ms": percentile(latencies, 99) * 1000,
        "max_ms": max(latencies) * 1000 if latencies else float("nan"),
        "errors": len(errors),
        "first_error": (errors[0][2], errors[0][3]) if errors else None,
    }


def show(label: str, s: dict[str, Any], cpu: float | None = None) -> None:
    line = (f"  {label:<5} {s['n']} clicks in {s['wall']:.2f}s = {s['rps']:.1f}/s; ack latency "
            f"p50 {s['p50_ms']:.1f} ms, p90 {s['p90_ms']:.1f} ms, p99 {s['p99_ms']:.1f} ms, max {s['max_ms']:.1f} ms; "
            f"errors {s['errors']}")
    if cpu is not None and s["n"]:
        line += f"; server CPU {cpu * 1000 / s['n']:.2f} ms/click"
    print(line)
    if s["first_error"]:
        print(f"        first error: HTTP {s['first_error'][0]} {s['first_error'][1]!r}")


async def orchestrate(args: argparse.Namespace, database_url: str, workdir: Path) -> str:
    import sqlalchemy as sa
    from sqlmodel import select

    from bot import ids
    from bot.listeners.common import ModalContext
    from store.db import Database
    from store.models import Action, Card
    from tests.fakes.flokit import FakeFloKit
    from tests.fakes.slack_api import FakeSlack
    from tests.fakes.slack_requests import block_action_body, view_submission_body

    class TimedFloKit(FakeFloKit):
        """The fake FloKit, noting when each approval landed."""

        def __init__(self, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.landed: dict[str, float] = {}

        def _record(self, action: dict[str, Any], event: str, by: str | None, note: str | None, at: str) -> None:
            super()._record(action, event, by, note, at)
            if event == "approved":
                self.landed.setdefault(action["id"], time.time())

    clicks, warmup, conc = args.clicks, args.warmup, args.concurrency
    total = clicks + warmup
    flokit = TimedFloKit(api_key=FLOKIT_KEY)
    slack = FakeSlack(bot_token=BOT_TOKEN)
    await flokit.start()
    await slack.start()
    slack.add_user(APPROVER, email=APPROVER_EMAIL)
    store = Database(database_url)
    servers: list[Server] = []
    try:
        for _ in range(total):
            flokit.add_action()
        settings = {
            "slack_bot_token": BOT_TOKEN, "slack_signing_secret": SIGNING_SECRET, "slack_api_url": slack.api_url,
            "slack_channel": CHANNEL, "approvers": APPROVER, "database_url": database_url,
            "flokit_api_url": flokit.url, "flokit_api_key": FLOKIT_KEY,
            "poll_interval_seconds": 3600, "port": 0,
            # The benchmark measures cards and clicks, not flood control or pacing.
            "digest_threshold": 1_000_000, "slack_post_interval_seconds": 0,
        }
        bot_log = workdir / "bot.log"
        t0 = time.perf_counter()
        bot = await Server.start("bot", {
            "settings": settings, "plain_aiosqlite": args.plain_aiosqlite, "statements": args.statements,
            "profile": str(Path(args.profile).resolve()) if args.profile else None, "profile_phase": args.profile_phase,
        }, bot_log)
        servers.append(bot)

        async def all_posted() -> bool:
            if len(slack.messages_in(CHANNEL)) < total:
                return False
            async with store.read() as session:
                n = (await session.exec(
                    select(sa.func.count()).select_from(Card).where(Card.state == "posted", sa.not_(Card.dirty))
                )).one()
            return n >= total

        await wait_until(f"{total} cards posted", all_posted, timeout=args.timeout)
        print(f"bot up; {total} ready actions polled and carded in {time.perf_counter() - t0:.2f}s "
              f"({warmup} warm-up + {clicks} measured)")

        # One approve-modal submission per card, from the card's own metadata (its store id).
        cards = []
        for message in slack.messages_in(CHANNEL):
            payload = (message.metadata or {}).get("event_payload") or {}
            cards.append((int(payload["action_id"]), str(payload["external_id"]), message.ts))
        cards.sort()
        bodies = [
            view_submission_body(
                user_id=APPROVER, callback_id=ids.APPROVE_VIEW,
                private_metadata=ModalContext(action_id, CHANNEL, ts).dumps(),
                values={ids.NOTE_BLOCK: {ids.NOTE_INPUT: f"bench approval {i}"}}, view_id=f"VBENCH{i:06d}",
            )
            for i, (action_id, _ext, ts) in enumerate(cards)
        ]
        # One Approve-button click per card: checked (approver, card, state) and acked, then
        # answered with the approve modal (views.open) after the ack.
        click_bodies = [
            block_action_body(user_id=APPROVER, action_id=ids.APPROVE, value=str(action_id), channel=CHANNEL,
                              message_ts=ts, trigger_id=f"{i}.bench")
            for i, (action_id, _ext, ts) in enumerate(cards)
        ]
        warm_bodies, measured_bodies = bodies[:warmup], bodies[warmup:]
        warm_clicks, measured_clicks = click_bodies[:warmup], click_bodies[warmup:]
        measured_ext = [ext for _id, ext, _ts in cards[warmup:]]
        warm_ext = [ext for _id, ext, _ts in cards[:warmup]]
        load_timeout = args.timeout + 60

        # -- the bare Bolt app: same bodies, same concurrency
        bare = await Server.start("bare", {"token": BOT_TOKEN, "slack_api_url": slack.api_url,
                                           "secret": SIGNING_SECRET, "callback_id": ids.APPROVE_VIEW,
                                           "action_id": ids.APPROVE},
                                  workdir / "bare.log")
        servers.append(bare)
        await run_load(bare.url, [("warmup", warm_bodies + warm_clicks)], conc, load_timeout)

        async def bare_median(phase: list[str]) -> tuple[float, dict[str, Any]]:
            # A bare pass is short (under a second): take the median of BARE_PASSES passes.
            passes = []
            for _ in range(BARE_PASSES):
                cpu0 = bare.cpu_seconds()
                bare_pass = await run_load(bare.url, [("measure", phase)], conc, load_timeout)
                passes.append((summarize(bare_pass["measure"])["rps"], bare.cpu_seconds() - cpu0, bare_pass))
            passes.sort(key=lambda p: p[0])
            print("bare Bolt app passes: " + ", ".join(f"{p[0]:.0f}/s" for p in passes) + " (median reported)")
            return passes[len(passes) // 2][1], passes[len(passes) // 2][2]

        bare_click_cpu, bare_clicks = await bare_median(measured_clicks)
        bare_cpu, bare_run = await bare_median(measured_bodies)
        await bare.stop()
        servers.remove(bare)

        # -- the bot: warm-up clicks and decisions first (and let them land), then the measured ones
        await run_load(bot.url, [("warmup", warm_clicks), ("warmup2", warm_bodies)], conc, load_timeout)
        await wait_until("warm-up decisions landed", lambda: all(e in flokit.landed for e in warm_ext), args.timeout)
        await asyncio.sleep(1.5)  # let the card updates of the warm-up settle
        views_before = len(slack.views)
        cpu_clicks0 = bot.cpu_seconds()
        stats0 = await bot.stats()
        click_run = await run_load(bot.url, [("measure", measured_clicks)], conc, load_timeout)
        click_cpu = bot.cpu_seconds() - cpu_clicks0
        await wait_until("every measured click answered with a modal", lambda: len(slack.views) - views_before >= clicks,
                         args.timeout)
        stats1 = await bot.stats()
        cpu0 = bot.cpu_seconds()
        flokit_before, slack_before = len(flokit.requests), len(slack.calls)
        bot_run = await run_load(bot.url, [("measure", measured_bodies)], conc, load_timeout)
        ack_cpu = bot.cpu_seconds() - cpu0
        stats_acked = await bot.stats()
        started = bot_run["measure"]["started"]
        await wait_until("every measured decision landed in FloKit",
                         lambda: all(e in flokit.landed for e in measured_ext), args.timeout, step=WAIT_STEP_S)
        all_landed_s = max(flokit.landed[e] for e in measured_ext) - started
        landed_cpu = bot.cpu_seconds() - cpu0

        async def settled() -> bool:
            async with store.read() as session:
                n = (await session.exec(
                    select(sa.func.count()).select_from(Card).join(Action, Action.id == Card.action_id)
                    .where(Action.status == "approved", sa.not_(Card.dirty))
                )).one()
            return n >= total

        await wait_until("every card re-rendered", settled, args.timeout)  # checked every 50 ms
        settled_s = time.time() - started
        settled_cpu = bot.cpu_seconds() - cpu0
        await asyncio.sleep(2.5)  # the notices, the App Home refresh and the watch that follow, too
        stats2 = await bot.stats()
        if args.statements:
            _print_statements("during the decisions' acks", stats1, stats_acked, clicks)
            _print_statements("after the acks, until the cards and notices showed it", stats_acked, stats2, clicks)
        approvals_by_approver = sum(1 for a in flokit.audit if a["event"] == "approved" and a["by"] == APPROVER_EMAIL)
        upstream_calls = len(flokit.requests) - flokit_before
        slack_calls = collections.Counter(c.method for c in slack.calls[slack_before:])
        await bot.stop()
        servers.remove(bot)
    finally:
        for server in servers:
            await server.stop()
        await store.dispose()
        await slack.stop()
        await flokit.stop()

    b, s = summarize(bot_run["measure"]), summarize(bare_run["measure"])
    bc, sc = summarize(click_run["measure"]), summarize(bare_clicks["measure"])
    click_ratio = bc["rps"] / sc["rps"] if sc["rps"] else float("nan")

    def ack_path(before: dict[str, Any], after: dict[str, Any], kind: str) -> tuple[float, int]:
        n0, t0, _m0 = before["ack"].get(kind, [0, 0, 0])
        n1, t1, most = after["ack"].get(kind, [0, 0, 0])
        return ((t1 - t0) / (n1 - n0) if n1 > n0 else float("nan")), most

    def per(before: dict[str, Any], after: dict[str, Any]) -> tuple[float, float]:
        return (after["reads"] - before["reads"]) / clicks, (after["writes"] - before["writes"]) / clicks

    click_ack, click_most = ack_path(stats0, stats1, "block_actions")
    submit_ack, submit_most = ack_path(stats1, stats2, "view_submission")
    click_r, click_w = per(stats0, stats1)
    decide_r, decide_w = per(stats1, stats2)
    ack_done = {ext: r[0] + r[1] for ext, r in zip(measured_ext, bot_run["measure"]["results"])}
    to_upstream = [flokit.landed[e] - ack_done[e] for e in measured_ext]
    ratio = b["rps"] / s["rps"] if s["rps"] else float("nan")

    driver = " through plain aiosqlite" if args.plain_aiosqlite else ""
    print(f"\nresults ({clicks} measured clicks of each kind, concurrency {conc}, store {args.database}{driver}):")
    print(" Approve-button clicks (check, ack, then the modal):")
    show("bot", bc, click_cpu)
    show("bare", sc, bare_click_cpu)
    print(f"  bot/bare throughput ratio: {click_ratio:.2f}")
    print(" approve-modal submissions (the decision, durable before the ack):")
    show("bot", b, ack_cpu)
    show("bare", s, bare_cpu)
    print(f"  bot/bare throughput ratio: {ratio:.2f}")
    print(f"  store transactions on the ack path: click {click_ack:.2f} (most {click_most}), "
          f"decision {submit_ack:.2f} (most {submit_most})")
    print(f"  store transactions per decision, all of the process's work: click {click_r + click_w:.2f} "
          f"({click_r:.2f} reads, {click_w:.2f} writes) + decision to settled card and notice "
          f"{decide_r + decide_w:.2f} ({decide_r:.2f} reads, {decide_w:.2f} writes) = "
          f"{click_r + click_w + decide_r + decide_w:.2f}")
    print(f"  every decision landed in FloKit {all_landed_s:.2f}s after the first click "
          f"(ack -> FloKit POST per decision: p50 {percentile(to_upstream, 50) * 1000:.0f} ms, "
          f"p99 {percentile(to_upstream, 99) * 1000:.0f} ms); every card showed 'approved' after {settled_s:.2f}s (±0.05)")
    print(f"  bot CPU from first submission until all landed: {landed_cpu:.2f}s "
          f"({landed_cpu * 1000 / clicks:.1f} ms per decision, ack + delivery + card updates); "
          f"with its click: {(landed_cpu + click_cpu) * 1000 / clicks:.1f} ms")
    print(f"  bot CPU from first submission until every card showed it: {settled_cpu:.2f}s "
          f"({settled_cpu * 1000 / clicks:.1f} ms per decision, everything but the thread notices)")
    print(f"  during that: {upstream_calls} FloKit requests; Slack calls {dict(sorted(slack_calls.items()))}")
    print(f"  checks: FloKit recorded {approvals_by_approver}/{total} approvals by {APPROVER_EMAIL}; "
          f"fake Slack saw {len(slack.violations)} Web API misuse(s)")
    log_text = bot_log.read_text(errors="replace")
    problems = [line for line in log_text.splitlines() if " WARNING " in line or " ERROR " in line]
    skipped = [line for line in problems if "maximum number of running instances reached" in line]
    others = [line for line in problems if line not in skipped]
    print(f"  bot log: {len(others)} warning/error line(s)" + (f", first: {others[0][:300]}" if others else "")
          + f"; plus {len(skipped)} APScheduler notice(s) that an interval run was skipped while a kicked run was going")

    p99_met = max(b["p99_ms"], bc["p99_ms"]) <= TARGET_P99_MS
    ratio_met = min(ratio, click_ratio) >= TARGET_RATIO
    ack_txn_met = max(click_most, submit_most) <= TARGET_ACK_TRANSACTIONS
    total = click_r + click_w + decide_r + decide_w
    total_met = total <= TARGET_DECISION_TRANSACTIONS
    print(f"\ntargets (on this machine, this run): ack p99 <= {TARGET_P99_MS:.0f} ms for clicks and decisions: "
          f"{'MET' if p99_met else 'MISSED'} ({bc['p99_ms']:.1f} / {b['p99_ms']:.1f} ms); "
          f"throughput >= {TARGET_RATIO}x bare for both: {'MET' if ratio_met else 'MISSED'} "
          f"({click_ratio:.2f}x / {ratio:.2f}x); ack path <= {TARGET_ACK_TRANSACTIONS} transactions: "
          f"{'MET' if ack_txn_met else 'MISSED'}; whole decision <= {TARGET_DECISION_TRANSACTIONS}: "
          f"{'MET' if total_met else 'MISSED'} ({total:.2f})")
    return (
        f"BENCH ack store={args.database}{'+aiosqlite' if args.plain_aiosqlite else ''} clicks={clicks} conc={conc} "
        f"bot_rps={b['rps']:.1f} bot_p50_ms={b['p50_ms']:.1f} bot_p99_ms={b['p99_ms']:.1f} "
        f"bare_rps={s['rps']:.1f} bare_p50_ms={s['p50_ms']:.1f} bare_p99_ms={s['p99_ms']:.1f} "
        f"ratio={ratio:.2f} click_rps={bc['rps']:.1f} click_p99_ms={bc['p99_ms']:.1f} click_ratio={click_ratio:.2f} "
        f"ack_txn_click={click_ack:.2f} ack_txn_decision={submit_ack:.2f} txn_per_decision={total:.2f} "
        f"cpu_ms_per_decision={(landed_cpu + click_cpu) * 1000 / clicks:.1f} "
        f"all_landed_s={all_landed_s:.2f} bot_errors={b['errors']} bare_errors={s['errors']} "
        f"p99_target={'met' if p99_met else 'missed'} ratio_target={'met' if ratio_met else 'missed'}"
    )


def _print_statements(phase: str, before: dict[str, Any], after: dict[str, Any], decisions: int) -> None:
    was, now = before.get("statements") or {}, after.get("statements") or {}
    counts = sorted(((n - was.get(text, 0), text) for text, n in now.items()), reverse=True)
    print(f"  SQL statements per decision, {phase}: {sum(n for n, _ in counts) / decisions:.1f}")
    for n, text in counts:
        if n:
            print(f"    {n / decisions:5.2f}  {text}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--postgres-url", default=DEFAULT_POSTGRES_URL,
                        help="server for the scratch database (created and dropped per run)")
    parser.add_argument("--clicks", type=int, default=200, help="measured clicks, one card each (default 200)")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--warmup", type=int, default=16, help="unmeasured clicks sent first to each server")
    parser.add_argument("--timeout", type=float, default=300.0, help="upper bound for each wait, seconds")
    parser.add_argument("--plain-aiosqlite", action="store_true",
                        help="SQLite through plain aiosqlite instead of store.inline_sqlite (to compare)")
    parser.add_argument("--profile", metavar="FILE",
                        help="sample the bot with py-spy (pip install py-spy) into FILE, collapsed stacks")
    parser.add_argument("--profile-phase", choices=("all", "click-acks", "decisions", "decision-acks", "after-acks"), default="all",
                        help="with --profile: from the measured clicks on (all), the clicks' burst alone "
                             "(click-acks), from the decisions on, the decisions' burst alone (decision-acks), or from "
                             "the end of the decisions' acks on")
    parser.add_argument("--statements", action="store_true",
                        help="count the bot's SQL statements through SQLAlchemy by text, per decision, during and after "
                             "the acks (those on the driver's connection, store/hot.py, are not among them: the ack "
                             "path, the card's reads, the settle, the card's write-back and the watch's checks)")
    parser.add_argument("--role", choices=("orchestrate", "bot", "bare", "load"), default="orchestrate",
                        help=argparse.SUPPRESS)
    parser.add_argument("--config", default="{}", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.role == "bot":
        asyncio.run(role_bot(json.loads(args.config)))
        return 0
    if args.role == "bare":
        asyncio.run(role_bare(json.loads(args.config)))
        return 0
    if args.role == "load":
        asyncio.run(role_load())
        return 0

    if args.clicks < 1 or args.concurrency < 1 or args.warmup < 0:
        parser.error("--clicks and --concurrency must be >= 1, --warmup >= 0")
    print(_common.describe_machine())
    print("layout: load generator, bot and bare Bolt app each in their own process (no shared event loop);\n"
          "        fake FloKit + fake Slack + orchestration in this process; all on 127.0.0.1")
    with tempfile.TemporaryDirectory(prefix="signoff-ack-") as tmp, \
            _common.scratch_database(args.database, args.postgres_url) as url:
        summary = asyncio.run(orchestrate(args, url, Path(tmp)))
    print(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
