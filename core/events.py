"""Change events in process: what the core tells the rest of this process once a change is
committed, so that the work it causes starts at once instead of waiting for a sweep.

- ``decided``: a decision was recorded and its outbox entry leased to this process: deliver it.
- ``changed``: actions changed under a claim leased to this process: re-render their cards
  and post the notices the change owed (``notice_ids``).
- ``carrying`` / ``released``: this process started carrying an action's decision upstream
  (it waited its turn until then), and stopped (landed, failed, or left for a retry later):
  what waits on that delivery (a card held back while it is in flight) may go on.

Handlers run synchronously and must only schedule work (start a task). The database stays the
record: leases make the claimed work this process's for a while, and if it dies first the
sweeps (``deliver_outbox``, the card and notice jobs) take the work over when they end. The
database is never used to pass these events between jobs of one process.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import Callable, Coroutine, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from store.models import Action, Outbox

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Changed:
    """An action changed. ``urgent``: show it soon (it landed); otherwise it may wait a
    moment for what usually follows (a decision in flight, about to land), so that the card
    is rendered once."""

    action_id: int
    notice_ids: tuple[int, ...] = ()
    urgent: bool = True


Decided = Callable[[Outbox, Action], None]
OnChanged = Callable[[Sequence[Changed]], None]
OnDelivery = Callable[[int], None]  # the action's id


class Events:
    def __init__(self) -> None:
        self._decided: list[Decided] = []
        self._changed: list[OnChanged] = []
        self._carrying: list[OnDelivery] = []
        self._released: list[OnDelivery] = []

    def on_decided(self, handler: Decided) -> None:
        self._decided.append(handler)

    def on_changed(self, handler: OnChanged) -> None:
        self._changed.append(handler)

    def on_carrying(self, handler: OnDelivery) -> None:
        self._carrying.append(handler)

    def on_released(self, handler: OnDelivery) -> None:
        self._released.append(handler)

    def carrying(self, action_id: int) -> None:
        for handler in self._carrying:
            handler(action_id)

    def released(self, action_id: int) -> None:
        for handler in self._released:
            handler(action_id)

    def decided(self, entry: Outbox, action: Action) -> None:
        for handler in self._decided:
            handler(entry, action)

    def changed(self, changes: Sequence[Changed]) -> None:
        if changes:
            for handler in self._changed:
                handler(changes)


class Foreground:
    """Requests a person is waiting on (a click, a modal, a command), in flight in this process.

    Work that follows from a change (delivering a decision, re-rendering a card) gives way to
    them: it starts once no such request has been in flight for ``calm`` seconds, or after
    ``patience`` seconds at most, so that a burst of clicks is answered first and a steady
    stream cannot starve the rest. (Within a burst, the moments with no request in flight are
    short: the work waiting does not all start at the first of them, to compete with the
    rest of the burst.)"""

    def __init__(self, patience: float = 3.0, calm: float = 0.01) -> None:
        self._patience = patience
        self._calm = calm
        self._in_flight = 0
        self._quiet = asyncio.Event()
        self._quiet.set()
        self._quiet_since = float("-inf")  # loop time the last request in flight ended

    @contextmanager
    def busy(self) -> Iterator[None]:
        self._in_flight += 1
        self._quiet.clear()
        try:
            yield
        finally:
            self._in_flight -= 1
            if not self._in_flight:
                self._quiet_since = asyncio.get_running_loop().time()
                self._quiet.set()

    async def idle(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._patience
        while True:
            now = loop.time()
            if now >= deadline:
                return
            if self._in_flight:
                try:
                    await asyncio.wait_for(self._quiet.wait(), deadline - now)
                except TimeoutError:
                    return
                continue
            calm_at = self._quiet_since + self._calm
            if calm_at <= now:
                return
            await asyncio.sleep(min(calm_at, deadline) - now)


class LiveTasks:
    """The tasks a part of this process started for live work, each in a context of its own
    (its store transactions are not the request's that caused it), to be let finish or
    cancelled when the process stops."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[None]] = set()

    def spawn(
        self, work: Coroutine[Any, Any, None], *, context: contextvars.Context | None = None
    ) -> asyncio.Task[None]:
        """Start ``work`` in ``context`` (an empty one where not given)."""
        task = asyncio.get_running_loop().create_task(work, context=context or contextvars.Context())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def drain(self, timeout: float) -> None:
        """Let the work under way finish, for up to ``timeout`` seconds (work that starts
        meanwhile included); what is left is the sweeps' once its leases end."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self._tasks and loop.time() < deadline:
            await asyncio.wait(set(self._tasks), timeout=deadline - loop.time())

    def cancel(self) -> None:
        for task in list(self._tasks):
            task.cancel()
