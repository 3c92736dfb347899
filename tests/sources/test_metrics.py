"""HttpMetrics against the fake metrics endpoint over real loopback HTTP."""

from __future__ import annotations

import dataclasses
import json
import socket
import time
from collections.abc import AsyncIterator
from datetime import datetime, timedelta, timezone
from urllib.parse import parse_qs

import aiohttp
import pytest

from sources.metrics import (
    HttpMetrics,
    MetricNotFound,
    MetricsBadResponse,
    MetricsError,
    MetricsProvider,
    MetricsUnavailable,
    Observation,
)
from tests.fakes.metrics import FakeMetrics

TOKEN = "mt-secret-Qx93-do-not-leak"
NOW = datetime(2024, 3, 20, 12, 0, tzinfo=timezone.utc)
ROAS = "blended_roas_30d"
ACTION = "act_01hx4j7k9m2n3p5q6r8s"


def fixed_clock() -> datetime:
    return NOW


@pytest.fixture
async def fake() -> AsyncIterator[FakeMetrics]:
    async with FakeMetrics(clock=fixed_clock) as server:
        yield server


@pytest.fixture
def metrics(fake: FakeMetrics, session: aiohttp.ClientSession) -> HttpMetrics:
    return HttpMetrics(session, url=fake.url, timeout=2.0, clock=fixed_clock)


def assert_no_token(exc: BaseException) -> None:
    for text in (str(exc), repr(exc), str(exc.__cause__), repr(exc.__cause__)):
        assert TOKEN not in text


# ---- the interface ---------------------------------------------------------------------------


def test_http_metrics_is_a_metrics_provider(session: aiohttp.ClientSession) -> None:
    provider: MetricsProvider = HttpMetrics(session, url="http://127.0.0.1:9/v1/metrics")
    assert isinstance(provider, MetricsProvider)
    assert provider.name == "http"
    assert not isinstance(object(), MetricsProvider)


def test_errors_are_one_family() -> None:
    for error in (MetricNotFound, MetricsUnavailable, MetricsBadResponse):
        assert issubclass(error, MetricsError)
    assert not issubclass(MetricsBadResponse, MetricsUnavailable)
    assert not issubclass(MetricNotFound, MetricsBadResponse)


def test_observation_is_frozen() -> None:
    observation = Observation(metric=ROAS, value=1.0, observed_at=NOW)
    with pytest.raises(dataclasses.FrozenInstanceError):
        observation.value = 2.0  # type: ignore[misc]


@pytest.mark.parametrize("url", ["", "127.0.0.1:8080/metrics", "ftp://host/metrics", "/v1/metrics"])
def test_url_must_be_absolute_http(session: aiohttp.ClientSession, url: str) -> None:
    with pytest.raises(ValueError):
        HttpMetrics(session, url=url)


def test_timeout_must_be_positive(session: aiohttp.ClientSession) -> None:
    with pytest.raises(ValueError):
        HttpMetrics(session, url="http://127.0.0.1:9/v1/metrics", timeout=0)


def test_repr_hides_token_user_info_and_query(session: aiohttp.ClientSession) -> None:
    client = HttpMetrics(session, url=f"https://bot:pw-{TOKEN}@m.example/v1/metrics?key={TOKEN}", token=TOKEN)
    shown = repr(client)
    assert TOKEN not in shown and "pw-" not in shown
    assert "m.example/v1/metrics" in shown


# ---- happy paths -----------------------------------------------------------------------------


async def test_current_value(fake: FakeMetrics, metrics: HttpMetrics) -> None:
    fake.set(ROAS, 2.31)
    observation = await metrics.current(metric=ROAS, action_id=ACTION)
    assert observation == Observation(metric=ROAS, value=2.31, observed_at=NOW)
    assert observation.observed_at.tzinfo is timezone.utc
    assert fake.requests[0][:2] == (ROAS, ACTION)


async def test_int_value_becomes_float(fake: FakeMetrics, metrics: HttpMetrics) -> None:
    fake.set(ROAS, 3)
    observation = await metrics.current(metric=ROAS, action_id=ACTION)
    assert observation.value == 3.0 and type(observation.value) is float


@pytest.mark.parametrize(
    ("sent", "expected"),
    [
        ("2024-03-15T06:00:00Z", datetime(2024, 3, 15, 6, 0, tzinfo=timezone.utc)),
        ("2024-03-15T08:00:00+02:00", datetime(2024, 3, 15, 6, 0, tzinfo=timezone.utc)),
        ("2024-03-15T01:30:00-04:30", datetime(2024, 3, 15, 6, 0, tzinfo=timezone.utc)),
        ("2024-03-15T06:00:00.250Z", datetime(2024, 3, 15, 6, 0, 0, 250000, tzinfo=timezone.utc)),
        ("2024-03-15T06:00:00", datetime(2024, 3, 15, 6, 0, tzinfo=timezone.utc)),  # naive is UTC
        ("2024-03-15T06:00:00+00:00", datetime(2024, 3, 15, 6, 0, tzinfo=timezone.utc)),
    ],
)
async def test_observed_at_forms(fake: FakeMetrics, metrics: HttpMetrics, sent: str, expected: datetime) -> None:
    fake.set(ROAS, 1.5, observed_at=sent)
    observed_at = (await metrics.current(metric=ROAS, action_id=ACTION)).observed_at
    assert observed_at == expected
    assert observed_at.utcoffset() == timedelta(0)
    assert observed_at.tzinfo is timezone.utc


async def test_per_action_value_beats_the_global_one(fake: FakeMetrics, metrics: HttpMetrics) -> None:
    fake.set(ROAS, 1.0)
    fake.set(ROAS, 2.0, action_id=ACTION)
    assert (await metrics.current(metric=ROAS, action_id=ACTION)).value == 2.0
    assert (await metrics.current(metric=ROAS, action_id="act_other")).value == 1.0
    fake.remove(ROAS, action_id=ACTION)
    assert (await metrics.current(metric=ROAS, action_id=ACTION)).value == 1.0


async def test_extra_fields_are_ignored(fake: FakeMetrics, metrics: HttpMetrics) -> None:
    fake.garbage_next(
        json.dumps({"metric": ROAS, "value": -0.5, "observed_at": "2024-03-15T06:00:00Z", "unit": "x", "v": [1]})
    )
    assert (await metrics.current(metric=ROAS, action_id=ACTION)).value == -0.5


async def test_slightly_future_timestamp_is_clock_skew(fake: FakeMetrics, metrics: HttpMetrics) -> None:
    fake.set(ROAS, 1.0, observed_at=NOW + timedelta(minutes=4, seconds=59))
    assert (await metrics.current(metric=ROAS, action_id=ACTION)).observed_at > NOW


async def test_no_authorization_header_without_token(fake: FakeMetrics, metrics: HttpMetrics) -> None:
    fake.set(ROAS, 1.0)
    await metrics.current(metric=ROAS, action_id=ACTION)
    assert "Authorization" not in fake.requests[0].headers


# ---- the URL ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("metric", "action_id"),
    [
        (ROAS, "act/1?x=2&y"),
        ("roas 30d+ü", "a=b;c#d%20e"),
        ("m&metric=evil", "act&action_id=evil"),
    ],
)
async def test_odd_slugs_and_ids_are_encoded(
    fake: FakeMetrics, metrics: HttpMetrics, metric: str, action_id: str
) -> None:
    fake.set(metric, 7.0, action_id=action_id)
    observation = await metrics.current(metric=metric, action_id=action_id)
    assert observation.value == 7.0
    assert fake.requests[0][:2] == (metric, action_id)
    assert parse_qs(fake.raw_queries[0], keep_blank_values=True) == {"metric": [metric], "action_id": [action_id]}


async def test_url_with_a_query_of_its_own(fake: FakeMetrics, session: aiohttp.ClientSession) -> None:
    client = HttpMetrics(session, url=f"{fake.url}?tenant=acme&scope=a%26b&metric=stale", clock=fixed_clock)
    fake.set(ROAS, 4.0)
    assert (await client.current(metric=ROAS, action_id=ACTION)).value == 4.0
    sent = parse_qs(fake.raw_queries[0])
    assert sent == {"tenant": ["acme"], "scope": ["a&b"], "metric": [ROAS], "action_id": [ACTION]}


# ---- status codes ----------------------------------------------------------------------------


async def test_unknown_metric_is_not_found(fake: FakeMetrics, metrics: HttpMetrics) -> None:
    fake.set(ROAS, 1.0, action_id="act_other")
    for metric in ("no_such_metric", ROAS):
        with pytest.raises(MetricNotFound) as caught:
            await metrics.current(metric=metric, action_id=ACTION)
        assert caught.value.status == 404
        assert metric in str(caught.value)


@pytest.mark.parametrize("status", [500, 502, 503, 504, 429, 408])
async def test_server_trouble_is_unavailable(fake: FakeMetrics, metrics: HttpMetrics, status: int) -> None:
    fake.set(ROAS, 1.0)
    fake.fail_next(status)
    with pytest.raises(MetricsUnavailable) as caught:
        await metrics.current(metric=ROAS, action_id=ACTION)
    assert caught.value.status == status
    assert str(status) in str(caught.value)
    assert len(fake.requests) == 1  # no retry inside the client
    # The fault is used up: the next call goes through.
    assert (await metrics.current(metric=ROAS, action_id=ACTION)).value == 1.0


@pytest.mark.parametrize("status", [400, 401, 403, 405, 410, 422, 301, 302, 307])
async def test_other_statuses_are_bad_responses(fake: FakeMetrics, metrics: HttpMetrics, status: int) -> None:
    fake.set(ROAS, 1.0)
    fake.fail_next(status)  # a 3xx fault redirects to the same URL, which would now answer 200
    with pytest.raises(MetricsBadResponse) as caught:
        await metrics.current(metric=ROAS, action_id=ACTION)
    assert caught.value.status == status
    assert f"HTTP {status}" in str(caught.value)
    assert len(fake.requests) == 1


async def test_missing_token_is_a_bad_response_naming_401(session: aiohttp.ClientSession) -> None:
    async with FakeMetrics(token=TOKEN) as fake:
        fake.set(ROAS, 1.0)
        client = HttpMetrics(session, url=fake.url)
        with pytest.raises(MetricsBadResponse) as caught:
            await client.current(metric=ROAS, action_id=ACTION)
        assert "401" in str(caught.value)
        wrong = HttpMetrics(session, url=fake.url, token="not-the-token")
        with pytest.raises(MetricsBadResponse) as caught:
            await wrong.current(metric=ROAS, action_id=ACTION)
        assert caught.value.status == 401


async def test_token_is_sent_as_bearer_and_never_shown(session: aiohttp.ClientSession) -> None:
    async with FakeMetrics(token=TOKEN, clock=fixed_clock) as fake:
        client = HttpMetrics(session, url=fake.url, token=TOKEN, timeout=0.5, clock=fixed_clock)
        fake.set(ROAS, 1.0)
        assert (await client.current(metric=ROAS, action_id=ACTION)).value == 1.0
        assert fake.requests[-1].headers["Authorization"] == f"Bearer {TOKEN}"
        assert TOKEN not in repr(client) and TOKEN not in str(client)

        errors: list[MetricsError] = []

        async def failing() -> None:
            with pytest.raises(MetricsError) as caught:
                await client.current(metric=ROAS, action_id=ACTION)
            errors.append(caught.value)

        fake.fail_next(503)
        await failing()
        fake.garbage_next(json.dumps({"metric": f"echo {TOKEN}", "value": 1, "observed_at": "x"}))
        await failing()
        fake.garbage_next(json.dumps({"metric": ROAS, "value": 1, "observed_at": f"Bearer {TOKEN}"}))
        await failing()
        fake.set_down(True)
        await failing()
        fake.set_down(False)
        fake.set_delay(5)
        await failing()
        assert [type(e) for e in errors] == [
            MetricsUnavailable,
            MetricsBadResponse,
            MetricsBadResponse,
            MetricsUnavailable,
            MetricsUnavailable,
        ]
        assert "[redacted]" in str(errors[1]) and "[redacted]" in str(errors[2])
        for error in errors:
            assert_no_token(error)
            assert len(str(error)) < 200


# ---- transport -------------------------------------------------------------------------------


async def test_connection_refused_is_unavailable(session: aiohttp.ClientSession) -> None:
    with socket.socket() as bound_not_listening:
        bound_not_listening.bind(("127.0.0.1", 0))
        port = bound_not_listening.getsockname()[1]
        client = HttpMetrics(session, url=f"http://127.0.0.1:{port}/v1/metrics", token=TOKEN)
        with pytest.raises(MetricsUnavailable) as caught:
            await client.current(metric=ROAS, action_id=ACTION)
    assert isinstance(caught.value.__cause__, aiohttp.ClientError)
    assert caught.value.status is None
    assert_no_token(caught.value)


async def test_reset_connection_is_unavailable(fake: FakeMetrics, metrics: HttpMetrics) -> None:
    fake.set(ROAS, 1.0)
    fake.set_down(True)
    with pytest.raises(MetricsUnavailable) as caught:
        await metrics.current(metric=ROAS, action_id=ACTION)
    assert isinstance(caught.value.__cause__, aiohttp.ClientError)
    fake.set_down(False)
    assert (await metrics.current(metric=ROAS, action_id=ACTION)).value == 1.0


async def test_slow_endpoint_times_out_as_unavailable(fake: FakeMetrics, session: aiohttp.ClientSession) -> None:
    client = HttpMetrics(session, url=fake.url, timeout=0.2)
    fake.set(ROAS, 1.0)
    fake.set_delay(30)
    started = time.monotonic()
    with pytest.raises(MetricsUnavailable) as caught:
        await client.current(metric=ROAS, action_id=ACTION)
    assert time.monotonic() - started < 5  # the client's timeout, not the endpoint's delay
    assert "timed out" in str(caught.value)
    assert isinstance(caught.value.__cause__, TimeoutError)
    assert len(fake.requests) == 1


# ---- answers that break the contract ---------------------------------------------------------

_AT = "2024-03-15T06:00:00Z"


def _answer(**fields: object) -> str:
    body: dict[str, object] = {"metric": ROAS, "value": 1.5, "observed_at": _AT}
    for key, value in fields.items():
        if value is _DROP:
            body.pop(key)
        else:
            body[key] = value
    return json.dumps(body)


_DROP = object()


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        pytest.param("<html>fine, really</html>", "text/html", id="html"),
        pytest.param("not json", "application/json", id="non-json"),
        pytest.param("", "application/json", id="empty"),
        pytest.param(b"\xff\xfe{", "application/json", id="bad-bytes"),
        pytest.param("[]", "application/json", id="array"),
        pytest.param(json.dumps([json.loads(_answer())]), "application/json", id="array-of-answer"),
        pytest.param("null", "application/json", id="json-null"),
        pytest.param("{}", "application/json", id="empty-object"),
        pytest.param(_answer(metric="other_metric"), "application/json", id="wrong-metric"),
        pytest.param(_answer(metric=ROAS.upper()), "application/json", id="metric-case"),
        pytest.param(_answer(metric=_DROP), "application/json", id="no-metric"),
        pytest.param(_answer(metric=None), "application/json", id="metric-null"),
        pytest.param(_answer(value="abc"), "application/json", id="value-abc"),
        pytest.param(_answer(value="2.5"), "application/json", id="value-numeric-string"),
        pytest.param(_answer(value=True), "application/json", id="value-true"),
        pytest.param(_answer(value=False), "application/json", id="value-false"),
        pytest.param(_answer(value=None), "application/json", id="value-null"),
        pytest.param(_answer(value=_DROP), "application/json", id="no-value"),
        pytest.param(_answer(value=[1]), "application/json", id="value-list"),
        pytest.param(_answer(value={"v": 1}), "application/json", id="value-object"),
        pytest.param(_answer().replace("1.5", "NaN"), "application/json", id="value-NaN"),
        pytest.param(_answer().replace("1.5", "Infinity"), "application/json", id="value-Infinity"),
        pytest.param(_answer().replace("1.5", "-Infinity"), "application/json", id="value-minus-Infinity"),
        pytest.param(_answer().replace("1.5", "1e400"), "application/json", id="value-overflows"),
        pytest.param(_answer().replace("1.5", "9" * 400), "application/json", id="value-huge-int"),
        pytest.param(_answer(observed_at=_DROP), "application/json", id="no-observed_at"),
        pytest.param(_answer(observed_at=None), "application/json", id="observed_at-null"),
        pytest.param(_answer(observed_at=1710482400), "application/json", id="observed_at-epoch"),
        pytest.param(_answer(observed_at="yesterday"), "application/json", id="bad-date"),
        pytest.param(_answer(observed_at="2024-13-45T06:00:00Z"), "application/json", id="impossible-date"),
        pytest.param(_answer(observed_at=""), "application/json", id="empty-date"),
        pytest.param(
            _answer(observed_at="2024-03-20T12:05:01Z"), "application/json", id="future-date-5min1s"
        ),
        pytest.param(_answer(observed_at="2031-01-01T00:00:00Z"), "application/json", id="future-date"),
        pytest.param(
            _answer(observed_at="2024-03-20T12:30:00"), "application/json", id="future-naive-date"
        ),
        pytest.param(_answer(padding="x" * (64 * 1024)), "application/json", id="too-big"),
        pytest.param('{"a":' + "[" * 30000 + "]" * 30000 + "}", "application/json", id="deeply-nested"),
    ],
)
async def test_2xx_with_wrong_content_is_a_bad_response(
    fake: FakeMetrics, metrics: HttpMetrics, body: str | bytes, content_type: str
) -> None:
    fake.set(ROAS, 1.0)
    fake.garbage_next(body, content_type=content_type)
    with pytest.raises(MetricsBadResponse) as caught:
        await metrics.current(metric=ROAS, action_id=ACTION)
    assert type(caught.value) is MetricsBadResponse
    assert caught.value.status == 200
    assert len(str(caught.value)) < 200
    # The garbage is used up: the next call reads the real value.
    assert (await metrics.current(metric=ROAS, action_id=ACTION)).value == 1.0


@pytest.mark.parametrize("chunked", [False, True])
async def test_size_limit_with_and_without_content_length(
    fake: FakeMetrics, metrics: HttpMetrics, chunked: bool
) -> None:
    body = _answer(padding="")
    body = _answer(padding="x" * (64 * 1024 - len(body)))
    assert len(body.encode()) == 64 * 1024
    fake.garbage_next(body, chunked=chunked)
    assert (await metrics.current(metric=ROAS, action_id=ACTION)).value == 1.5
    fake.garbage_next(body + " ", chunked=chunked)
    with pytest.raises(MetricsBadResponse, match="larger than"):
        await metrics.current(metric=ROAS, action_id=ACTION)


async def test_naive_timestamp_is_utc_whatever_the_local_zone(
    fake: FakeMetrics, metrics: HttpMetrics, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    try:
        fake.set(ROAS, 1.0, observed_at="2024-03-15T06:00:00")
        observed_at = (await metrics.current(metric=ROAS, action_id=ACTION)).observed_at
    finally:
        monkeypatch.undo()
        time.tzset()
    assert observed_at == datetime(2024, 3, 15, 6, 0, tzinfo=timezone.utc)


async def test_future_check_uses_real_time_by_default(fake: FakeMetrics, session: aiohttp.ClientSession) -> None:
    client = HttpMetrics(session, url=fake.url)
    fake.set(ROAS, 1.0, observed_at=datetime.now(timezone.utc) + timedelta(hours=1))
    with pytest.raises(MetricsBadResponse, match="future"):
        await client.current(metric=ROAS, action_id=ACTION)
    fake.set(ROAS, 1.0, observed_at=None)
    fake.clock = lambda: datetime.now(timezone.utc)
    assert (await client.current(metric=ROAS, action_id=ACTION)).value == 1.0


# ---- the fake keeps to the contract ----------------------------------------------------------


async def test_fake_follows_the_contract(fake: FakeMetrics, session: aiohttp.ClientSession) -> None:
    fake.set(ROAS, 2.5)

    async def get(query: str) -> tuple[int, object]:
        async with session.get(f"{fake.url}{query}") as resp:
            return resp.status, await resp.json()

    status, body = await get(f"?metric={ROAS}&action_id={ACTION}")
    assert status == 200 and body == {"metric": ROAS, "value": 2.5, "observed_at": "2024-03-20T12:00:00Z"}
    assert await get(f"?metric=nope&action_id={ACTION}") == (404, {"error": "not_found"})
    assert (await get(f"?metric={ROAS}"))[0] == 400
    assert (await get(f"?action_id={ACTION}"))[0] == 400
    assert fake.requests[2] == (ROAS, None, fake.requests[2].headers)
    async with FakeMetrics(token=TOKEN) as guarded:
        guarded.set(ROAS, 1.0)
        async with session.get(f"{guarded.url}?metric={ROAS}&action_id=a") as resp:
            assert resp.status == 401
        headers = {"Authorization": f"Bearer {TOKEN}"}
        async with session.get(f"{guarded.url}?metric={ROAS}&action_id=a", headers=headers) as resp:
            assert resp.status == 200
