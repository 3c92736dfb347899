"""The lifecycle's rules: which decision moves an action from where, through which in-flight
state, to which outcome; and which decision options an action offers now.

The words (``Status``, ``Op``, ``Option``) are the sources' contract, in ``sources.base``;
the rules about them live here, and nowhere else (``store/`` is handed their results).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final

from sources.base import IN_FLIGHT, Capabilities, Op, Option, Status


@dataclass(frozen=True)
class Transition:
    """How a decision of one kind moves the lifecycle: allowed from, in flight while, and
    landed in (the upstream's word, where it gives one, wins over ``outcome``)."""

    allowed_from: frozenset[Status]
    in_flight: Status
    outcome: Status


TRANSITIONS: Final[dict[Op, Transition]] = {
    Op.APPROVE: Transition(frozenset({Status.READY}), Status.APPROVING, Status.APPROVED),
    Op.REJECT: Transition(frozenset({Status.READY}), Status.REJECTING, Status.REJECTED),
    Op.ROLLBACK: Transition(
        frozenset({Status.APPROVED, Status.RUNNING, Status.SUCCEEDED}),
        Status.ROLLING_BACK,
        Status.ROLLED_BACK,
    ),
    # A source's own named action: the action's next state is whatever the upstream says
    # once it ran (read again); until it says, the action is back where it was.
    Op.OTHER: Transition(frozenset({Status.READY}), Status.DECIDING, Status.READY),
}

# The labels of the options a source does not name itself.
DEFAULT_LABELS: Final[dict[Op, str]] = {Op.APPROVE: "Approve", Op.REJECT: "Reject", Op.ROLLBACK: "Roll back"}
_DEFAULT_ORDER: Final = (Op.APPROVE, Op.REJECT, Op.ROLLBACK)


def allows(op: Op, status: Status) -> bool:
    return status in TRANSITIONS[op].allowed_from


def transition_for(op: Op) -> tuple[frozenset[Status], Status]:
    """The states a decision of kind ``op`` is allowed from, and its in-flight state."""
    t = TRANSITIONS[op]
    return t.allowed_from, t.in_flight


def in_flight_from(status: Status) -> frozenset[Status]:
    """The states a decision now in flight (``status``) was made in."""
    for transition in TRANSITIONS.values():
        if transition.in_flight == status:
            return transition.allowed_from
    return frozenset()


def any_decision_from(status: Status) -> bool:
    """Whether some decision can still be made in ``status`` (never in flight or at the end)."""
    return status not in IN_FLIGHT and any(status in t.allowed_from for t in TRANSITIONS.values())


def stored_options(data: Iterable[Any] | None) -> tuple[Option, ...] | None:
    """Options as stored on an action (JSON), or None where the source names none."""
    if data is None:
        return None
    return tuple(o for o in (Option.from_json(item) for item in data) if o is not None)


def options_for(status: Status, caps: Capabilities, declared: tuple[Option, ...] | None) -> tuple[Option, ...]:
    """The decisions an action in ``status`` offers now: the source's own options where it
    names them per action, else those its capabilities allow; only those the state allows."""
    if status in IN_FLIGHT:
        return ()
    if declared is not None:
        return tuple(o for o in declared if allows(o.kind, status) and (o.kind is Op.OTHER or o.kind in caps.ops))
    return tuple(
        Option(op, DEFAULT_LABELS[op], op.value) for op in _DEFAULT_ORDER if op in caps.ops and allows(op, status)
    )


def find_option(options: Iterable[Option], *, op: Op, key: str | None = None) -> Option | None:
    """The offered option a click or command names: by the source's key where given (a named
    option), else the first of the kind."""
    for option in options:
        if option.kind is op and (key is None or option.key == key):
            return option
    return None
