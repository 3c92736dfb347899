"""The configured Actions APIs, keyed by the ``source`` every stored action carries.

Any subset of sources may be on; each brings its own client (with its own timeouts), the
lease one delivery to it needs, and, where it pushes its actions to Signoff, the token its
intake requests must carry. Nothing here knows any one source.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import timedelta

from sources.base import ActionSource, Capabilities, PollingSource, PushSource, is_polling, is_push

NO_CAPABILITIES = Capabilities(ops=frozenset())


@dataclass(frozen=True)
class Registered:
    source: ActionSource
    # How long a claimed delivery is this worker's: it must outlast one delivery's calls.
    outbox_lease: timedelta = timedelta(seconds=35)
    intake_token: str | None = None  # where the source pushes its actions to POST /intake/<name>
    credential: str = "its API key"  # the setting that holds its key, as start-up errors name it
    display_name: str = ""  # how people name it ("FloKit"); the source's name where empty


class UnknownSource(KeyError):
    """No source of that name is configured."""


class SourceRegistry:
    def __init__(self, entries: Iterable[Registered]) -> None:
        self._entries: dict[str, Registered] = {}
        for entry in entries:
            if entry.source.name in self._entries:
                raise ValueError(f"source {entry.source.name!r} registered twice")
            self._entries[entry.source.name] = entry

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[ActionSource]:
        return (e.source for e in self._entries.values())

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self._entries)

    def entry(self, name: str) -> Registered:
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownSource(name) from None

    def get(self, name: str) -> ActionSource:
        return self.entry(name).source

    def capabilities(self, name: str) -> Capabilities:
        """What the named source can do; nothing, for a source no longer configured (its
        stored actions are shown, but offer no decision)."""
        entry = self._entries.get(name)
        return entry.source.capabilities if entry is not None else NO_CAPABILITIES

    def polling(self) -> list[PollingSource]:
        return [e.source for e in self._entries.values() if is_polling(e.source)]

    def pushing(self) -> list[PushSource]:
        return [e.source for e in self._entries.values() if is_push(e.source)]

    @property
    def outbox_lease(self) -> timedelta:
        """A lease long enough for one delivery to any of them."""
        return max((e.outbox_lease for e in self._entries.values()), default=timedelta(seconds=35))
