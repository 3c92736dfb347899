"""Poll benchmark: what one poll cycle costs with K actions already known, and with 1000 new.

    python bench/poll.py                                         # K=1000, new=0, SQLite
    python bench/poll.py --known 1000,10000,100000 --new 0,1000 --database postgresql

For each K (ascending; the store and the fake FloKit are topped up from one K to the next):
the fake FloKit holds K ready actions and the store the same K, each with its card posted
(a ``ts``, not dirty), bulk-inserted with SQLAlchemy Core so the first cycle finds them known.
Then, with the bot's scheduler paused so nothing else runs:

- the baseline: listing every page of the statuses the poll lists, with the bot's own FloKit
  client, no store;
- one warm-up cycle (not reported), then ONE timed cycle, ``await bot.jobs["poll"].run()``:
  wall time, process CPU, FloKit requests (the fake's ``requests``), Slack Web API calls
  (the fake's ``calls``), SQL statements (counted on the engine) and the ru_maxrss change;
- peak memory from tracemalloc on a separate, identical cycle (tracing slows Python down
  several times, so it is never on the timed one; for the "new" case the traced cycle
  discovers a second batch of the same size);
- with new actions: the card job run afterwards (posting their cards), timed separately;
  with none: the card job's idle pass (it runs every 5 s), timed too.

Everything runs in this process: the bot's jobs and the fakes share one event loop, so cycle
times include the fake FloKit's serving cost; the baseline includes the same, and the ratio
between them is the bot's own share.

The fake FloKit's list endpoint sorts every stored action on each page request (O(K) per
page, O(K^2) per cycle: minutes at K=100k); by default this uses a subclass that keeps each
status's order cached between changes, with the same answers. ``--plain-fake`` uses the
fake as it is.

The last line is the parseable summary, ``BENCH poll key=value ...``.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import copy
import resource
import sys
import time
import tracemalloc
from datetime import datetime, timezone
from typing import Any

import _common
from _common import BOT_TOKEN, CHANNEL, DEFAULT_POSTGRES_URL, FLOKIT_KEY, SIGNING_SECRET

import sqlalchemy as sa
from aiohttp import web

from app import Signoff
from core.deliver import RetryPolicy
from settings import Settings
from sources.base import IN_FLIGHT
from store import queries
from store.models import Action, Card, CardState, Decision
from tests.fakes.flokit import LIST_FIELDS, LIST_FILTERS, MAX_LIMIT, DEFAULT_LIMIT, FakeFloKit
from tests.fakes.slack_api import FakeSlack

INSERT_CHUNK = 2000
STEP_TIMEOUT_S = 1800.0


class IndexedFloKit(FakeFloKit):
    """The fake FloKit with its list order cached per status filter.

    Same answers as the fake's own ``_list``; the cache is dropped whenever ``add_action`` or
    ``set_status`` changes the actions. (Decisions POSTed to the fake change a status without
    either; this benchmark makes none.)
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._order: dict[str | None, list[dict[str, Any]]] = {}

    def add_action(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        self._order.clear()
        return super().add_action(*args, **kwargs)

    def set_status(self, *args: Any, **kwargs: Any) -> None:
        self._order.clear()
        super().set_status(*args, **kwargs)

    def _matching(self, status: str | None) -> list[dict[str, Any]]:
        if status not in self._order:
            self._order[status] = sorted(
                (a for a in self.actions.values() if status is None or a.get("status") == status),
                key=lambda a: (str(a.get("created_at") or ""), str(a.get("id"))),
            )
        return self._order[status]

    async def _list(self, request: web.Request) -> web.Response:
        query = request.query
        status = query.get("status")
        if status is not None and status not in LIST_FILTERS:
            return web.json_response({"error": "invalid_request", "message": f"Unknown status '{status}'"}, status=400)
        try:
            limit = int(query.get("limit", DEFAULT_LIMIT))
            offset = int(query.get("offset", 0))
        except ValueError:
            return web.json_response({"error": "invalid_request", "message": "limit and offset must be integers"}, status=400)
        if limit < 1 or offset < 0:
            return web.json_response({"error": "invalid_request", "message": "limit must be >= 1 and offset >= 0"}, status=400)
        limit = min(limit, MAX_LIMIT)
        matching = self._matching(status)
        page = [{k: copy.deepcopy(a[k]) for k in LIST_FIELDS if k in a} for a in matching[offset : offset + limit]]
        return web.json_response({"actions": page, "total": len(matching), "limit": limit, "offset": offset})


class Counters:
    """FloKit requests, Slack calls and SQL statements since ``mark()``."""

    def __init__(self, flokit: FakeFloKit, slack: FakeSlack, engine: Any) -> None:
        self.flokit, self.slack = flokit, slack
        self.statements: collections.Counter[str] = collections.Counter()
        sa.event.listen(engine.sync_engine, "before_cursor_execute", self._on_execute)
        self.mark()

    def _on_execute(self, _conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        self.statements[statement.lstrip().split(None, 1)[0].upper() if statement.strip() else "?"] += 1

    def mark(self) -> None:
        self._requests = len(self.flokit.requests)
        self._calls = len(self.slack.calls)
        self._statements = collections.Counter(self.statements)

    def since(self) -> dict[str, Any]:
        requests = self.flokit.requests[self._requests :]
        stmts = self.statements - self._statements
        return {
            "requests": len(requests),
            "list_requests": sum(1 for r in requests if r.method == "GET" and r.path == "/v1/actions"),
            "detail_requests": sum(1 for r in requests if r.method == "GET" and r.path.startswith("/v1/actions/")),
            "slack_calls": len(self.slack.calls) - self._calls,
            "slack_methods": dict(collections.Counter(c.method for c in self.slack.calls[self._calls :])),
            "sql": sum(stmts.values()),
            "sql_kinds": dict(stmts),
        }


def _maxrss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


async def timed(coro_fn: Any, counters: Counters) -> dict[str, Any]:
    counters.mark()
    rss0 = _maxrss_mb()
    c0, t0 = time.process_time(), time.perf_counter()
    await asyncio.wait_for(coro_fn(), STEP_TIMEOUT_S)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {"ms": wall * 1000, "cpu_ms": cpu * 1000, "maxrss_delta_mb": _maxrss_mb() - rss0, **counters.since()}


async def traced_peak_mb(coro_fn: Any) -> float:
    """Peak of memory newly allocated while ``coro_fn()`` runs (tracemalloc), in MB."""
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        await asyncio.wait_for(coro_fn(), STEP_TIMEOUT_S)
        return (tracemalloc.get_traced_memory()[1] - base) / 1e6
    finally:
        tracemalloc.stop()


async def populate_store(bot: Signoff, actions: list[dict[str, Any]]) -> None:
    """The given fake actions into the store as known, carded, settled actions (Core inserts)."""
    now = datetime.now(timezone.utc)
    engine = bot.db.engine
    for start in range(0, len(actions), INSERT_CHUNK):
        chunk = actions[start : start + INSERT_CHUNK]
        rows = [
            {
                "source": "flokit", "external_id": a["id"], "type": a["type"], "title": a["title"],
                "rationale": a["rationale"], "status": a["status"], "upstream_status": a["status"],
                "expected_impact": a["expected_impact"], "data_signals": a["data_signals"],
                "guardrail_checks": a["guardrail_checks"], "rollback_conditions": a["rollback_conditions"],
                "requested_by": None,
                "upstream_created_at": datetime.fromisoformat(a["created_at"].replace("Z", "+00:00")),
                "decided_at": None, "decided_by": None, "last_error": None, "raw": a, "version": 1,
                "first_seen_at": now, "updated_at": now,
            }
            for a in chunk
        ]
        async with engine.begin() as conn:
            await conn.execute(sa.insert(Action.__table__), rows)  # type: ignore[attr-defined]
            ids = dict(
                (await conn.execute(
                    sa.select(Action.__table__.c.external_id, Action.__table__.c.id).where(  # type: ignore[attr-defined]
                        Action.__table__.c.external_id.in_([a["id"] for a in chunk])  # type: ignore[attr-defined]
                    )
                )).all()
            )
            await conn.execute(sa.insert(Card.__table__), [  # type: ignore[attr-defined]
                {
                    "action_id": ids[a["id"]], "channel": CHANNEL, "ts": f"1700000000.{ids[a['id']]:06d}",
                    "state": CardState.POSTED.value, "rendered_version": 1, "wanted_version": 1, "dirty": False,
                    "lease_until": None, "attempts": 0, "next_attempt_at": None, "last_error": None, "posted_at": now,
                }
                for a in chunk
            ])
            await conn.execute(sa.insert(Decision.__table__), [  # type: ignore[attr-defined]
                {"action_id": ids[a["id"]], "event": "discovered", "op": None, "actor": "upstream", "note": None,
                 "from_status": None, "to_status": a["status"], "at": now}
                for a in chunk
            ])
    if not bot.db.is_sqlite:
        async with engine.connect() as conn:
            await conn.execution_options(isolation_level="AUTOCOMMIT")
            await conn.execute(sa.text("ANALYZE"))


async def run(args: argparse.Namespace, database_url: str) -> list[dict[str, Any]]:
    flokit: FakeFloKit = FakeFloKit(api_key=FLOKIT_KEY) if args.plain_fake else IndexedFloKit(api_key=FLOKIT_KEY)
    slack = FakeSlack(bot_token=BOT_TOKEN)
    await flokit.start()
    await slack.start()
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None, slack_bot_token=BOT_TOKEN, slack_signing_secret=SIGNING_SECRET,
        slack_api_url=slack.api_url, slack_channel=CHANNEL, approvers="U0APPROVER",
        database_url=database_url, flokit_api_url=flokit.url, flokit_api_key=FLOKIT_KEY,
        poll_interval_seconds=3600, port=0,
        # The benchmark measures the poll, not flood control or pacing.
        digest_threshold=1_000_000, slack_post_interval_seconds=0,
    )
    bot = Signoff(settings, retry=RetryPolicy())
    results: list[dict[str, Any]] = []
    try:
        # Start the real bot on the empty store (it creates the schema and runs its first,
        # empty poll), then pause its scheduler: from here on only this script runs jobs.
        await bot.start(host="127.0.0.1")
        for _ in range(600):
            if len(flokit.requests) >= len(bot.sources.get("flokit").listed_statuses()):
                break
            await asyncio.sleep(0.05)
        bot.scheduler.pause()
        for _ in range(3):
            for job in bot.jobs.values():
                await job.wait_idle()
            await asyncio.sleep(0.1)
        poll, cards = bot.jobs["poll"], bot.jobs["cards"]
        counters = Counters(flokit, slack, bot.db.engine)
        page_size = 100  # JobContext's default, which the bot uses

        async def list_upstream() -> None:
            for status in bot.sources.get("flokit").listed_statuses():
                offset = 0
                for _ in range(10_000_000 // page_size):  # bounded: far more pages than any run has
                    page = await bot.sources.get("flokit").list_actions(status=status, limit=page_size, offset=offset)
                    offset += len(page.actions)
                    if not page.actions or offset >= page.total:
                        break

        async def known_count() -> int:
            async with bot.db.engine.connect() as conn:
                return int((await conn.execute(sa.select(sa.func.count()).select_from(Action.__table__))).scalar_one())  # type: ignore[attr-defined]

        async def held_query() -> dict[str, Any]:
            """The one query of the cycle whose answer grows with K: every action held open."""
            statuses = set(bot.sources.get("flokit").listed_statuses()) | IN_FLIGHT
            rows: list[Any] = []

            async def query() -> None:
                async with bot.db.read() as session:
                    rows[:] = await queries.actions_in_status(session, source="flokit", statuses=statuses)

            t0 = time.perf_counter()
            await query()
            ms = (time.perf_counter() - t0) * 1000
            return {"ms": ms, "rows": len(rows), "peak_mb": await traced_peak_mb(query)}

        for known in args.known:
            have = await known_count()
            if have > known:
                print(f"  (K={known}: the store already holds {have} actions from the previous size; skipped)")
                continue
            t0 = time.perf_counter()
            added = [flokit.add_action() for _ in range(known - have)]
            t1 = time.perf_counter()
            await populate_store(bot, added)
            t2 = time.perf_counter()
            print(f"\nK={known}: {len(added)} actions added to the fake FloKit in {t1 - t0:.1f}s and to the store "
                  f"(with posted cards and audit rows) in {t2 - t1:.1f}s")

            for new in args.new:
                await poll.run()  # warm-up cycle, before any new action: not reported
                known_now = await known_count()
                case: dict[str, Any] = {"known": known_now, "new": new}
                for _ in range(new):
                    flokit.add_action()
                # The baseline: the upstream's list alone, as the bot's client reads it.
                await list_upstream()  # warms the fake's cached order
                base = await timed(list_upstream, counters)
                base["peak_mb"] = await traced_peak_mb(list_upstream)
                case["list"] = base
                case["cycle"] = await timed(poll.run, counters)
                case["held"] = await held_query()
                case["stored"] = await known_count() - known_now
                # The card job: posting the new cards, or its idle pass when there are none.
                case["cards"] = await timed(cards.run, counters)
                # Memory, on a second cycle of the same shape (a second batch when new > 0).
                for _ in range(new):
                    flokit.add_action()
                case["traced_peak_mb"] = await traced_peak_mb(poll.run)
                if new:
                    await cards.run()  # post the second batch too: the next case starts settled
                results.append(case)
                show_case(case)
        if slack.violations:
            print(f"  fake Slack saw Web API misuse: {slack.violations[:3]}")
    finally:
        await bot.stop()
        await slack.stop()
        await flokit.stop()
    return results


def show_case(case: dict[str, Any]) -> None:
    c, b, k = case["cycle"], case["list"], case["cards"]
    head = f"  K={case['known']} new={case['new']}:"
    print(f"{head} poll cycle {c['ms']:.0f} ms wall, {c['cpu_ms']:.0f} ms CPU "
          f"(listing alone: {b['ms']:.0f} ms, {b['requests']} requests; cycle/list {c['ms'] / b['ms']:.2f}x)")
    print(f"      FloKit requests {c['requests']} ({c['list_requests']} list pages + {c['detail_requests']} details); "
          f"Slack calls {c['slack_calls']}; SQL statements {c['sql']} {c['sql_kinds']}")
    h = case["held"]
    print(f"      of which the held-open query (actions_in_status) alone: {h['ms']:.0f} ms, {h['rows']} rows, "
          f"{h['peak_mb']:.1f} MB peak")
    print(f"      memory: tracemalloc peak {case['traced_peak_mb']:.1f} MB during a cycle "
          f"(listing alone {b['peak_mb']:.1f} MB); ru_maxrss grew {c['maxrss_delta_mb']:.1f} MB in the timed cycle")
    if case["new"]:
        print(f"      stored {case['stored']} new actions; card job afterwards: {k['ms']:.0f} ms, "
              f"Slack {k['slack_methods']}, SQL statements {k['sql']}")
    else:
        print(f"      card job with nothing to do: {k['ms']:.1f} ms, SQL statements {k['sql']}")


def judge(results: list[dict[str, Any]]) -> dict[str, Any]:
    """The targets: a cycle with nothing new costs what listing costs; memory flat as K grows."""
    idle = [r for r in results if r["new"] == 0]
    out: dict[str, Any] = {}
    if idle:
        out["requests_eq_pages"] = all(r["cycle"]["requests"] == r["list"]["requests"] for r in idle)
        out["no_slack_calls"] = all(r["cycle"]["slack_calls"] == 0 for r in idle)
        # Statements per page stay bounded (one lookup per page plus a constant), not per action.
        out["sql_per_page"] = max(r["cycle"]["sql"] / max(1, r["list"]["requests"]) for r in idle)
        out["max_cycle_over_list"] = max(r["cycle"]["ms"] / r["list"]["ms"] for r in idle)
        smallest, largest = idle[0], idle[-1]
        out["peak_small_mb"] = smallest["traced_peak_mb"]
        out["peak_large_mb"] = largest["traced_peak_mb"]
        out["peak_k_small"], out["peak_k_large"] = smallest["known"], largest["known"]
        grown = largest["known"] - smallest["known"]
        out["per_action_bytes"] = (largest["traced_peak_mb"] - smallest["traced_peak_mb"]) * 1e6 / grown if grown else 0.0
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--postgres-url", default=DEFAULT_POSTGRES_URL,
                        help="server for the scratch database (created and dropped per run)")
    parser.add_argument("--known", default="1000", help="comma-separated K values (default 1000)")
    parser.add_argument("--new", default="0", help="comma-separated counts of new actions per K (default 0)")
    parser.add_argument("--plain-fake", action="store_true", help="use the fake FloKit's own O(K)-per-page listing")
    args = parser.parse_args(argv)
    try:
        args.known = sorted({int(x) for x in args.known.split(",") if x.strip()})
        args.new = sorted({int(x) for x in args.new.split(",") if x.strip()})
    except ValueError:
        parser.error("--known and --new take comma-separated integers")
    if not args.known or min(args.known) < 1 or not args.new or min(args.new) < 0:
        parser.error("--known values must be >= 1 and --new values >= 0")

    print(_common.describe_machine())
    print(f"store {args.database}; K = {args.known}; new = {args.new}; "
          f"fake FloKit listing: {'plain (O(K) per page)' if args.plain_fake else 'order cached per status'}")
    started = time.perf_counter()
    with _common.scratch_database(args.database, args.postgres_url) as url:
        results = asyncio.run(run(args, url))
    verdict = judge(results)

    print(f"\ntotal {time.perf_counter() - started:.0f}s")
    fields = [f"store={args.database}", f"known={','.join(map(str, args.known))}", f"new={','.join(map(str, args.new))}"]
    for r in results:
        key = f"k{r['known']}_n{r['new']}"
        c, b = r["cycle"], r["list"]
        fields += [
            f"{key}_cycle_ms={c['ms']:.1f}", f"{key}_list_ms={b['ms']:.1f}", f"{key}_requests={c['requests']}",
            f"{key}_pages={b['requests']}", f"{key}_slack={c['slack_calls']}", f"{key}_sql={c['sql']}",
            f"{key}_peak_mb={r['traced_peak_mb']:.2f}", f"{key}_list_peak_mb={b['peak_mb']:.2f}",
            f"{key}_cards_ms={r['cards']['ms']:.1f}",
        ]
    if verdict:
        cost_met = verdict["requests_eq_pages"] and verdict["no_slack_calls"] and verdict["sql_per_page"] <= 2.5
        # Flat: the largest store's cycle peaks within 1.5x (+1 MB of noise) of the smallest's.
        flat = verdict["peak_large_mb"] <= 1.5 * verdict["peak_small_mb"] + 1.0
        print(f"targets: idle cycle ~ listing cost (requests = pages, no Slack call, no query per known action): "
              f"{'MET' if cost_met else 'MISSED'} (requests = pages: {verdict['requests_eq_pages']}; Slack calls: "
              f"{'none' if verdict['no_slack_calls'] else 'some'}; at most {verdict['sql_per_page']:.2f} SQL statements "
              f"per page; cycle time at most {verdict['max_cycle_over_list']:.2f}x the listing's)")
        if verdict["peak_k_small"] != verdict["peak_k_large"]:
            print(f"         memory flat as the store grows: {'MET' if flat else 'MISSED'} (peak "
                  f"{verdict['peak_small_mb']:.1f} MB at K={verdict['peak_k_small']}, "
                  f"{verdict['peak_large_mb']:.1f} MB at K={verdict['peak_k_large']}; "
                  f"{verdict['per_action_bytes']:.0f} bytes more per known action)")
        fields += [f"cycle_over_list_max={verdict['max_cycle_over_list']:.2f}", f"cost_target={'met' if cost_met else 'missed'}"]
        if verdict["peak_k_small"] != verdict["peak_k_large"]:
            fields += [f"memory_target={'met' if flat else 'missed'}"]
    print("BENCH poll " + " ".join(fields))
    return 0


if __name__ == "__main__":
    sys.exit(main())
