"""The ``/signoff`` parser: command text in, a typed Command out, for every subcommand and
every way of getting one wrong. Pure: no bot, no store."""

from __future__ import annotations

import pytest

from bot.commands import (
    Decide,
    Help,
    History,
    Invalid,
    ListActions,
    Problem,
    Ref,
    Retry,
    Show,
    Stats,
    parse,
    parse_ref,
)
from sources.base import Op, Status

N12 = Ref("12", number=12)
ACT = "act_01hx4j7k9m0000000001"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # help
        ("", Help()),
        ("   \t  ", Help()),
        (None, Help()),
        ("help", Help()),
        ("HELP me please", Help()),
        ("?", Help()),
        # list
        ("list", ListActions(Status.READY, 1)),
        ("LIST Approved", ListActions(Status.APPROVED, 1)),
        ("list rolled_back", ListActions(Status.ROLLED_BACK, 1)),
        ("list rolled-back 3", ListActions(Status.ROLLED_BACK, 3)),
        ("list ready 2", ListActions(Status.READY, 2)),
        ("list 2", ListActions(Status.READY, 2)),
        ("list approving", ListActions(Status.APPROVING, 1)),
        ("ls failed", ListActions(Status.FAILED, 1)),
        # show, in every way an id may be given
        ("show 12", Show(N12)),
        ("show #12", Show(Ref("#12", number=12))),
        (f"show {ACT}", Show(Ref(ACT, external_id=ACT))),
        (f"show flokit:{ACT}", Show(Ref(f"flokit:{ACT}", source="flokit", external_id=ACT))),
        (f"show FloKit/{ACT}", Show(Ref(f"FloKit/{ACT}", source="flokit", external_id=ACT))),
        (f"show FLOKIT:{ACT}", Show(Ref(f"FLOKIT:{ACT}", source="flokit", external_id=ACT))),
        # decisions
        ("approve 12", Decide(N12, Op.APPROVE, None)),
        ("approve 12    Aligned with   Q1 plan  ", Decide(N12, Op.APPROVE, "Aligned with   Q1 plan")),
        ("Approve 12 line one\nline two", Decide(N12, Op.APPROVE, "line one\nline two")),
        ("reject 12 creative refresh next week", Decide(N12, Op.REJECT, "creative refresh next week")),
        ("rollback 12", Decide(N12, Op.ROLLBACK, None)),
        ("roll-back 12", Decide(N12, Op.ROLLBACK, None)),
        ("rollback 12 ROAS fell", Decide(N12, Op.ROLLBACK, "ROAS fell")),
        ("approve 12 <!channel> <@U0OTHER>", Decide(N12, Op.APPROVE, "<!channel> <@U0OTHER>")),
        ("approve 12 ünïcødé ✅", Decide(N12, Op.APPROVE, "ünïcødé ✅")),
        ("retry 12", Retry(N12)),
        # history and stats
        ("history", History(None)),
        ("history 12", History(N12)),
        ("stats", Stats(7)),
        ("stats 7d", Stats(7)),
        ("stats 30D", Stats(30)),
        ("stats 30", Stats(30)),
    ],
)
def test_parses(text: str | None, expected: object) -> None:
    assert parse(text) == expected


@pytest.mark.parametrize(
    ("text", "problem", "subcommand", "given"),
    [
        ("frobnicate", Problem.UNKNOWN_SUBCOMMAND, None, "frobnicate"),
        ("<@U0OTHER> hi", Problem.UNKNOWN_SUBCOMMAND, None, "<@U0OTHER>"),
        ("show", Problem.MISSING_ID, "show", None),
        ("approve", Problem.MISSING_ID, "approve", None),
        ("reject", Problem.MISSING_ID, "reject", None),
        ("rollback   ", Problem.MISSING_ID, "rollback", None),
        ("retry", Problem.MISSING_ID, "retry", None),
        ("show <@U0OTHER>", Problem.BAD_ID, "show", "<@U0OTHER>"),
        ("show <!channel>", Problem.BAD_ID, "show", "<!channel>"),
        ("approve ١٢", Problem.BAD_ID, "approve", "١٢"),  # not ASCII digits
        ("history ✅", Problem.BAD_ID, "history", "✅"),
        ("show flokit:", Problem.BAD_ID, "show", "flokit:"),
        ("reject 12", Problem.MISSING_REASON, "reject", "12"),
        ("reject 12    ", Problem.MISSING_REASON, "reject", "12"),
        ("approve 12 " + "x" * 1001, Problem.NOTE_TOO_LONG, "approve", "1001"),
        ("list pending", Problem.BAD_STATUS, "list", "pending"),
        ("list <!here>", Problem.BAD_STATUS, "list", "<!here>"),
        ("list ready 0", Problem.BAD_PAGE, "list", "0"),
        ("list ready two", Problem.BAD_PAGE, "list", "two"),
        ("list ready 9999999", Problem.BAD_PAGE, "list", "9999999"),
        ("list ready 2 3", Problem.EXTRA_WORDS, "list", "3"),
        ("show 12 13", Problem.EXTRA_WORDS, "show", "13"),
        ("retry 12 please", Problem.EXTRA_WORDS, "retry", "please"),
        ("history 12 13", Problem.EXTRA_WORDS, "history", "13"),
        ("stats 1y", Problem.BAD_WINDOW, "stats", "1y"),
        ("stats 7d 30d", Problem.EXTRA_WORDS, "stats", "30d"),
    ],
)
def test_refuses_with_the_reason(text: str, problem: Problem, subcommand: str | None, given: str | None) -> None:
    parsed = parse(text)
    assert isinstance(parsed, Invalid), parsed
    assert (parsed.problem, parsed.subcommand, parsed.given) == (problem, subcommand, given)


def test_a_near_miss_suggests_the_subcommand() -> None:
    assert parse("aprove 12") == Invalid(Problem.UNKNOWN_SUBCOMMAND, given="aprove", suggestion="approve")
    assert parse("hstory").suggestion == "history"  # type: ignore[union-attr]
    assert parse("zzz").suggestion is None  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "text",
    [
        "x" * 10_000,
        "show " + "9" * 10_000,
        "approve " + "a" * 10_000,
        "list " + "ready " * 2_000,
        "\u202e\u0000\ufeff show 1",
        "🙂" * 3_000,
        "stats " + "<@U1>" * 2_000,
    ],
)
def test_any_input_parses_to_something(text: str) -> None:
    assert parse(text) is not None


def test_references() -> None:
    assert parse_ref("12") == N12
    assert parse_ref("9" * 18) == Ref("9" * 18, number=int("9" * 18))
    assert parse_ref("9" * 19) == Ref("9" * 19, external_id="9" * 19)  # too big for an id: maybe theirs
    assert parse_ref("x" * 256) is None
    assert parse_ref("act one") is None
    assert parse_ref("") is None
