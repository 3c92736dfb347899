"""Pure parts of the jobs: the retry policy's backoff and jitter."""

from __future__ import annotations

from bot.jobs import RetryPolicy


def test_backoff_grows_with_jitter_and_caps() -> None:
    policy = RetryPolicy(base_seconds=2, cap_seconds=60, max_attempts=10)
    assert policy.delay(0, rng=lambda: 0.0).total_seconds() == 1.0
    assert policy.delay(0, rng=lambda: 1.0).total_seconds() == 2.0
    assert policy.delay(3, rng=lambda: 0.0).total_seconds() == 8.0
    assert policy.delay(3, rng=lambda: 1.0).total_seconds() == 16.0
    assert policy.delay(20, rng=lambda: 1.0).total_seconds() == 60.0
    assert policy.delay(20, rng=lambda: 0.0).total_seconds() == 30.0
