"""Pure parts of the jobs: the retry policy's backoff and jitter, and the per-channel pacer."""

from __future__ import annotations

from core.deliver import RetryPolicy


def test_backoff_grows_with_jitter_and_caps() -> None:
    policy = RetryPolicy(base_seconds=2, cap_seconds=60, max_attempts=10)
    assert policy.delay(0, rng=lambda: 0.0).total_seconds() == 1.0
    assert policy.delay(0, rng=lambda: 1.0).total_seconds() == 2.0
    assert policy.delay(3, rng=lambda: 0.0).total_seconds() == 8.0
    assert policy.delay(3, rng=lambda: 1.0).total_seconds() == 16.0
    assert policy.delay(20, rng=lambda: 1.0).total_seconds() == 60.0
    assert policy.delay(20, rng=lambda: 0.0).total_seconds() == 30.0


async def test_the_pacer_spaces_posts_to_one_channel_but_not_across_channels() -> None:
    import asyncio

    from bot.jobs import Pacer

    pacer = Pacer(0.2)
    loop = asyncio.get_running_loop()
    started = loop.time()
    await asyncio.gather(*(pacer.wait("C1") for _ in range(3)))
    # The first goes at once, the next two wait their turn: at least two intervals in all.
    assert loop.time() - started >= 0.4 - 0.01
    other = loop.time()
    await pacer.wait("C2")
    waited_elsewhere = loop.time() - other
    third = loop.time()
    await pacer.wait("C1")
    assert loop.time() - third >= 0.1, "C1 still waits its interval"
    assert waited_elsewhere < loop.time() - third
    await Pacer(0).wait("C1")  # off: never waits
