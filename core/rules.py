"""Rollback conditions: free text in, rules a machine can check and a person can read back.

An Actions API attaches conditions such as "If blended ROAS drops >15% within 7 days of
execution" to an action. :func:`parse_condition` reads one into a :class:`Rule` (metric,
comparison, threshold, optional window) or refuses it as :class:`Unparsed` with a short reason.
It refuses rather than guesses: a condition it cannot read exactly stays with a person.

Reading a condition, in order:

1. normalise: Unicode NFKC, lower case, whitespace collapsed, trailing punctuation dropped;
2. refuse negations ("does not rise above 3"): we only say when to roll back, never when not to;
3. take out the one time window ("within 7 days of execution", "in the first 3 days");
4. drop the lead-in ("If", "When", "Roll back if") and a leading "the";
5. find the first comparison word ("drops", "falls below", "exceeds", ">", ...): the words
   before it name the metric, the words after it must be exactly a threshold.

Conventions:

* every comparison is strict: "at least 60", ">= 60" and "15% or more" are read as "> 60" and
  ">15%". The boundary itself never trips;
* a level with a percent ("falls below 2%") is refused: 0.02 and 2 are both plausible;
* "rises over 3" is refused (above 3, or by more than 3?), while "drops over 15%" is a change;
* "drops >15%" is relative to the metric's value at execution (the baseline) and
  "drops by 0.2" is an absolute change from it.

Nothing here does I/O, and nothing imports from the rest of Signoff.
"""

from __future__ import annotations

import enum
import functools
import math
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, NamedTuple

__all__ = [
    "Comparison",
    "Evaluation",
    "Rule",
    "Unparsed",
    "evaluate",
    "parse_condition",
    "parse_conditions",
    "slug",
    "window_ends_at",
]

MAX_CONDITION_CHARS = 500  # a single condition is a sentence; anything longer is refused
MAX_METRIC_CHARS = 64
# Differences this small (relative) are floating-point noise: "at the limit", which never trips.
_REL_TOL = 1e-9
_ABS_TOL = 1e-12


class Comparison(str, enum.Enum):
    BELOW = "below"  # value < threshold
    ABOVE = "above"  # value > threshold
    DROPS_PCT = "drops_pct"  # (value - baseline) / |baseline| < -threshold / 100
    RISES_PCT = "rises_pct"  # (value - baseline) / |baseline| > threshold / 100
    DROPS_BY = "drops_by"  # baseline - value > threshold
    RISES_BY = "rises_by"  # value - baseline > threshold


_RELATIVE = frozenset({Comparison.DROPS_PCT, Comparison.RISES_PCT, Comparison.DROPS_BY, Comparison.RISES_BY})
_PERCENT = frozenset({Comparison.DROPS_PCT, Comparison.RISES_PCT})
_DOWNWARD = frozenset({Comparison.BELOW, Comparison.DROPS_PCT, Comparison.DROPS_BY})

_DESCRIBE = {
    Comparison.BELOW: "{metric} < {n}",
    Comparison.ABOVE: "{metric} > {n}",
    Comparison.DROPS_PCT: "{metric} drops >{n}% vs value at execution",
    Comparison.RISES_PCT: "{metric} rises >{n}% vs value at execution",
    Comparison.DROPS_BY: "{metric} drops >{n} vs value at execution",
    Comparison.RISES_BY: "{metric} rises >{n} vs value at execution",
}

_JSON_KEYS = frozenset({"metric", "comparison", "threshold", "window", "text"})


@dataclass(frozen=True)
class Rule:
    """A rollback condition a machine can check. Construction validates (``ValueError``)."""

    metric: str  # slug of the metric phrase
    comparison: Comparison
    threshold: float  # a level (BELOW/ABOVE), a percent (..._PCT, 15.0 = 15%) or an amount (..._BY)
    window: timedelta | None  # from execution; None = for as long as the action runs
    text: str  # the original condition, unchanged

    def __post_init__(self) -> None:
        _check_rule(self)

    @property
    def needs_baseline(self) -> bool:
        """True if the rule compares against the metric's value at execution."""
        return self.comparison in _RELATIVE

    def describe(self) -> str:
        """Compact and readable: "blended_roas drops >15% vs value at execution · within 7d".

        The window is shown in the unit the condition was written in when that gives a whole
        number ("within 48 hours" -> 48h, "within 7 days" -> 7d), else in the largest unit
        that does (w, d, h, m, s).
        """
        what = _DESCRIBE[self.comparison].format(metric=self.metric, n=_fmt(self.threshold))
        when = "while running" if self.window is None else f"within {_fmt_window(self.window, self.text)}"
        return f"{what} · {when}"

    def to_json(self) -> dict[str, Any]:
        """JSON-safe; the window in seconds (or None)."""
        window: float | int | None = None
        if self.window is not None:
            seconds = self.window.total_seconds()
            window = int(seconds) if seconds.is_integer() else seconds
        return {
            "metric": self.metric,
            "comparison": self.comparison.value,
            "threshold": float(self.threshold),
            "window": window,
            "text": self.text,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Rule:
        """The inverse of :meth:`to_json`; raises ``ValueError`` on anything else."""
        if not isinstance(data, dict):
            raise ValueError(f"a rule must be a JSON object, not {type(data).__name__}")
        if set(data) != _JSON_KEYS:
            missing, extra = sorted(_JSON_KEYS - set(data)), sorted(map(str, set(data) - _JSON_KEYS))
            raise ValueError(f"rule keys are wrong (missing {missing}, unexpected {extra})")
        try:
            comparison = Comparison(data["comparison"])
        except (ValueError, TypeError):
            raise ValueError(f"unknown comparison {data['comparison']!r}") from None
        window = data["window"]
        if window is not None:
            seconds = _real("window", window)
            try:
                window = timedelta(seconds=seconds)
            except OverflowError:
                raise ValueError("window is too long") from None
        return cls(
            metric=data["metric"],
            comparison=comparison,
            threshold=_real("threshold", data["threshold"]),
            window=window,
            text=data["text"],
        )


@dataclass(frozen=True)
class Unparsed:
    """A condition Signoff does not check by itself; a person does."""

    text: str
    reason: str  # a short human sentence, e.g. "no number to compare against"


@dataclass(frozen=True)
class Evaluation:
    tripped: bool
    change: float | None  # value - baseline (_BY), percent change (_PCT), None for levels
    detail: str  # e.g. "blended_roas is 2.5, down 21.9% from 3.2 at execution (limit 15%)"


# ---- public functions ---------------------------------------------------------------------


def slug(phrase: str) -> str:
    """ "blended ROAS" -> "blended_roas": lower case, runs of non-alphanumerics -> "_",
    trimmed, at most 64 characters. Letters outside ASCII are kept."""
    text = re.sub(r"[\W_]+", "_", unicodedata.normalize("NFKC", phrase).lower()).strip("_")
    return text[:MAX_METRIC_CHARS].rstrip("_")


def parse_condition(text: str) -> Rule | Unparsed:
    """Read one rollback condition; never raises."""
    if not isinstance(text, str):
        return Unparsed(repr(text), "the condition is not text")
    return _parse_cached(text)


@functools.lru_cache(maxsize=4096)
def _parse_cached(text: str) -> Rule | Unparsed:
    """Conditions are read again at every render of their card: the answers (frozen) are kept."""
    try:
        return _parse(text)
    except _Refusal as refusal:
        return Unparsed(text, str(refusal))
    except Exception:  # noqa: BLE001 - the contract is "never raises"; tests check it is unused
        return Unparsed(text, INTERNAL_ERROR_REASON)


INTERNAL_ERROR_REASON = "could not read this condition (internal error)"


def parse_conditions(texts: Sequence[str]) -> list[Rule | Unparsed]:
    """:func:`parse_condition` for each, in order."""
    if isinstance(texts, str):
        raise TypeError("parse_conditions takes a sequence of conditions, not one string")
    return [parse_condition(text) for text in texts]


def evaluate(rule: Rule, *, value: float, baseline: float | None) -> Evaluation:
    """Check a current value against a rule.

    ``baseline`` is the metric's value at execution; it is required for the relative
    comparisons (``ValueError`` if None) and ignored for levels. Values must be finite.
    Comparisons are strict, and a value within floating-point noise of the limit counts as
    at the limit (not tripped).

    A percent change from a baseline of 0 is undefined: a ``_PCT`` rule then trips if the
    value moved in the rule's direction at all, whatever the threshold, and ``change`` is None.
    """
    _finite("value", value)
    if rule.needs_baseline:
        if baseline is None:
            raise ValueError(f"'{rule.describe()}' needs a baseline (the value at execution)")
        _finite("baseline", baseline)
    if rule.comparison in _PERCENT:
        assert baseline is not None
        return _evaluate_percent(rule, value, baseline)
    if rule.needs_baseline:
        assert baseline is not None
        return _evaluate_amount(rule, value, baseline)
    return _evaluate_level(rule, value)


def window_ends_at(rule: Rule, *, started_at: datetime) -> datetime | None:
    """When the rule stops being watched: ``started_at`` + window, or None (while running)."""
    return None if rule.window is None else started_at + rule.window


# ---- evaluating ---------------------------------------------------------------------------


def _evaluate_level(rule: Rule, value: float) -> Evaluation:
    below = rule.comparison is Comparison.BELOW
    tripped = _past(value, rule.threshold, downward=below)
    word = ("" if tripped else "not ") + ("below" if below else "above")
    return Evaluation(tripped, None, f"{rule.metric} is {_fmt(value)}, {word} {_fmt(rule.threshold)}")


def _evaluate_percent(rule: Rule, value: float, baseline: float) -> Evaluation:
    down = rule.comparison in _DOWNWARD
    limit = f"(limit {_fmt(rule.threshold)}%)"
    if baseline == 0:
        tripped = _past(value, 0.0, downward=down)
        moved = _movement(value, _fmt(abs(value)))
        detail = (
            f"{rule.metric} is {_fmt(value)}, {moved} from 0 at execution; a percent change from 0 "
            f"is undefined, so any {'drop' if down else 'rise'} trips {limit}"
        )
        return Evaluation(tripped, None, detail)
    change = (value - baseline) / abs(baseline) * 100
    tripped = _past(change, -rule.threshold if down else rule.threshold, downward=down)
    moved = _movement(change, _fmt_percent(abs(change), rule.threshold) + "%")
    detail = f"{rule.metric} is {_fmt(value)}, {moved} from {_fmt(baseline)} at execution {limit}"
    return Evaluation(tripped, change, detail)


def _evaluate_amount(rule: Rule, value: float, baseline: float) -> Evaluation:
    down = rule.comparison in _DOWNWARD
    change = value - baseline
    tripped = _past(change, -rule.threshold if down else rule.threshold, downward=down)
    moved = _movement(change, _fmt(abs(change)))
    detail = (
        f"{rule.metric} is {_fmt(value)}, {moved} from {_fmt(baseline)} at execution (limit {_fmt(rule.threshold)})"
    )
    return Evaluation(tripped, change, detail)


def _past(x: float, limit: float, *, downward: bool) -> bool:
    """Strictly below (``downward``) or above ``limit``; within noise of it is not past it."""
    if math.isclose(x, limit, rel_tol=_REL_TOL, abs_tol=_ABS_TOL):
        return False
    return x < limit if downward else x > limit


def _movement(change: float, amount: str) -> str:
    if math.isclose(change, 0.0, abs_tol=_ABS_TOL):
        return "unchanged"
    return f"{'up' if change > 0 else 'down'} {amount}"


def _finite(name: str, x: Any) -> None:
    if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x):
        raise ValueError(f"{name} must be a finite number, not {x!r}")


# ---- formatting ---------------------------------------------------------------------------

_UNIT_SECONDS = {"w": 604800, "d": 86400, "h": 3600, "m": 60, "s": 1}


def _fmt(x: float) -> str:
    """15.0 -> "15", 0.65 -> "0.65", 0.1 + 0.2 -> "0.3" (12 significant digits)."""
    if x == 0:
        return "0"  # not "-0"
    return format(x, ".12g")


def _fmt_percent(x: float, limit: float) -> str:
    """A percent to one decimal, with more places when one would look equal to the limit."""
    shown = x
    for places in (1, 2, 3, 6):
        shown = round(x, places)
        if shown != limit:
            break
    return _fmt(shown)


def _fmt_window(window: timedelta, text: str) -> str:
    seconds = window.total_seconds()
    written = _written_unit(text, window)
    for unit in ([written] if written else []) + list(_UNIT_SECONDS):
        count = seconds / _UNIT_SECONDS[unit]
        if count.is_integer():
            return f"{int(count)}{unit}"
    return f"{_fmt(seconds)}s"


def _written_unit(text: str, window: timedelta) -> str | None:
    """The unit letter of the window written in ``text``, if it is this window."""
    try:
        found = _find_window(_normalise(text))
    except _Refusal:
        return None
    if found is None or found.length != window:
        return None
    return found.unit


# ---- validating ---------------------------------------------------------------------------


def _check_rule(rule: Rule) -> None:
    if not isinstance(rule.metric, str) or not rule.metric or slug(rule.metric) != rule.metric:
        raise ValueError(f"metric must be a non-empty slug, not {rule.metric!r}")
    if not isinstance(rule.comparison, Comparison):
        raise ValueError(f"comparison must be a Comparison, not {rule.comparison!r}")
    threshold = _real("threshold", rule.threshold)
    if rule.comparison in _RELATIVE and threshold < 0:
        raise ValueError(f"a change threshold cannot be negative ({threshold!r})")
    if rule.window is not None and (not isinstance(rule.window, timedelta) or rule.window <= timedelta(0)):
        raise ValueError(f"window must be a positive timedelta or None, not {rule.window!r}")
    if not isinstance(rule.text, str):
        raise ValueError(f"text must be a string, not {type(rule.text).__name__}")


def _real(name: str, x: Any) -> float:
    """A finite int or float (not a bool) as a float; ``ValueError`` otherwise."""
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        raise ValueError(f"{name} must be a number, not {type(x).__name__}")
    try:
        value = float(x)
    except OverflowError:
        raise ValueError(f"{name} is out of range") from None
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, not {x!r}")
    if name == "window" and value <= 0:
        raise ValueError(f"window must be positive, not {x!r}")
    return value


# ---- parsing: vocabulary ------------------------------------------------------------------


def _words(*alternatives: str) -> str:
    """Alternatives as whole words ("drop" matches in "drop rate", not in "drop-off")."""
    return r"(?<![\w-])(?:" + "|".join(alternatives) + r")(?![\w-])"


_AUX = r"(?:(?:has|have|had|is|are|was|were|will|would|does|do|did)\s+)?"
_BE_GO = r"(?:(?:is|are|was|were|goes|go|went|gone|gets|get|got|moves?|moved|becomes?|became)\s+)?"

# The first of these in a condition is its comparison. Order matters where two match at the
# same place: "moves above" is a level, "moves" alone is unclear.
_VERBS = re.compile(
    "|".join(
        f"(?P<{kind}>{pattern})"
        for kind, pattern in [
            (
                "below",
                _words(_BE_GO + r"(?:below|under|beneath|less than|lower than|smaller than|fewer than)") + r"|<=?",
            ),
            (
                "above",
                _words(
                    _BE_GO + r"(?:above|over|more than|greater than|higher than|larger than|bigger than"
                    r"|at least|beyond|in excess of)",
                    _AUX + r"(?:exceed(?:s|ed|ing)?|surpass(?:es|ed|ing)?)",
                )
                + r"|>=?",
            ),
            (
                "down",
                _words(
                    _AUX + r"(?:drop(?:s|ped|ping)?|f(?:all(?:s|en|ing)?|ell)|declin(?:e|es|ed|ing)"
                    r"|decreas(?:e|es|ed|ing)|dip(?:s|ped|ping)?|s(?:ink(?:s|ing)?|ank|unk)"
                    r"|slip(?:s|ped|ping)?|shr(?:ink(?:s|ing)?|ank|unk)|tank(?:s|ed|ing)?"
                    r"|plung(?:e|es|ed|ing)|plummet(?:s|ed|ing)?)",
                    r"(?:is|are|was|were|goes|go|went|gone|going|comes?|came)\s+down",
                ),
            ),
            (
                "up",
                _words(
                    _AUX + r"(?:r(?:is(?:e|es|en|ing)|ose)|increas(?:e|es|ed|ing)|gr(?:ow(?:s|n|ing)?|ew)"
                    r"|spik(?:e|es|ed|ing)|jump(?:s|ed|ing)?|climb(?:s|ed|ing)?|surg(?:e|es|ed|ing)"
                    r"|soar(?:s|ed|ing)?)",
                    r"(?:is|are|was|were|goes|go|went|gone|going)\s+up",
                ),
            ),
            (
                "judged",
                _words(
                    _AUX + r"(?:worsen(?:s|ed|ing)?|improv(?:e|es|ed|ing)|deteriorat(?:e|es|ed|ing)"
                    r"|degrad(?:e|es|ed|ing)|underperform(?:s|ed|ing)?)",
                    r"(?:gets?|got|gotten|becomes?|became)\s+(?:worse|better)",
                ),
            ),
            (
                "unclear",
                _words(
                    _AUX + r"(?:chang(?:e|es|ed|ing)|mov(?:e|es|ed|ing)|shift(?:s|ed|ing)?|swing(?:s|ing)?"
                    r"|swung|var(?:y|ies|ied|ying)|fluctuat(?:e|es|ed|ing)|deviat(?:e|es|ed|ing)"
                    r"|differ(?:s|ed|ing)?)"
                ),
            ),
        ]
    )
)

_NEGATION = re.compile(
    _words(r"not", r"never", r"no longer", r"cannot", r"fails? to", r"unless", r"without", r"neither", r"nor")
    + r"|n't(?!\w)"
)
_LEAD_IN = re.compile(r"^(?:(?:roll\s*-?\s*back|rollback)\s+(?:if|when|whenever)|if|when|whenever)(?![\w-])[\s,:]*")
_THE = re.compile(r"^the\s+")

# ---- parsing: time windows ----------------------------------------------------------------

_ANCHORS = (
    r"execution|executing|launch|launching|approval|rollout|roll-out|start|starting|go-live"
    r"|going live|activation|deployment|release|the change|the action|it"
)
_WINDOW = re.compile(
    r",?\s*(?<![\w-])(?:within|in|during|for(?=\s+the\s+(?:first|next)\b))"
    r"(?:\s+the)?(?:\s+(?P<first>first|next))?"
    r"\s+(?:(?P<num>[0-9]+(?:\.[0-9]+)?)\s*-?\s*|(?P<word>an?|one)\s+)?"
    r"(?P<unit>minutes?|mins?|hours?|hrs?|hr|h|days?|d|weeks?|wks?|wk|w)(?![\w-])"
    r"(?:\s+(?:of|after|from|since|following)\s+(?:the\s+)?(?:" + _ANCHORS + r")(?![\w-]))?"
    r"\s*,?"
)
_WINDOW_WORD = re.compile(_words(r"within", r"during", r"in the first", r"for the first"))


class _Window(NamedTuple):
    length: timedelta
    unit: str  # "m", "h", "d" or "w", as written
    start: int
    end: int


# ---- parsing: thresholds ------------------------------------------------------------------

_NUMBER = re.compile(
    r"(?P<sign>-)?\s*(?P<currency>[$€£¥])?\s*"
    r"(?P<num>[0-9]{1,3}(?:,[0-9]{3})+(?:\.[0-9]+)?|[0-9]+(?:\.[0-9]+)?|\.[0-9]+)"
    r"(?:\s*(?P<unit>%|percent(?![\w-])|per cent(?![\w-])|pct(?![\w-])|x(?![\w-])))?"
)
_POINTS = re.compile(_words(r"percentage points?", r"pp", r"bps", r"basis points?"))
# After a motion verb: a level ("falls below 0.65"), not a change.
_DOWN_TO_LEVEL = re.compile(
    r"(?:to\s+)?(?:below|under(?:neath)?|beneath|lower than)(?![\w-])|to\s+(?:less than|fewer than|<=?)"
)
_UP_TO_LEVEL = re.compile(
    r"(?:to\s+)?(?:above|beyond|past|higher than)(?![\w-])|to\s+(?:over|more than|greater than|>=?)"
)
_MAXIMUM_CHANGE = re.compile(r"(?:by\s+)?(?:less than|fewer than|under|up to|at most|no more than|<=?)(?![\w-])")
_UP_OVER = re.compile(r"over(?![\w-])")
_CHANGE_LEAD = re.compile(r"(?:by\s+)?(?:(?:more than|greater than|over|in excess of|at least|>=?)\s*)?")
_CHANGE_TAIL = re.compile(
    r"(?:or\s+(?:more|greater)(?![\w-])\s*)?"
    r"(?:(?:vs\.?|versus|from|compared\s+(?:to|with)|relative\s+to|against|below|above)\s+"
    r"(?:the\s+|its\s+)?(?:baseline|pre-?(?:launch|execution)(?:\s+(?:value|level|baseline))?"
    r"|(?:value|level)\s+(?:at|before)\s+(?:execution|launch))(?![\w-]))?"
)
_CONJUNCTION = re.compile(_words(r"and", r"or", r"but", r"then", r"plus") + r"|[,;&]")

# ---- parsing: metric names ----------------------------------------------------------------

_SEVERAL = re.compile(_words(r"and", r"or", r"vs", r"versus", r"plus") + r"|[,;&]")
_PRONOUNS = frozenset({"it", "this", "that", "they", "these", "those", "something", "anything", "metric", "the metric"})
_NOT_A_NAME = re.compile(
    _words(
        r"is",
        r"are",
        r"was",
        r"were",
        r"be",
        r"been",
        r"being",
        r"has",
        r"have",
        r"had",
        r"will",
        r"would",
        r"should",
        r"could",
        r"can",
        r"may",
        r"might",
        r"does",
        r"do",
        r"did",
        r"if",
        r"when",
        r"whenever",
        r"then",
        r"roll",
        r"rollback",
        r"we",
        r"you",
        r"please",
        r"by",
    )
    + r"|[%$€£¥<>=]"
)


# ---- parsing: steps -----------------------------------------------------------------------


class _Refusal(Exception):
    """Raised inside the parser; its message is the reason the condition is refused."""


class _Number(NamedTuple):
    value: float
    percent: bool
    multiplier: bool


_PLAIN = str.maketrans({"≥": ">=", "≤": "<=", "−": "-", "’": "'", "‘": "'", "“": '"', "”": '"'})


def _parse(text: str) -> Rule:
    s = _normalise(text)
    if not s:
        raise _Refusal("the condition is empty")
    if len(s) > MAX_CONDITION_CHARS:
        raise _Refusal(f"too long for one condition ({len(s)} characters, at most {MAX_CONDITION_CHARS})")
    if negation := _NEGATION.search(s):
        raise _Refusal(
            f"negated conditions are not checked ('{negation.group()}'): say when to roll back, e.g. 'rises above 3'"
        )
    s, window = _take_window(s)
    s = _THE.sub("", _LEAD_IN.sub("", s))
    verb = _VERBS.search(s)
    if verb is None:
        raise _Refusal("no recognisable comparison (e.g. 'drops >15%', 'falls below 0.65', 'exceeds 50')")
    kind, said = verb.lastgroup, verb.group()
    if kind == "unclear":
        raise _Refusal(f"direction unclear: '{said}' does not say up or down")
    if kind == "judged":
        raise _Refusal(f"direction unclear: whether '{said}' means up or down depends on the metric")
    metric = _metric(s[: verb.start()], said)
    tail = s[verb.end() :].strip()
    if kind in ("below", "above"):
        comparison = Comparison.BELOW if kind == "below" else Comparison.ABOVE
        threshold = _level_threshold(said, tail)
    else:
        comparison, threshold = _motion(kind == "down", said, tail)
    return Rule(metric, comparison, threshold, window, text)


def _normalise(text: str) -> str:
    """NFKC, plain ASCII operators, lower case, whitespace collapsed, no trailing punctuation."""
    return _squash(unicodedata.normalize("NFKC", text).translate(_PLAIN).lower())


def _squash(s: str) -> str:
    """Whitespace collapsed, trailing punctuation dropped."""
    return re.sub(r"[\s.!?;:,]+$", "", " ".join(s.split()))


def _find_window(s: str) -> _Window | None:
    """The one time window in ``s`` (None if there is none); refuses two, or an empty one."""
    found = list(_WINDOW.finditer(s))
    if not found:
        return None
    if len(found) > 1:
        raise _Refusal("more than one time window: give one")
    m = found[0]
    if m["num"] is not None:
        amount = float(m["num"])
    elif m["word"] is not None or m["first"] is not None:
        amount = 1.0  # "within a day", "in the first week"
    else:
        raise _Refusal(f"the time window '{m.group().strip(' ,')}' has no length")
    unit = m["unit"][0]
    if amount <= 0:
        raise _Refusal("the time window must be longer than zero")
    try:
        length = timedelta(seconds=amount * _UNIT_SECONDS[unit])
    except OverflowError:
        raise _Refusal("the time window is too long") from None
    return _Window(length, unit, m.start(), m.end())


def _take_window(s: str) -> tuple[str, timedelta | None]:
    """``s`` without its time window, and the window's length (None if there is none)."""
    window = _find_window(s)
    if window is None:
        return s, None
    return _squash(s[: window.start] + " " + s[window.end :]), window.length


def _metric(phrase: str, verb: str) -> str:
    """The metric's slug from the words before the comparison, or a refusal."""
    phrase = phrase.strip(" ,;:'\"`")
    if not phrase:
        raise _Refusal(f"no metric named before '{verb}'")
    if several := _SEVERAL.search(phrase):
        raise _Refusal(f"more than one metric ('{several.group()}'): give one condition per metric")
    if phrase in _PRONOUNS:
        raise _Refusal(f"the metric is not named ('{phrase}')")
    if _NOT_A_NAME.search(phrase):
        raise _Refusal(f"unclear wording before '{verb}': '{_clip(phrase)}' is not a metric name")
    name = slug(phrase)
    if not name:
        raise _Refusal(f"no usable metric name before '{verb}'")
    return name


def _motion(down: bool, verb: str, tail: str) -> tuple[Comparison, float]:
    """What follows "drops"/"rises": a level ("below 0.65") or a change ("by more than 15%")."""
    if level := (_DOWN_TO_LEVEL if down else _UP_TO_LEVEL).match(tail):
        threshold = _level_threshold(f"{verb} {level.group()}", tail[level.end() :].strip())
        return (Comparison.BELOW if down else Comparison.ABOVE), threshold
    if at_most := _MAXIMUM_CHANGE.match(tail):
        raise _Refusal(
            f"'{verb} {at_most.group()}' sets a maximum change; a rollback needs a minimum, "
            f"e.g. '{verb} by more than 10%'"
        )
    if not down and _UP_OVER.match(tail):
        raise _Refusal(
            f"'{verb} over' is ambiguous: say '{verb} above N' for a level or '{verb} by more than N' for a change"
        )
    lead = _CHANGE_LEAD.match(tail)
    assert lead is not None  # every part is optional
    number, rest = _number(verb, tail[lead.end() :])
    if number.value < 0:
        raise _Refusal(f"a change is given as a positive amount ('{verb}' already says which way)")
    if number.multiplier:
        raise _Refusal(f"a change as a multiple ('{verb} ...x') is unclear: give a percent")
    trailer = _CHANGE_TAIL.match(rest)  # "or more", "vs baseline"
    assert trailer is not None  # every part is optional
    rest = rest[trailer.end() :].strip()
    _refuse_leftover(rest)
    if number.percent:
        return (Comparison.DROPS_PCT if down else Comparison.RISES_PCT), number.value
    return (Comparison.DROPS_BY if down else Comparison.RISES_BY), number.value


def _level_threshold(verb: str, tail: str) -> float:
    """The plain number after "below"/"above" (a percent is ambiguous and refused)."""
    number, rest = _number(verb, tail)
    if number.percent:
        n = number.value
        raise _Refusal(
            f"'{verb} {_fmt(n)}%' is ambiguous ({_fmt(n / 100)} or {_fmt(n)}?): give the level as a plain number"
        )
    _refuse_leftover(rest)
    return number.value


def _number(verb: str, tail: str) -> tuple[_Number, str]:
    """The number at the start of ``tail`` and what follows it."""
    if points := _POINTS.search(tail):
        raise _Refusal(f"'{points.group()}' is ambiguous: give a percent change or a plain amount")
    m = _NUMBER.match(tail)
    if m is None:
        if not tail:
            raise _Refusal("no number to compare against")
        if not re.search(r"[0-9]", tail):
            raise _Refusal(f"no number to compare against ('{_clip(tail)}' is not an amount)")
        raise _Refusal(f"expected a number right after '{verb}', found '{_clip(tail)}'")
    value = float(m["num"].replace(",", ""))
    if not math.isfinite(value):
        raise _Refusal("the number is too large")
    if m["sign"]:
        value = -value
    unit = m["unit"] or ""
    number = _Number(value, percent=unit not in ("", "x"), multiplier=unit == "x")
    return number, tail[m.end() :].strip()


def _refuse_leftover(rest: str) -> None:
    """Anything after the threshold is refused, with the most useful reason."""
    if not rest.strip(" ,"):
        return
    joined = _CONJUNCTION.search(rest)
    if joined and (_VERBS.search(rest) or re.search(r"[0-9]", rest)):
        raise _Refusal(f"more than one condition joined by '{joined.group()}': give each separately")
    if _WINDOW_WORD.search(rest):
        raise _Refusal(f"could not read the time window in '{_clip(rest)}' (give minutes, hours, days or weeks)")
    raise _Refusal(f"unexpected words after the threshold: '{_clip(rest.strip(' ,'))}'")


def _clip(s: str, limit: int = 60) -> str:
    return s if len(s) <= limit else s[: limit - 1] + "…"
