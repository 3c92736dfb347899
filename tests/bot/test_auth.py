"""Approver checks: users, groups (cached briefly, refreshed after the TTL), fail closed."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from slack_sdk.web.async_client import AsyncWebClient

from bot.auth import ApproverCheck, Verdict
from settings import Approvers
from tests.fakes.slack_api import FakeSlack


@pytest.fixture
async def fake() -> AsyncIterator[FakeSlack]:
    slack = FakeSlack()
    await slack.start()
    slack.add_usergroup("S0LEADS", ["U0LEAD"])
    yield slack
    await slack.stop()


async def test_users_groups_and_cache(fake: FakeSlack) -> None:
    now = [0.0]
    check = ApproverCheck(
        Approvers(["U0ONE", "S0LEADS"]), AsyncWebClient(token="xoxb-test-token", base_url=fake.api_url),
        ttl_seconds=60, clock=lambda: now[0],
    )
    assert await check.check("U0ONE") is Verdict.ALLOWED
    assert await check.check("U0LEAD") is Verdict.ALLOWED
    assert await check.check("U0NOPE") is Verdict.DENIED
    assert len(fake.calls_to("usergroups.users.list")) == 1  # cached
    fake.add_usergroup("S0LEADS", ["U0NEW"])
    assert await check.check("U0NEW") is Verdict.DENIED  # still cached
    now[0] = 61
    assert await check.check("U0NEW") is Verdict.ALLOWED
    assert await check.check("U0LEAD") is Verdict.DENIED  # left the group
    assert len(fake.calls_to("usergroups.users.list")) == 2


async def test_unresolvable_group_fails_closed(fake: FakeSlack) -> None:
    check = ApproverCheck(Approvers(["S0GONE"]), AsyncWebClient(token="xoxb-test-token", base_url=fake.api_url))
    assert await check.check("U0ANY") is Verdict.UNKNOWN


async def test_everyone() -> None:
    check = ApproverCheck(Approvers(["*"]), AsyncWebClient(token="xoxb-unused", base_url="http://127.0.0.1:9/"))
    assert await check.check("U0ANYONE") is Verdict.ALLOWED


def test_the_requester_is_named_by_user_id_or_by_email_never_by_nothing() -> None:
    from bot.auth import names_requester

    assert names_requester("U1", "U1", None)
    assert names_requester(" U1 ", "U1", None)
    assert names_requester("Ana@Example.com", "U1", "ana@example.com")
    assert not names_requester("ana@example.com", "U1", None)  # email unknown: not a match
    assert not names_requester("bob@example.com", "U1", "ana@example.com")
    assert not names_requester("U2", "U1", "ana@example.com")
    assert not names_requester("", "U1", "")
    assert not names_requester(None, "U1", None)
