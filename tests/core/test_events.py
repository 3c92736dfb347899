"""Foreground: work that follows from a change gives way to requests a person waits on."""

from __future__ import annotations

import asyncio

from core.events import Foreground


async def _requests(foreground: Foreground, *, each: float, gap: float, until: float) -> float:
    """Requests one after another (``each`` long, ``gap`` apart) until loop time ``until``;
    returns when the last one ended."""
    loop = asyncio.get_running_loop()
    while loop.time() < until:
        with foreground.busy():
            await asyncio.sleep(each)
        ended = loop.time()
        await asyncio.sleep(gap)
    return ended


async def test_with_no_request_in_flight_work_starts_at_once() -> None:
    foreground = Foreground(patience=5.0, calm=5.0)
    await asyncio.wait_for(foreground.idle(), 1.0)  # never busy: no calm to wait for


async def test_work_waits_out_a_burst_and_its_short_gaps_then_a_calm_moment() -> None:
    loop = asyncio.get_running_loop()
    foreground = Foreground(patience=5.0, calm=0.05)
    started = loop.time()
    burst = asyncio.create_task(_requests(foreground, each=0.02, gap=0.005, until=started + 0.3))
    await asyncio.sleep(0.001)
    await foreground.idle()
    resumed = loop.time()
    last_ended = await burst
    # Not at the burst's first gap (5 ms with nothing in flight), but a calm moment after it.
    assert resumed >= last_ended + 0.05
    assert resumed - started >= 0.3


async def test_a_stream_that_never_pauses_does_not_starve_the_work() -> None:
    loop = asyncio.get_running_loop()
    foreground = Foreground(patience=0.2, calm=0.05)
    stop = asyncio.Event()

    async def stream() -> None:
        while not stop.is_set():
            with foreground.busy():
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.001)

    running = asyncio.create_task(stream())
    await asyncio.sleep(0.001)
    started = loop.time()
    await asyncio.wait_for(foreground.idle(), 2.0)
    waited = loop.time() - started
    stop.set()
    await running
    assert waited >= 0.2  # it gave way as long as its patience allows, then went on
