"""The watch's pure step: what one observation means for one watched rule, at a given time."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from core import rules
from core.watch import evaluate, plan
from store.models import Action, Reading, Watch
from sources.metrics import Observation

NOW = datetime(2026, 3, 15, 12, 0, tzinfo=timezone.utc)
MAX_AGE = timedelta(hours=6)


def watch(condition: str, *, baseline: float | None = None) -> Watch:
    rule = rules.parse_condition(condition)
    assert isinstance(rule, rules.Rule)
    return Watch(
        action_id=1, position=0, condition=condition, rule=rule.to_json(), metric=rule.metric,
        started_at=NOW - timedelta(days=1), baseline=baseline, next_check_at=NOW,
    )


def seen(value: float, age: timedelta = timedelta(minutes=5), metric: str = "blended_roas") -> Observation:
    return Observation(metric=metric, value=value, observed_at=NOW - age)


def test_the_first_fresh_value_is_the_baseline_and_is_not_a_trip() -> None:
    result = evaluate(watch("If blended ROAS drops >15%"), seen(3.2), now=NOW, max_age=MAX_AGE)
    assert result.reading is Reading.OK and result.baseline == 3.2 and result.tripped is False


def test_a_drop_past_the_limit_against_the_baseline_trips() -> None:
    w = watch("If blended ROAS drops >15%", baseline=3.2)
    assert evaluate(w, seen(2.5), now=NOW, max_age=MAX_AGE).tripped is True
    assert evaluate(w, seen(2.8), now=NOW, max_age=MAX_AGE).tripped is False


def test_a_stale_value_is_reported_and_never_evaluated() -> None:
    w = watch("If blended ROAS drops >15%", baseline=3.2)
    result = evaluate(w, seen(0.1, age=timedelta(hours=7)), now=NOW, max_age=MAX_AGE)
    assert result.reading is Reading.STALE and result.tripped is None and result.baseline is None
    # The same value, fresh as the clock moves on it, trips.
    assert evaluate(w, seen(0.1), now=NOW, max_age=MAX_AGE).tripped is True


def test_a_level_rule_needs_no_baseline() -> None:
    w = watch("If Meta Search trial conversion rate falls below 0.65")
    result = evaluate(w, seen(0.6, metric=w.metric), now=NOW, max_age=MAX_AGE)
    assert result.tripped is True and result.baseline is None


def test_plan_watches_parsed_conditions_with_their_windows_and_skips_the_rest() -> None:
    action = Action(
        source="flokit", external_id="act_1", status="approved",
        rollback_conditions=[
            "If blended ROAS drops >15% within 7 days of execution",
            "If the brand team objects",
            "If Meta Search trial conversion rate falls below 0.65",
        ],
    )
    planned = plan(action, started_at=NOW)
    assert [(p.position, p.metric, p.ends_at) for p in planned] == [
        (0, "blended_roas", NOW + timedelta(days=7)),
        (2, "meta_search_trial_conversion_rate", None),
    ]
