"""Waiting for a condition: poll it until it holds, within a timeout. One loop for the local
Slack's ``wait_for`` and for the tests' waits (re-exported by ``tests/fakes/waiting.py``)."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from typing import Any


async def eventually(
    predicate: Callable[[], Any],
    *,
    timeout: float,
    what: str | None = None,
    interval: float = 0.02,
    on_timeout: Callable[[], str] | None = None,
) -> Any:
    """Poll ``predicate`` (sync or async) every ``interval`` seconds until it returns something
    truthy; return that.

    An exception raised by the predicate counts as "not yet" (so ``lambda: messages[key]``
    works). After ``timeout`` seconds an AssertionError says ``what`` was awaited (the
    predicate's source when not given), the predicate's last error, and ``on_timeout()``: what
    the caller can tell about the state it waited on.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    last_error: BaseException | None = None
    while True:
        try:
            value = predicate()
            if inspect.isawaitable(value):
                value = await value
        except Exception as e:  # noqa: BLE001 - "not yet", reported on timeout
            last_error = e
            value = None
        else:
            last_error = None
        if value:
            return value
        if loop.time() >= deadline:
            lines = [f"{what or describe(predicate)} still not true after {timeout:g}s"]
            if last_error is not None:
                lines.append(f"  last error from the predicate: {type(last_error).__name__}: {last_error}")
            if on_timeout is not None:
                lines.append(on_timeout())
            raise AssertionError("\n".join(lines))
        await asyncio.sleep(interval)


def describe(predicate: Callable[..., Any]) -> str:
    """A predicate's source when short (a lambda's, typically), else its name."""
    try:
        source = inspect.getsource(predicate).strip()
    except (OSError, TypeError):
        source = ""
    if source and len(source) < 300:
        return source
    return getattr(predicate, "__qualname__", repr(predicate))
