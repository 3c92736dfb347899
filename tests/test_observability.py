"""Running it as a service: ``GET /metrics`` after scenario runs (parsed with
prometheus_client's own parser), ``/readyz`` turning 503 and back, JSON log lines, and the
Grafana dashboard naming only metrics that ``/metrics`` exposes."""

from __future__ import annotations

import io
import json
import logging
import re
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from bot import ids
from core import logs
from core.metrics import Metrics
from tests.conftest import APPROVER, BOT_TOKEN, CHANNEL, FLOKIT_KEY, SIGNING_SECRET, Harness
from tests.fakes.cards import card_for, click, open_modal, submit
from tests.fakes.clock import FakeClock
from tests.fakes.slack_requests import slash_command_body

DASHBOARD = Path(__file__).resolve().parent.parent / "deploy" / "grafana" / "signoff.json"
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape_text(h: Harness, token: str | None = None) -> tuple[int, str]:
    assert h.bot is not None
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with h.http.get(f"http://127.0.0.1:{h.bot.port}/metrics", headers=headers) as r:
        return r.status, await r.text()


async def scrape(h: Harness) -> Samples:
    status, text = await scrape_text(h)
    assert status == 200, text
    return parse(text)


def parse(text: str) -> Samples:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sample's value; 0 when absent (a counter not yet incremented)."""
    return samples.get((name, frozenset(labels.items())), 0.0)


async def readyz(h: Harness) -> tuple[int, dict[str, Any]]:
    assert h.bot is not None
    async with h.http.get(f"http://127.0.0.1:{h.bot.port}/readyz") as r:
        return r.status, await r.json()


async def approve(h: Harness, external_id: str) -> None:
    card = await card_for(h, external_id)
    modal = await open_modal(h, card, ids.APPROVE, APPROVER)
    status, _ = await submit(h, modal, APPROVER, "ship it")
    assert status == 200


async def test_a_decision_is_counted_once_and_the_outbox_age_rises_while_flokit_is_down_and_falls_after(
    harness: Harness,
) -> None:
    h = harness
    clock = FakeClock()
    await h.start(clock=clock)
    action = h.flokit.add_action()
    await h.poll()
    samples = await scrape(h)
    cycles = value(samples, "signoff_poll_cycles_total", source="flokit", result="ok")
    assert cycles >= 1  # the one at start, and ours
    assert value(samples, "signoff_poll_new_actions_total", source="flokit") == 1  # stored by one of them
    assert value(samples, "signoff_poll_pages_total", source="flokit") >= cycles
    assert value(samples, "signoff_poll_cycle_seconds_count", source="flokit") == cycles
    assert value(samples, "signoff_outbox_depth", source="flokit", stage="send") == 0
    assert value(samples, "signoff_outbox_oldest_age_seconds", source="flokit") == 0

    h.flokit.fail_next("/approve", status=503, times=1000)  # FloKit is down for decisions
    await approve(h, action["id"])
    assert h.bot is not None
    await h.bot.settle_live()
    clock.advance(timedelta(minutes=5))
    first = await scrape(h)
    assert value(first, "signoff_outbox_depth", source="flokit", stage="send") == 1
    age = value(first, "signoff_outbox_oldest_age_seconds", source="flokit")
    assert age >= 300
    assert value(first, "signoff_upstream_calls_total", source="flokit", operation="submit", result="transient") >= 1
    assert value(first, "signoff_decisions_total", source="flokit", kind="approve", outcome="delivered") == 0

    clock.advance(timedelta(minutes=5))
    await h.run_job("outbox")  # still down: one more attempt, still waiting
    second = await scrape(h)
    assert value(second, "signoff_outbox_oldest_age_seconds", source="flokit") >= age + 300  # rising

    h.flokit.clear_faults()  # back up
    clock.advance(timedelta(minutes=5))
    await h.run_job("outbox")
    await h.wait_for(lambda: h.flokit.actions[action["id"]]["status"] == "approved")
    await h.run_job("outbox")  # nothing left: a second sweep sends (and counts) nothing
    after = await scrape(h)
    assert value(after, "signoff_outbox_depth", source="flokit", stage="send") == 0
    assert value(after, "signoff_outbox_oldest_age_seconds", source="flokit") == 0  # fell back
    assert value(after, "signoff_decisions_total", source="flokit", kind="approve", outcome="delivered") == 1
    assert value(after, "signoff_upstream_calls_total", source="flokit", operation="submit", result="ok") == 1
    assert value(after, "signoff_upstream_call_seconds_count", source="flokit", operation="submit") >= 2
    # The clicks, the modal submission: answered and timed, each by its kind.
    assert value(after, "signoff_slack_ack_seconds_count", kind="block_actions") == 1
    assert value(after, "signoff_slack_ack_seconds_count", kind="view_submission") == 1
    assert value(after, "signoff_slack_ack_seconds_bucket", kind="view_submission", le="+Inf") == 1


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_a_slack_429_is_counted_with_its_retry(harness: Harness) -> None:
    h = harness
    await h.start()
    h.slack.fail_next("chat.postMessage", status=429, retry_after=0)
    action = h.flokit.add_action()
    await h.poll()
    await h.run_job("cards")
    await card_for(h, action["id"])
    samples = await scrape(h)
    assert value(samples, "signoff_slack_rate_limited_total", method="chat.postMessage") == 1
    assert value(samples, "signoff_slack_api_retries_total", method="chat.postMessage") == 1
    assert value(samples, "signoff_slack_api_calls_total", method="chat.postMessage", error="ok") >= 1
    assert value(samples, "signoff_slack_api_calls_total", method="auth.test", error="ok") >= 1


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_slash_commands_are_timed_and_slack_errors_counted_by_code(harness: Harness) -> None:
    h = harness
    await h.start()
    status, _text, _ = await h.requester.post(slash_command_body(user_id=APPROVER, command="/signoff", text="help"))
    assert status == 200
    h.slack.fail_next("chat.postMessage", error="channel_not_found")
    h.flokit.add_action()
    await h.poll()
    await h.run_job("cards")
    samples = await scrape(h)
    assert value(samples, "signoff_slack_ack_seconds_count", kind="slash_command") == 1
    assert value(samples, "signoff_slack_api_calls_total", method="chat.postMessage", error="channel_not_found") == 1


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_labels_come_from_closed_sets_and_callbacks_exist_without_samples(harness: Harness) -> None:
    h = harness
    await h.start()
    action = h.flokit.add_action()
    await h.poll()
    await approve(h, action["id"])
    await h.wait_for(lambda: h.flokit.actions[action["id"]]["status"] == "approved")
    status, text = await scrape_text(h)
    assert status == 200
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert families["signoff_callback_deliveries"].samples == []  # defined; no agents' API, so no callbacks here
    assert families["signoff_callback_deliveries"].type == "counter"
    for family in families.values():
        for sample in family.samples:
            for label_value in sample.labels.values():
                assert APPROVER not in label_value and action["id"] not in label_value, sample
    rules = {s.labels["state"] for s in families["signoff_rollback_rules"].samples}
    assert rules == {"pending", "ok", "missing", "stale", "error", "no_provider", "tripped"}


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_metrics_are_behind_the_scrape_token_when_one_is_set(harness: Harness) -> None:
    h = harness
    await h.start(metrics_scrape_token="scrape-me-please", metrics_token="the-providers-own")
    assert (await scrape_text(h))[0] == 401
    assert (await scrape_text(h, "the-providers-own"))[0] == 401
    status, text = await scrape_text(h, "scrape-me-please")
    assert status == 200 and "signoff_decisions" in text


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_intake_answers_are_counted_by_source_and_answer(harness: Harness) -> None:
    from tests.fakes.flowdash import FakeFlowdash
    from tests.sources.test_flowdash import FLOWDASH_KEY, TOKEN, WF, push, start

    h = harness
    flowdash = FakeFlowdash(api_key=FLOWDASH_KEY)
    await flowdash.start()
    try:
        await start(h, flowdash)
        flowdash.add_task(WF, "678")
        body = {"workflow_id": WF, "task_id": "678", "title": "Expense", "fields": {"Amount": 1}}
        assert (await push(h, body))[0] == 202
        assert (await push(h, body))[0] == 200
        assert (await push(h, body, token="wrong"))[0] == 401
        assert h.bot is not None
        async with h.http.post(f"http://127.0.0.1:{h.bot.port}/intake/U123-made-up", json=body) as r:
            assert r.status == 404 and re.fullmatch(r"[0-9a-f]{16}", r.headers["X-Request-Id"])
        headers = {"Authorization": f"Bearer {TOKEN}", "X-Request-Id": "lb-42"}
        async with h.http.post(f"http://127.0.0.1:{h.bot.port}/intake/flowdash", json=body, headers=headers) as r:
            assert r.headers["X-Request-Id"] == "lb-42"  # a caller's id is kept (and logged)
        samples = await scrape(h)
    finally:
        await h.stop()
        await flowdash.stop()
    assert value(samples, "signoff_intake_requests_total", source="flowdash", answer="created") == 1
    assert value(samples, "signoff_intake_requests_total", source="flowdash", answer="known") == 2
    assert value(samples, "signoff_intake_requests_total", source="flowdash", answer="unauthorized") == 1
    assert value(samples, "signoff_intake_requests_total", source="unknown", answer="unknown_source") == 1
    assert value(samples, "signoff_upstream_calls_total", source="flowdash", operation="intake", result="ok") == 3


def test_two_bots_have_registries_of_their_own() -> None:
    a, b = Metrics(), Metrics()
    a.decision("flokit", "approve", "delivered")
    assert b"signoff_decisions_total{" not in b.exposition()
    assert b'signoff_decisions_total{kind="approve",outcome="delivered",source="flokit"} 1.0' in a.exposition()


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_readyz_turns_503_while_a_source_slack_or_the_store_is_away_and_back(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    h = harness
    bot = await h.start()
    bot.ready_cache_seconds = 0  # every probe checks anew
    assert await readyz(h) == (200, {"ready": True})

    h.flokit.fail_next("/v1/actions", status=503)
    status, body = await readyz(h)
    assert status == 503 and body["not_ready"] == ["flokit"] and body["problems"]["flokit"] == "HTTP 503"
    assert await readyz(h) == (200, {"ready": True})

    h.slack.fail_next("auth.test", status=503)
    status, body = await readyz(h)
    assert status == 503 and body["not_ready"] == ["slack"]
    assert await readyz(h) == (200, {"ready": True})

    async def gone() -> None:
        raise OSError("the store went away")

    monkeypatch.setattr(bot.db, "ping", gone)
    status, body = await readyz(h)
    assert status == 503 and body["not_ready"] == ["store"] and "OSError" in body["problems"]["store"]
    monkeypatch.undo()
    assert await readyz(h) == (200, {"ready": True})
    # /healthz keeps its meaning: the process runs and its credentials work.
    async with h.http.get(f"http://127.0.0.1:{bot.port}/healthz") as r:
        assert r.status == 200


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_readyz_names_a_schema_behind_head(harness: Harness) -> None:
    h = harness
    bot = await h.start()
    bot.ready_cache_seconds = 0
    async with bot.db.write() as session:
        from sqlalchemy import text

        connection = await session.connection()
        await connection.execute(text("UPDATE alembic_version SET version_num = '0001'"))
    status, body = await readyz(h)
    assert status == 503 and body["problems"] == {"store": "schema not at head"}


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_json_log_lines_parse_and_carry_the_action_source_user_and_request(harness: Harness) -> None:
    h = harness
    out = io.StringIO()
    handler = logs.handler(fmt="json", secrets=[BOT_TOKEN, SIGNING_SECRET, FLOKIT_KEY], stream=out)
    root = logging.getLogger()
    root.addHandler(handler)
    level = root.level
    root.setLevel(logging.INFO)
    try:
        await h.start()
        action = h.flokit.add_action()
        await h.poll()
        await approve(h, action["id"])
        await h.wait_for(lambda: h.flokit.actions[action["id"]]["status"] == "approved")
        assert h.bot is not None
        await h.bot.settle_live()
        logging.getLogger("signoff").warning("a line naming %s and %s", BOT_TOKEN, SIGNING_SECRET)
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
    text = out.getvalue()
    lines = [json.loads(line) for line in text.splitlines()]  # every line is one JSON object
    assert lines and all({"time", "level", "logger", "message"} <= line.keys() for line in lines)
    recorded = [line for line in lines if line["message"].startswith("approve of action") and "recorded" in line["message"]]
    assert recorded, lines
    assert recorded[0]["slack_user"] == APPROVER and recorded[0]["source"] == "flokit"
    assert isinstance(recorded[0]["action_id"], int) and re.fullmatch(r"[0-9a-f]{16}", recorded[0]["request_id"])
    delivered = [line for line in lines if line["message"].endswith("delivered")]
    assert delivered and delivered[0]["action_id"] == recorded[0]["action_id"] and delivered[0]["source"] == "flokit"
    assert delivered[0]["request_id"] == recorded[0]["request_id"]  # the delivery names the request that made it
    for secret in (BOT_TOKEN, SIGNING_SECRET, FLOKIT_KEY):
        assert secret not in text
    assert "[redacted]" in text


def test_text_lines_stay_readable_and_redacted() -> None:
    out = io.StringIO()
    handler = logs.handler(fmt="text", secrets=["s3cret-value"], stream=out)
    record = logging.LogRecord("signoff", logging.INFO, __file__, 1, "key %s, token xoxb-1-2-abc", ("s3cret-value",), None)
    with logs.bind(request_id="r1", action_id=7):
        handler.handle(record)
    line = out.getvalue().strip()
    assert line.endswith("signoff: key [redacted], token [redacted] [request_id=r1 action_id=7]")


def test_log_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    from pydantic import ValidationError

    from settings import DatabaseSettings

    monkeypatch.setenv("LOG_FORMAT", "JSON")
    monkeypatch.setenv("LOG_LEVEL", "debug")
    found = DatabaseSettings(_env_file=None)  # type: ignore[call-arg]
    assert (found.log_format, found.log_level) == ("json", "DEBUG")
    monkeypatch.setenv("LOG_FORMAT", "xml")
    with pytest.raises(ValidationError, match="log_format"):
        DatabaseSettings(_env_file=None)  # type: ignore[call-arg]


async def test_the_grafana_dashboard_names_only_metrics_that_metrics_exposes() -> None:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    assert exprs
    exposed: set[str] = set()
    for family in text_string_to_metric_families(_all_sampled().decode()):
        exposed.add(family.name)
        exposed.update(s.name for s in family.samples)
    named = {n for e in exprs for n in re.findall(r"\bsignoff_[a-z_]+", e)}
    assert named and named <= exposed, named - exposed
    titles = " ".join(p["title"].lower() for p in dashboard["panels"])
    for topic in ("decisions", "ack latency", "outbox", "upstream", "429"):
        assert topic in titles


def _all_sampled() -> bytes:
    """Every instrument with a sample, so each family's sample names show."""
    m = Metrics()
    m.decision("flokit", "approve", "delivered")
    m.ack("block_actions", 0.01)
    m.upstream_call("flokit", "submit", "ok", 0.1)
    m.slack_call("chat.postMessage", "ok", 0.1)
    m.slack_429("chat.postMessage", retried=True)
    m.poll_cycle("flokit", seconds=0.1, pages=1, new=1, failed=False)
    m.intake("flowdash", "created")
    m.callbacks.labels("delivered").inc()
    m.set_backlog(["flokit"], {}, {})
    m.set_rules({})
    return m.exposition()


def test_channel_is_not_a_label() -> None:
    assert CHANNEL.encode() not in _all_sampled()


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_rollback_rules_are_counted_by_state(harness: Harness) -> None:
    from tests.bot import test_watch as w
    from tests.fakes.metrics import FakeMetrics

    h = harness
    clock = FakeClock()
    async with FakeMetrics(clock=clock) as provider:
        action = h.flokit.add_action()
        provider.set(w.ROAS, 3.2)
        await w.start(h, provider, clock)
        await w.approve(h, action["id"])
        pending = await scrape(h)
        await w.check(h)
        checked = await scrape(h)
        provider.set(w.ROAS, 2.5)  # down 21.9%: the ROAS rule trips
        clock.advance(timedelta(hours=1))
        await w.check(h)
        tripped = await scrape(h)
    assert value(pending, "signoff_rollback_rules", state="pending") == 2
    assert value(checked, "signoff_rollback_rules", state="ok") == 1  # ROAS read; conversion has no value
    assert value(checked, "signoff_rollback_rules", state="missing") == 1
    assert value(tripped, "signoff_rollback_rules", state="tripped") == 1
    assert value(tripped, "signoff_rollback_rules", state="ok") == 0
