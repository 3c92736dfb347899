"""The ``/signoff`` slash command's words, parsed into a typed ``Command``.

Pure: no I/O, no store. ``parse(text)`` never raises; anything it cannot read becomes an
``Invalid`` that says what was wrong, so the listener always has something helpful to answer.

Action references (``<id>``) are the store's number as ``/signoff list`` shows it (``12`` or
``#12``), the upstream id (``act_01hx…``), or the upstream id with its source as a prefix
(``flokit:act_01hx…`` or ``flokit/act_01hx…``; the prefix in any case).
"""

from __future__ import annotations

import difflib
import enum
import re
from dataclasses import dataclass

from sources.base import Op, Status

COMMAND = "/signoff"
PAGE_SIZE = 10
MAX_NOTE = 1000  # as much as the approve and reject modals let people type
MAX_REF = 255  # the store's limit for an upstream id
MAX_PAGE = 100_000
WINDOWS = {"7d": 7, "30d": 30}
DEFAULT_WINDOW = 7

SUBCOMMANDS = ("help", "list", "show", "approve", "reject", "rollback", "retry", "history", "stats", "track")
MAX_TRACK_WORDS = 4  # ids after the source name (Flowdash: a workflow id and a task id)
_ALIASES = {"?": "help", "-h": "help", "--help": "help", "roll-back": "rollback", "ls": "list"}

_NUMBER = re.compile(r"#?([0-9]{1,18})")  # ASCII digits only, and within a 64-bit id
_PREFIXED = re.compile(r"([A-Za-z][A-Za-z0-9_-]{0,31})[:/](\S+)")
_EXTERNAL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9_.:-]*[A-Za-z0-9_])?")


@dataclass(frozen=True)
class Ref:
    """An action as someone typed it: the store's number, or an upstream id (with its source)."""

    text: str  # as typed
    number: int | None = None
    source: str | None = None  # lower case; None: any source
    external_id: str | None = None


# ---- commands ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Help:
    pass


@dataclass(frozen=True)
class ListActions:
    status: Status = Status.READY
    page: int = 1  # from 1


@dataclass(frozen=True)
class Show:
    ref: Ref


@dataclass(frozen=True)
class Decide:
    ref: Ref
    op: Op
    note: str | None  # required (non-empty) for a rejection


@dataclass(frozen=True)
class Retry:
    ref: Ref


@dataclass(frozen=True)
class History:
    ref: Ref | None  # None: the latest decisions across actions


@dataclass(frozen=True)
class Stats:
    days: int = DEFAULT_WINDOW


@dataclass(frozen=True)
class Track:
    """Have Signoff take an action a source pushes (as its intake would): ``source`` and the
    ids that name the action there (Flowdash: the workflow id and the task id)."""

    source: str
    ids: tuple[str, ...]


class Problem(enum.Enum):
    UNKNOWN_SUBCOMMAND = "unknown_subcommand"
    MISSING_ID = "missing_id"
    BAD_ID = "bad_id"
    MISSING_REASON = "missing_reason"
    NOTE_TOO_LONG = "note_too_long"
    BAD_STATUS = "bad_status"
    BAD_PAGE = "bad_page"
    BAD_WINDOW = "bad_window"
    EXTRA_WORDS = "extra_words"


@dataclass(frozen=True)
class Invalid:
    """What could not be read, and in which subcommand; ``given`` is the offending text as
    typed (untrusted: renderers escape it) and ``suggestion`` a subcommand it may have meant."""

    problem: Problem
    subcommand: str | None = None
    given: str | None = None
    suggestion: str | None = None


Command = Help | ListActions | Show | Decide | Retry | History | Stats | Track | Invalid


# ---- parsing -------------------------------------------------------------------------------


def parse(text: str | None) -> Command:
    """Read the text typed after ``/signoff``."""
    words = (text or "").split(None, 1)
    if not words:
        return Help()
    head = words[0].casefold()
    rest = words[1].strip() if len(words) > 1 else ""
    sub = _ALIASES.get(head, head)
    match sub:
        case "help":
            return Help()
        case "list":
            return _list(rest)
        case "show":
            ref = _only_ref(sub, rest)
            return ref if isinstance(ref, Invalid) else Show(ref)
        case "retry":
            ref = _only_ref(sub, rest)
            return ref if isinstance(ref, Invalid) else Retry(ref)
        case "history":
            if not rest:
                return History(None)
            ref = _only_ref(sub, rest)
            return ref if isinstance(ref, Invalid) else History(ref)
        case "approve" | "reject" | "rollback":
            return _decide(sub, rest)
        case "stats":
            return _stats(rest)
        case "track":
            return _track(rest)
    close = difflib.get_close_matches(head[:40], SUBCOMMANDS, n=1, cutoff=0.6)
    return Invalid(Problem.UNKNOWN_SUBCOMMAND, given=words[0], suggestion=close[0] if close else None)


def parse_ref(word: str) -> Ref | None:
    """An action reference, or None if the word cannot be one."""
    if not word or len(word) > MAX_REF + 40:
        return None
    number = _NUMBER.fullmatch(word)
    if number:
        return Ref(word, number=int(number.group(1)))
    prefixed = _PREFIXED.fullmatch(word)
    if prefixed and _EXTERNAL.fullmatch(prefixed.group(2)) and len(prefixed.group(2)) <= MAX_REF:
        return Ref(word, source=prefixed.group(1).casefold(), external_id=prefixed.group(2))
    if _EXTERNAL.fullmatch(word) and len(word) <= MAX_REF:
        return Ref(word, external_id=word)
    return None


def parse_status(word: str) -> Status | None:
    key = word.casefold().replace("-", "_")
    try:
        return Status(key)
    except ValueError:
        return None


def _split(rest: str) -> tuple[str, str]:
    words = rest.split(None, 1)
    if not words:
        return "", ""
    return words[0], (words[1].strip() if len(words) > 1 else "")


def _ref_or_invalid(sub: str, word: str) -> Ref | Invalid:
    if not word:
        return Invalid(Problem.MISSING_ID, sub)
    ref = parse_ref(word)
    return ref if ref is not None else Invalid(Problem.BAD_ID, sub, given=word)


def _only_ref(sub: str, rest: str) -> Ref | Invalid:
    """The one reference a subcommand takes, and nothing after it."""
    word, extra = _split(rest)
    ref = _ref_or_invalid(sub, word)
    if not isinstance(ref, Invalid) and extra:
        return Invalid(Problem.EXTRA_WORDS, sub, given=extra)
    return ref


def _decide(sub: str, rest: str) -> Decide | Invalid:
    word, note = _split(rest)
    ref = _ref_or_invalid(sub, word)
    if isinstance(ref, Invalid):
        return ref
    op = Op(sub)
    if op is Op.REJECT and not note:
        return Invalid(Problem.MISSING_REASON, sub, given=word)
    if len(note) > MAX_NOTE:
        return Invalid(Problem.NOTE_TOO_LONG, sub, given=str(len(note)))
    return Decide(ref, op, note or None)


def _list(rest: str) -> ListActions | Invalid:
    words = rest.split()
    status, page = Status.READY, 1
    if words and not _is_number(words[0]):
        found = parse_status(words[0])
        if found is None:
            return Invalid(Problem.BAD_STATUS, "list", given=words[0])
        status = found
        words = words[1:]
    if words:
        word = words[0]
        if not _is_number(word) or len(word) > 6 or not 1 <= int(word) <= MAX_PAGE:
            return Invalid(Problem.BAD_PAGE, "list", given=word)
        page = int(word)
        words = words[1:]
    if words:
        return Invalid(Problem.EXTRA_WORDS, "list", given=" ".join(words))
    return ListActions(status, page)


def _is_number(word: str) -> bool:
    return word.isascii() and word.isdigit()


def _stats(rest: str) -> Stats | Invalid:
    words = rest.split()
    if not words:
        return Stats()
    word = words[0].casefold()
    days = WINDOWS.get(word) or WINDOWS.get(f"{word}d")
    if days is None:
        return Invalid(Problem.BAD_WINDOW, "stats", given=words[0])
    if len(words) > 1:
        return Invalid(Problem.EXTRA_WORDS, "stats", given=" ".join(words[1:]))
    return Stats(days)


def _track(rest: str) -> Track | Invalid:
    words = rest.split()
    if len(words) < 2:
        return Invalid(Problem.MISSING_ID, "track")
    source, ids = words[0].casefold(), tuple(words[1:])
    if len(ids) > MAX_TRACK_WORDS:
        return Invalid(Problem.EXTRA_WORDS, "track", given=" ".join(ids[MAX_TRACK_WORDS:]))
    bad = next((w for w in (source, *ids) if len(w) > MAX_REF or not _EXTERNAL.fullmatch(w)), None)
    if bad is not None:
        return Invalid(Problem.BAD_ID, "track", given=bad)
    return Track(source, ids)
