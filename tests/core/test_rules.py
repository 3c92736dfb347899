"""Pure unit tests for bot/rules.py: parsing rollback conditions, describing, storing and
evaluating the rules."""

from __future__ import annotations

import json
import random
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from core import rules
from core.rules import (
    Comparison,
    Evaluation,
    Rule,
    Unparsed,
    evaluate,
    parse_condition,
    parse_conditions,
    slug,
    window_ends_at,
)

BELOW, ABOVE = Comparison.BELOW, Comparison.ABOVE
DROPS_PCT, RISES_PCT = Comparison.DROPS_PCT, Comparison.RISES_PCT
DROPS_BY, RISES_BY = Comparison.DROPS_BY, Comparison.RISES_BY

SEED_ROAS = "If blended ROAS drops >15% within 7 days of execution"
SEED_TRIAL = "If Meta Search trial conversion rate falls below 0.65"

MIN, HOUR, DAY, WEEK = timedelta(minutes=1), timedelta(hours=1), timedelta(days=1), timedelta(weeks=1)

# text -> (metric, comparison, threshold, window)
PARSED: list[tuple[str, tuple[str, Comparison, float, timedelta | None]]] = [
    # the seed phrasings
    (SEED_ROAS, ("blended_roas", DROPS_PCT, 15.0, 7 * DAY)),
    (SEED_TRIAL, ("meta_search_trial_conversion_rate", BELOW, 0.65, None)),
    # lead-ins, "the", case, whitespace and trailing punctuation
    ("When ROAS drops > 15 % within 7 days", ("roas", DROPS_PCT, 15.0, 7 * DAY)),
    ("Rollback if the CPA rises above $50", ("cpa", ABOVE, 50.0, None)),
    ("Roll back if CPA exceeds €1.5 within 48 hours of launch", ("cpa", ABOVE, 1.5, 48 * HOUR)),
    ("rollback when CPA > 3", ("cpa", ABOVE, 3.0, None)),
    ("  if   BLENDED   roas  DROPS   >15%  .  ", ("blended_roas", DROPS_PCT, 15.0, None)),
    ("If the ROAS falls below 0.65 within 7 days of execution.", ("roas", BELOW, 0.65, 7 * DAY)),
    ("Blended ROAS drops >15%", ("blended_roas", DROPS_PCT, 15.0, None)),
    # levels
    ("if ctr drops below .65", ("ctr", BELOW, 0.65, None)),
    ("If ROAS is under 2.5x", ("roas", BELOW, 2.5, None)),
    ("If ROAS is less than 1", ("roas", BELOW, 1.0, None)),
    ("If ROAS < 1.2 within 2 w", ("roas", BELOW, 1.2, 2 * WEEK)),
    ("If ROAS dips under 0.9 within 90 min", ("roas", BELOW, 0.9, 90 * MIN)),
    ("If ROAS drops below 1.5x within 1 week", ("roas", BELOW, 1.5, WEEK)),
    ("If profit falls below -500", ("profit", BELOW, -500.0, None)),
    ("If spend goes above 1,000 in the first 3 days", ("spend", ABOVE, 1000.0, 3 * DAY)),
    ("If CPA is greater than 40", ("cpa", ABOVE, 40.0, None)),
    ("If CPA goes over 45", ("cpa", ABOVE, 45.0, None)),
    ("If CPA is over $45.50", ("cpa", ABOVE, 45.5, None)),
    ("If refund rate > 0.1", ("refund_rate", ABOVE, 0.1, None)),
    ("If CPA climbs past 80", ("cpa", ABOVE, 80.0, None)),
    ("If CPA rises to above 50", ("cpa", ABOVE, 50.0, None)),
    ("If CPA is at least 60", ("cpa", ABOVE, 60.0, None)),  # read as strict
    ("If CPA ≥ 50", ("cpa", ABOVE, 50.0, None)),
    ("If drop-off rate rises above 0.3", ("drop_off_rate", ABOVE, 0.3, None)),
    # percent drops
    ("If ROAS drops by more than 15 percent", ("roas", DROPS_PCT, 15.0, None)),
    ("If ROAS drops by 15%", ("roas", DROPS_PCT, 15.0, None)),
    ("If ROAS decreases more than 15% during the first 2 weeks", ("roas", DROPS_PCT, 15.0, 2 * WEEK)),
    ("If ROAS falls by over 15%", ("roas", DROPS_PCT, 15.0, None)),
    ("If ROAS declines 15% within 30 minutes", ("roas", DROPS_PCT, 15.0, 30 * MIN)),
    ("If ROAS drops >= 15%", ("roas", DROPS_PCT, 15.0, None)),  # read as strict
    ("If ROAS drops 15% or more", ("roas", DROPS_PCT, 15.0, None)),
    ("If ROAS drops >15% vs baseline", ("roas", DROPS_PCT, 15.0, None)),
    ("If ROAS has dropped more than 10% within 1 day", ("roas", DROPS_PCT, 10.0, DAY)),
    ("If ROAS is down more than 10%", ("roas", DROPS_PCT, 10.0, None)),
    ("If D7 retention drops by over 5%", ("d7_retention", DROPS_PCT, 5.0, None)),
    ("If ROAS drops 15 per cent", ("roas", DROPS_PCT, 15.0, None)),
    ("If ROAS drops more than 15% within the first week", ("roas", DROPS_PCT, 15.0, WEEK)),
    ("If ROAS drops more than 15% within a day", ("roas", DROPS_PCT, 15.0, DAY)),
    ("If ROAS drops >15%, within 7 days", ("roas", DROPS_PCT, 15.0, 7 * DAY)),
    ("If, within 7 days of launch, ROAS drops 15%", ("roas", DROPS_PCT, 15.0, 7 * DAY)),
    ("In the first 3 days, if ROAS drops 15%", ("roas", DROPS_PCT, 15.0, 3 * DAY)),
    ("If ROAS drops >15% within 1.5 hours", ("roas", DROPS_PCT, 15.0, 90 * MIN)),
    # percent rises
    ("If CPA rises >20%", ("cpa", RISES_PCT, 20.0, None)),
    ("If CPA increases by more than 20%", ("cpa", RISES_PCT, 20.0, None)),
    ("If CPA grows more than 20% within 24h", ("cpa", RISES_PCT, 20.0, 24 * HOUR)),
    ("If CPA spikes 20%", ("cpa", RISES_PCT, 20.0, None)),
    ("If revenue is up 25% within 2 hrs", ("revenue", RISES_PCT, 25.0, 2 * HOUR)),
    ("If CPA rises 50% within a week", ("cpa", RISES_PCT, 50.0, WEEK)),
    # absolute changes
    ("If CPA drops by more than 0.2", ("cpa", DROPS_BY, 0.2, None)),
    ("If ROAS falls by 0.5", ("roas", DROPS_BY, 0.5, None)),
    ("If CPA rises by more than 3", ("cpa", RISES_BY, 3.0, None)),
    ("If sign-ups increase by 100", ("sign_ups", RISES_BY, 100.0, None)),
    ("If CPA jumps by more than $5", ("cpa", RISES_BY, 5.0, None)),
    ("If CPA rises by more than 0.5 within 48 hours", ("cpa", RISES_BY, 0.5, 48 * HOUR)),
    # Unicode: full-width letters, digits and signs
    ("If ＲＯＡＳ drops ＞１５％", ("roas", DROPS_PCT, 15.0, None)),
]

# text -> a word the reason must contain (so each is refused for the right reason)
REFUSED: list[tuple[str, str]] = [
    ("", "empty"),
    ("   \t ", "empty"),
    ("If", "comparison"),
    ("If ROAS is bad", "comparison"),
    ("None", "comparison"),
    ("If drops >15%", "metric"),
    ("If it drops >15%", "metric"),
    ("If ROAS drops", "no number"),
    ("If ROAS drops significantly", "no number"),
    ("If ROAS falls sharply within 7 days", "no number"),
    ("If ROAS changes by 10%", "direction"),
    ("If ROAS moves 10%", "direction"),
    ("If ROAS worsens by 10%", "direction"),
    ("If ROAS drops >15% or CPA rises >10%", "more than one condition"),
    ("If ROAS drops >15% and CPA rises >10%", "more than one condition"),
    ("If ROAS drops >15%, CPA rises >10%", "more than one condition"),
    ("If ROAS drops >15% within 7 days of launch and CPA > 3", "more than one condition"),
    ("If ROAS or CPA drops >15%", "more than one metric"),
    ("If ROAS does not rise above 3", "negated"),
    ("If ROAS doesn't drop below 1", "negated"),
    ("If ROAS never falls below 1", "negated"),
    ("If CTR falls below 2%", "ambiguous"),
    ("If CTR is above 5 percent", "ambiguous"),
    ("If CPA rises over 3", "ambiguous"),
    ("If ROAS drops 2 percentage points", "ambiguous"),
    ("If ROAS drops by less than 10%", "maximum"),
    ("If ROAS drops >15% within 7 days within 2 weeks", "more than one time window"),
    ("If ROAS drops >15% within 2 months", "time window"),
    ("If ROAS drops >15% within 0 days", "longer than zero"),
    ("If ROAS drops 15% within 99999999999999 weeks", "too long"),
    ("If ROAS below 1 for 3 days", "unexpected"),
    ("If ROAS drops >15% over 7 days", "unexpected"),
    ("If ROAS drops by -5%", "positive"),
    ("If CPA rises 2x", "multiple"),
    ("If ROAS is 15% below baseline", "not a metric name"),
    ("Please roll back if ROAS drops 15%", "not a metric name"),
    ("If ROAS drops >" + "1" * 400 + "%", "too large"),
    ("If ROAS drops " + "9" * 100_000 + "%", "too long"),
]


def expected_rule(text: str) -> Rule:
    metric, comparison, threshold, window = dict(PARSED)[text]
    return Rule(metric, comparison, threshold, window, text)


# ---- parsing ------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "expected"), PARSED, ids=[t for t, _ in PARSED])
def test_parses(text: str, expected: tuple[str, Comparison, float, timedelta | None]) -> None:
    rule = parse_condition(text)
    assert isinstance(rule, Rule), rule
    assert (rule.metric, rule.comparison, rule.threshold, rule.window) == expected
    assert rule.text == text  # unchanged


@pytest.mark.parametrize(("text", "why"), REFUSED, ids=[t[:60] for t, _ in REFUSED])
def test_refuses(text: str, why: str) -> None:
    parsed = parse_condition(text)
    assert isinstance(parsed, Unparsed), parsed
    assert parsed.text == text
    assert parsed.reason.strip()
    assert why in parsed.reason
    assert parsed.reason != rules.INTERNAL_ERROR_REASON


def test_parse_conditions_keeps_order() -> None:
    parsed = parse_conditions([SEED_ROAS, "If ROAS drops significantly", SEED_TRIAL])
    assert [type(p) for p in parsed] == [Rule, Unparsed, Rule]
    assert [p.text for p in parsed] == [SEED_ROAS, "If ROAS drops significantly", SEED_TRIAL]
    assert parse_conditions([]) == []


def test_parse_conditions_refuses_a_single_string() -> None:
    with pytest.raises(TypeError):
        parse_conditions(SEED_ROAS)


def _random_text(rng: random.Random) -> str:
    pick = [lambda: rng.randint(0, 0x7F), lambda: rng.randint(0, 0x10FFFF), lambda: rng.randint(0xD800, 0xDFFF)]
    return "".join(chr(rng.choice(pick)()) for _ in range(rng.randint(0, 80)))


def _word_salad(rng: random.Random) -> str:
    words = (
        "if when the roas cpa drops falls rises exceeds below above over under > < >= ≤ 15% 0.65 $5 €1.5 "
        "2.5x 1,000 by more than at least within in during first 7 days hours of execution and or , not x % -"
    ).split()
    return " ".join(rng.choice(words) for _ in range(rng.randint(0, 14)))


ODD_INPUTS = [
    "None",
    "null",
    "\x00",
    "\ud800",  # a lone surrogate
    "🚀📉 ROAS 📉",
    "If ROAS drops >15%" + "\u200b" * 10,
    "a" * 100_000,
    "If " * 50_000,
    "If ROAS drops " + "9" * 100_000 + "%",
    "%%%%",
    ">>>>>>",
    "If ROAS drops > 1e309%",
    "If ROAS drops >15% within " + "9" * 300 + " weeks",
    "If ROAS drops >15% within 1e9 weeks",
    "If ROAS drops >١٥%",  # Arabic-Indic digits
    "If Käufer-Rate drops >15%",
]


@pytest.mark.parametrize("text", ODD_INPUTS, ids=range(len(ODD_INPUTS)))
def test_never_raises_on_odd_input(text: str) -> None:
    parsed = parse_condition(text)
    assert isinstance(parsed, (Rule, Unparsed))
    assert parsed.text == text
    if isinstance(parsed, Unparsed):
        assert parsed.reason and parsed.reason != rules.INTERNAL_ERROR_REASON


def test_never_raises_on_random_input() -> None:
    rng = random.Random(20240315)
    for _ in range(2000):
        for text in (_random_text(rng), _word_salad(rng)):
            parsed = parse_condition(text)
            assert isinstance(parsed, (Rule, Unparsed))
            assert parsed.text == text
            if isinstance(parsed, Unparsed):
                assert parsed.reason != rules.INTERNAL_ERROR_REASON, text
            else:  # whatever it read, it can describe and store it
                assert parsed.describe()
                assert Rule.from_json(json.loads(json.dumps(parsed.to_json()))) == parsed


def test_non_text_is_unparsed_not_raised() -> None:
    parsed = parse_condition(None)  # type: ignore[arg-type]
    assert isinstance(parsed, Unparsed)
    assert parsed.reason


# ---- slug ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("phrase", "expected"),
    [
        ("blended ROAS", "blended_roas"),
        ("Meta Search trial conversion rate", "meta_search_trial_conversion_rate"),
        ("  CPA (7-day) ", "cpa_7_day"),
        ("__a__b__", "a_b"),
        ("ROAS—Käufer", "roas_käufer"),
        ("!!!", ""),
        ("x" * 70, "x" * 64),
        ("a" * 63 + " b", "a" * 63),  # cut at 64, then trimmed
    ],
)
def test_slug(phrase: str, expected: str) -> None:
    assert slug(phrase) == expected


# ---- describe -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (SEED_ROAS, "blended_roas drops >15% vs value at execution · within 7d"),
        (SEED_TRIAL, "meta_search_trial_conversion_rate < 0.65 · while running"),
        ("If CPA rises by more than 0.5 within 48 hours", "cpa rises >0.5 vs value at execution · within 48h"),
        ("If ROAS declines 15% within 30 minutes", "roas drops >15% vs value at execution · within 30m"),
        ("If ROAS decreases more than 15% during the first 2 weeks", "roas drops >15% vs value at execution · within 2w"),
        ("If CPA spikes 20%", "cpa rises >20% vs value at execution · while running"),
        ("If ROAS falls by 0.5", "roas drops >0.5 vs value at execution · while running"),
        ("If spend goes above 1,000 in the first 3 days", "spend > 1000 · within 3d"),
        ("If ROAS drops >15% within 1.5 hours", "roas drops >15% vs value at execution · within 90m"),
    ],
)
def test_describe(text: str, expected: str) -> None:
    rule = parse_condition(text)
    assert isinstance(rule, Rule)
    assert rule.describe() == expected


@pytest.mark.parametrize(
    ("window", "expected"),
    [
        (timedelta(days=7), "1w"),
        (timedelta(days=14), "2w"),
        (timedelta(days=2), "2d"),
        (timedelta(hours=36), "36h"),
        (timedelta(minutes=90), "90m"),
        (timedelta(seconds=45), "45s"),
    ],
)
def test_describe_without_written_unit_uses_largest_whole_unit(window: timedelta, expected: str) -> None:
    rule = Rule("cpa", ABOVE, 50.0, window, "")
    assert rule.describe() == f"cpa > 50 · within {expected}"


def test_describe_ignores_a_window_in_the_text_that_is_not_the_rules() -> None:
    rule = Rule("cpa", ABOVE, 50.0, timedelta(days=14), "If CPA exceeds 50 within 48 hours")
    assert rule.describe() == "cpa > 50 · within 2w"


# ---- JSON ---------------------------------------------------------------------------------


@pytest.mark.parametrize("text", [t for t, _ in PARSED], ids=[t for t, _ in PARSED])
def test_json_round_trip(text: str) -> None:
    rule = expected_rule(text)
    data = json.loads(json.dumps(rule.to_json(), allow_nan=False))
    assert Rule.from_json(data) == rule


def test_to_json_shape() -> None:
    rule = parse_condition(SEED_ROAS)
    assert isinstance(rule, Rule)
    assert rule.to_json() == {
        "metric": "blended_roas",
        "comparison": "drops_pct",
        "threshold": 15.0,
        "window": 604800,
        "text": SEED_ROAS,
    }
    unwindowed = parse_condition(SEED_TRIAL)
    assert isinstance(unwindowed, Rule)
    assert unwindowed.to_json()["window"] is None


def good_json(**changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "metric": "blended_roas", "comparison": "drops_pct", "threshold": 15.0, "window": 604800, "text": SEED_ROAS,
    }
    data.update(changes)
    return data


def test_good_json_is_accepted() -> None:  # so the rejections below are about the one change
    assert Rule.from_json(good_json()) == expected_rule(SEED_ROAS)


BAD_JSON: list[Any] = [
    None,
    [],
    "blended_roas",
    {k: v for k, v in good_json().items() if k != "threshold"},
    good_json(extra=1),
    good_json(comparison="sideways"),
    good_json(comparison=None),
    good_json(threshold="15"),
    good_json(threshold=True),
    good_json(threshold=float("nan")),
    good_json(threshold=float("inf")),
    good_json(threshold=10**400),
    good_json(threshold=-15.0),  # a negative change
    good_json(window=0),
    good_json(window=-60),
    good_json(window="7d"),
    good_json(window=float("inf")),
    good_json(window=1e300),
    good_json(window=True),
    good_json(metric=""),
    good_json(metric="Blended ROAS"),  # not a slug
    good_json(metric=7),
    good_json(text=None),
]


@pytest.mark.parametrize("data", BAD_JSON, ids=range(len(BAD_JSON)))
def test_from_json_rejects_bad_data(data: Any) -> None:
    with pytest.raises(ValueError):
        Rule.from_json(data)


def test_level_rules_may_have_negative_thresholds() -> None:
    data = good_json(comparison="below", threshold=-500.0, window=None)
    assert Rule.from_json(data).threshold == -500.0


def test_needs_baseline() -> None:
    assert {c for c in Comparison if Rule("m", c, 1.0, None, "").needs_baseline} == {
        DROPS_PCT, RISES_PCT, DROPS_BY, RISES_BY,
    }


# ---- evaluate -----------------------------------------------------------------------------


def rule(comparison: Comparison, threshold: float) -> Rule:
    return Rule("blended_roas", comparison, threshold, None, "")


# (comparison, threshold, value, baseline, tripped, change)
EVALUATIONS = [
    (BELOW, 0.65, 0.64, None, True, None),
    (BELOW, 0.65, 0.65, None, False, None),  # at the limit: strict
    (BELOW, 0.65, 0.66, None, False, None),
    (BELOW, 0.65, 0.64, 100.0, True, None),  # a baseline is ignored
    (ABOVE, 50.0, 50.01, None, True, None),
    (ABOVE, 50.0, 50.0, None, False, None),
    (ABOVE, 50.0, 49.99, None, False, None),
    (DROPS_PCT, 15.0, 2.5, 3.2, True, -21.875),
    (DROPS_PCT, 15.0, 2.71, 3.2, True, -15.3125),
    (DROPS_PCT, 15.0, 2.72, 3.2, False, -15.0),
    (DROPS_PCT, 15.0, 2.73, 3.2, False, -14.6875),
    (DROPS_PCT, 15.0, 6.4, 3.2, False, 100.0),  # a rise never trips a drop
    (DROPS_PCT, 15.0, -120.0, -100.0, True, -20.0),  # a negative baseline: relative to |baseline|
    (RISES_PCT, 20.0, 48.1, 40.0, True, 20.25),
    (RISES_PCT, 20.0, 48.0, 40.0, False, 20.0),
    (RISES_PCT, 20.0, 47.9, 40.0, False, 19.75),
    (RISES_PCT, 20.0, 10.0, 40.0, False, -75.0),
    (DROPS_BY, 0.5, 2.69, 3.2, True, -0.51),
    (DROPS_BY, 0.5, 2.7, 3.2, False, -0.5),
    (DROPS_BY, 0.5, 2.71, 3.2, False, -0.49),
    (RISES_BY, 3.0, 13.01, 10.0, True, 3.01),
    (RISES_BY, 3.0, 13.0, 10.0, False, 3.0),
    (RISES_BY, 3.0, 12.99, 10.0, False, 2.99),
    (RISES_BY, 3.0, 5.0, 10.0, False, -5.0),
]


@pytest.mark.parametrize(("comparison", "threshold", "value", "baseline", "tripped", "change"), EVALUATIONS)
def test_evaluate(
    comparison: Comparison, threshold: float, value: float, baseline: float | None, tripped: bool, change: float | None
) -> None:
    result = evaluate(rule(comparison, threshold), value=value, baseline=baseline)
    assert isinstance(result, Evaluation)
    assert result.tripped is tripped
    assert result.change == (None if change is None else pytest.approx(change))
    assert result.detail.startswith(f"blended_roas is {value:g}")


@pytest.mark.parametrize(
    ("comparison", "threshold", "value", "baseline"),
    [
        (DROPS_PCT, 15.0, 0.935, 1.1),  # (0.935 - 1.1) / 1.1 * 100 == -15.000000000000002
        (DROPS_BY, 0.3, 0.8, 1.1),  # 1.1 - 0.8 == 0.30000000000000004
        (RISES_BY, 0.3, 1.1, 0.8),
    ],
)
def test_floating_point_noise_at_the_limit_does_not_trip(
    comparison: Comparison, threshold: float, value: float, baseline: float
) -> None:
    naive = (value - baseline) / abs(baseline) * 100 if comparison is DROPS_PCT else value - baseline
    assert abs(naive) > threshold  # the naive sum is past the limit...
    assert not evaluate(rule(comparison, threshold), value=value, baseline=baseline).tripped  # ...we are not


def test_evaluate_detail() -> None:
    parsed = parse_condition(SEED_ROAS)
    assert isinstance(parsed, Rule)
    result = evaluate(parsed, value=2.5, baseline=3.2)
    assert result.detail == "blended_roas is 2.5, down 21.9% from 3.2 at execution (limit 15%)"
    trial = parse_condition(SEED_TRIAL)
    assert isinstance(trial, Rule)
    assert evaluate(trial, value=0.6, baseline=None).detail == "meta_search_trial_conversion_rate is 0.6, below 0.65"
    assert evaluate(trial, value=0.7, baseline=None).detail == "meta_search_trial_conversion_rate is 0.7, not below 0.65"
    by = evaluate(rule(RISES_BY, 3.0), value=13.5, baseline=10.0)
    assert by.detail == "blended_roas is 13.5, up 3.5 from 10 at execution (limit 3)"


def test_evaluate_detail_does_not_round_a_trip_onto_the_limit() -> None:
    result = evaluate(rule(DROPS_PCT, 15.0), value=2.7199, baseline=3.2)  # down 15.003%
    assert result.tripped
    assert "down 15.003%" in result.detail


@pytest.mark.parametrize(
    ("comparison", "value", "tripped"),
    [
        (DROPS_PCT, -0.1, True),  # any drop from 0 trips, whatever the threshold
        (DROPS_PCT, 0.0, False),
        (DROPS_PCT, 5.0, False),
        (RISES_PCT, 0.1, True),
        (RISES_PCT, 0.0, False),
        (RISES_PCT, -1.0, False),
    ],
)
def test_percent_rule_from_a_baseline_of_zero(comparison: Comparison, value: float, tripped: bool) -> None:
    result = evaluate(rule(comparison, 50.0), value=value, baseline=0.0)
    assert result.tripped is tripped
    assert result.change is None
    assert "undefined" in result.detail


def test_absolute_rule_from_a_baseline_of_zero_is_ordinary() -> None:
    result = evaluate(rule(DROPS_BY, 0.5), value=-0.6, baseline=0.0)
    assert result.tripped and result.change == pytest.approx(-0.6)


@pytest.mark.parametrize("comparison", [DROPS_PCT, RISES_PCT, DROPS_BY, RISES_BY])
def test_relative_rule_without_a_baseline_raises(comparison: Comparison) -> None:
    with pytest.raises(ValueError, match="baseline"):
        evaluate(rule(comparison, 10.0), value=1.0, baseline=None)


@pytest.mark.parametrize(
    ("comparison", "value", "baseline"),
    [
        (ABOVE, float("nan"), None),
        (BELOW, float("inf"), None),
        (DROPS_PCT, 1.0, float("nan")),
        (RISES_BY, 1.0, float("-inf")),
    ],
)
def test_non_finite_values_raise(comparison: Comparison, value: float, baseline: float | None) -> None:
    with pytest.raises(ValueError):
        evaluate(rule(comparison, 10.0), value=value, baseline=baseline)


# ---- windows ------------------------------------------------------------------------------


def test_window_ends_at() -> None:
    started = datetime(2024, 3, 15, 14, 30, tzinfo=timezone.utc)
    seed = parse_condition(SEED_ROAS)
    assert isinstance(seed, Rule)
    assert window_ends_at(seed, started_at=started) == datetime(2024, 3, 22, 14, 30, tzinfo=timezone.utc)
    hours = parse_condition("If CPA grows more than 20% within 24h")
    assert isinstance(hours, Rule)
    assert window_ends_at(hours, started_at=started) == datetime(2024, 3, 16, 14, 30, tzinfo=timezone.utc)


def test_no_window_never_ends() -> None:
    trial = parse_condition(SEED_TRIAL)
    assert isinstance(trial, Rule)
    assert window_ends_at(trial, started_at=datetime(2024, 3, 15, tzinfo=timezone.utc)) is None


# ---- construction -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fields",
    [
        ("Blended ROAS", DROPS_PCT, 15.0, None),
        ("roas", "drops_pct", 15.0, None),  # a str, not a Comparison
        ("roas", DROPS_PCT, -1.0, None),
        ("roas", DROPS_PCT, float("nan"), None),
        ("roas", DROPS_PCT, 15.0, timedelta(0)),
        ("roas", DROPS_PCT, 15.0, 3600),
    ],
)
def test_rule_validates_its_fields(fields: tuple[Any, ...]) -> None:
    with pytest.raises(ValueError):
        Rule(*fields, text="")
