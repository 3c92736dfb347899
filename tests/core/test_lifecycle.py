"""The lifecycle's rules: which options an action offers in which state."""

from __future__ import annotations

import pytest

from core.lifecycle import TRANSITIONS, find_option, options_for, stored_options
from core.registry import NO_CAPABILITIES, Registered, SourceRegistry, UnknownSource
from policy import Policy, Route
from sources.base import IN_FLIGHT, Capabilities, Op, Option, Status

FLOKIT_LIKE = Capabilities(ops=frozenset({Op.APPROVE, Op.REJECT, Op.ROLLBACK}))
NAMED = (Option(Op.APPROVE, "Approve", "Approve"), Option(Op.OTHER, "Escalate", "Escalate"))


def kinds(options: tuple[Option, ...]) -> list[Op]:
    return [o.kind for o in options]


def test_options_follow_the_state_where_the_source_names_none() -> None:
    assert kinds(options_for(Status.READY, FLOKIT_LIKE, None)) == [Op.APPROVE, Op.REJECT]
    assert kinds(options_for(Status.APPROVED, FLOKIT_LIKE, None)) == [Op.ROLLBACK]
    assert kinds(options_for(Status.REJECTED, FLOKIT_LIKE, None)) == []
    assert kinds(options_for(Status.READY, Capabilities(ops=frozenset({Op.APPROVE})), None)) == [Op.APPROVE]


@pytest.mark.parametrize("status", sorted(IN_FLIGHT))
def test_nothing_is_offered_while_a_decision_is_in_flight(status: Status) -> None:
    assert options_for(status, FLOKIT_LIKE, None) == ()
    assert options_for(status, FLOKIT_LIKE, NAMED) == ()


def test_a_sources_own_options_are_offered_as_named_while_the_state_allows() -> None:
    caps = Capabilities(ops=frozenset({Op.APPROVE}), own_options=True)
    assert options_for(Status.READY, caps, NAMED) == NAMED
    assert options_for(Status.APPROVED, caps, NAMED) == ()
    # A kind the source cannot carry is never offered, whatever the action lists.
    assert options_for(Status.READY, caps, (Option(Op.REJECT, "No", "no"),)) == ()


def test_options_round_trip_through_the_store_and_are_found_by_key() -> None:
    stored = [o.to_json() for o in NAMED] + [{"kind": "bogus"}, "junk"]
    assert stored_options(stored) == NAMED
    assert stored_options(None) is None
    assert find_option(NAMED, op=Op.OTHER, key="Escalate") == NAMED[1]
    assert find_option(NAMED, op=Op.OTHER, key="Delete") is None
    assert find_option(NAMED, op=Op.APPROVE) == NAMED[0]


def test_every_kind_has_a_transition_from_ready_or_after_approval() -> None:
    assert set(TRANSITIONS) == set(Op)
    assert all(t.in_flight in IN_FLIGHT for t in TRANSITIONS.values())


class _Source:
    def __init__(self, name: str) -> None:
        self.name = name
        self.capabilities = FLOKIT_LIKE


def test_the_registry_knows_each_source_once_and_nothing_of_others() -> None:
    registry = SourceRegistry([Registered(_Source("a")), Registered(_Source("b"))])  # type: ignore[arg-type]
    assert registry.names == ("a", "b") and "a" in registry and "c" not in registry
    assert registry.capabilities("a") is FLOKIT_LIKE
    assert registry.capabilities("gone") is NO_CAPABILITIES
    with pytest.raises(UnknownSource):
        registry.get("gone")
    with pytest.raises(ValueError):
        SourceRegistry([Registered(_Source("a")), Registered(_Source("a"))])  # type: ignore[arg-type]


def test_routes_match_on_sources() -> None:
    policy = Policy(routes=(Route(sources=("flowdash",), channel="C0FLOW"), Route(types=("t",), channel="C0T")))
    assert policy.channel_for("t", None, "C0DEF", source="flowdash") == "C0FLOW"
    assert policy.channel_for("t", None, "C0DEF", source="flokit") == "C0T"
    assert policy.channel_for("other", None, "C0DEF", source="flokit") == "C0DEF"
