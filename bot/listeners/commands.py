"""The ``/signoff`` slash command: parse, authorize, ask the command service, render, ack.

Every answer is the ack itself (ephemeral), within Slack's 3 seconds; a decision is committed
before that ack. Whatever is typed, the answer is a helpful message, never an error page.
Card links come from ``chat.getPermalink`` (cached; a link built from the channel and the
message ts stands in when Slack is slow or refuses).
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import replace
from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient
from sqlalchemy.exc import DBAPIError

from bot import commands as cmd
from bot import render_commands as render
from bot.cards import decision_view
from bot.command_service import CardPlace, CommandService, Lookup, action_line
from bot.listeners.common import refusal_text
from core.decide import Outcome, Result
from sources.base import Op

log = logging.getLogger(__name__)

PERMALINK_WAIT_SECONDS = 1.0  # the whole answer must reach Slack within 3 s
PERMALINK_CACHE = 2000


def register(app: AsyncApp, service: CommandService) -> None:
    links = Permalinks()

    @app.command(cmd.COMMAND)
    async def signoff(ack: AsyncAck, command: dict[str, Any], client: AsyncWebClient) -> None:
        try:
            reply = await answer(service, links, client, command)
            blocks = [b.to_dict() for b in reply.blocks]  # checks Block Kit limits before Slack does
        except DBAPIError as e:
            log.error("store unavailable while answering %s: %s", cmd.COMMAND, type(e).__name__)
            reply = render.store_unavailable_reply()
            blocks = [b.to_dict() for b in reply.blocks]
        except Exception:  # noqa: BLE001 - whatever went wrong, the person gets an answer, not a 500
            log.exception("could not answer %s", cmd.COMMAND)
            reply = render.failure_reply()
            blocks = [b.to_dict() for b in reply.blocks]
        await ack(text=reply.text, blocks=blocks or None, response_type="ephemeral")


async def answer(
    service: CommandService, links: Permalinks, client: AsyncWebClient, command: dict[str, Any]
) -> render.Reply:
    user_id = str(command.get("user_id") or "")
    channel = command.get("channel_id") or None
    parsed = cmd.parse(str(command.get("text") or ""))
    if isinstance(parsed, cmd.Help):
        return render.help_reply()
    if isinstance(parsed, cmd.Invalid):
        return render.invalid_reply(parsed)
    if isinstance(parsed, (cmd.Decide, cmd.Retry)):
        return await _decide(service, parsed, user_id, channel)
    refused = await service.authorize(user_id)
    if refused is not None:
        return render.refused_reply(refusal_text(Outcome(refused)))
    match parsed:
        case cmd.ListActions(status=status, page=page):
            listing = await service.list_actions(status=status, page=page)
            found = await links.get(client, listing.cards.values())
            items = [
                replace(i, link=found[listing.cards[i.action_id]]) if i.action_id in listing.cards else i
                for i in listing.view.items
            ]
            return render.list_reply(replace(listing.view, items=items))
        case cmd.Show(ref=ref):
            shown = await service.show(ref)
            if shown.card is None:
                return _not_found(ref, shown.lookup)
            return render.show_reply(shown.card, await links.one(client, shown.place))
        case cmd.History(ref=None):
            return render.latest_reply(await service.latest())
        case cmd.History(ref=ref) if ref is not None:
            trail = await service.history(ref)
            if trail.lookup.action is None:
                return _not_found(ref, trail.lookup)
            link = await links.one(client, trail.place)
            return render.history_reply(action_line(trail.lookup.action, link), trail.lines)
        case cmd.Stats(days=days):
            return render.stats_reply(await service.stats(days=days))
        case cmd.Track(source=source, ids=ids):
            tracked = await service.track(source=source, ids=ids)
            if tracked.action_id is None:
                return render.track_failed_reply(source, tracked.problem or "unknown problem")
            return render.tracked_reply(
                source, tracked.external_id, tracked.action_id, created=tracked.created, carded=tracked.carded
            )
    return render.help_reply()


async def _decide(
    service: CommandService, parsed: cmd.Decide | cmd.Retry, user_id: str, channel: str | None
) -> render.Reply:
    """A decision or a retry: authorized by the decision service itself, as a click is."""
    if isinstance(parsed, cmd.Decide):
        op: Op | None = parsed.op
        decided = await service.decide(ref=parsed.ref, op=parsed.op, user_id=user_id, note=parsed.note, channel=channel)
    else:
        op = None
        decided = await service.retry(ref=parsed.ref, user_id=user_id)
    if decided.outcome is None:
        # No such action: only approvers learn that much.
        refused = await service.authorize(user_id)
        if refused is not None:
            return render.refused_reply(refusal_text(Outcome(refused)))
        return _not_found(parsed.ref, decided.lookup)
    return _decision_reply(decided.outcome, decided.lookup, op)


def _not_found(ref: cmd.Ref, lookup: Lookup) -> render.Reply:
    if lookup.sources:
        return render.ambiguous_action_reply(ref.external_id or ref.text, lookup.sources)
    return render.unknown_action_reply(ref.text)


def _decision_reply(outcome: Outcome, lookup: Lookup, op: Op | None) -> render.Reply:
    """What a decision (``op``) or a retry (None) came to."""
    action = outcome.action or lookup.action
    assert action is not None
    line = action_line(action)
    match outcome.result:
        case Result.RECORDED if op is None:
            retried = outcome.decision.op if outcome.decision is not None else None
            return render.retried_reply(line, Op(retried) if retried in {o.value for o in Op} else None)
        case Result.RECORDED:
            assert op is not None
            return render.decided_reply(line, op)
        case Result.NOT_POSSIBLE if op is None:
            return render.not_retryable_reply(line)
        case Result.NOT_POSSIBLE:
            assert op is not None
            return render.not_possible_reply(line, op, decision_view(outcome.decision))
        case Result.UNSUPPORTED:
            return render.unsupported_reply(line, op or Op.APPROVE)
        case Result.UNKNOWN_ACTION:
            return render.unknown_action_reply(str(action.id))
    return render.refused_reply(refusal_text(outcome))


class Permalinks:
    """Links to cards, from ``chat.getPermalink``; a card's link never changes, so they are
    kept (a bounded number). Lookups that Slack does not answer in time get a built link."""

    def __init__(self, *, wait: float = PERMALINK_WAIT_SECONDS, size: int = PERMALINK_CACHE) -> None:
        self._wait = wait
        self._size = size
        self._known: OrderedDict[CardPlace, str] = OrderedDict()

    async def one(self, client: AsyncWebClient, place: CardPlace | None) -> str | None:
        if place is None:
            return None
        return (await self.get(client, [place])).get(place)

    async def get(self, client: AsyncWebClient, places: Iterable[CardPlace]) -> dict[CardPlace, str]:
        wanted = list(dict.fromkeys(places))
        missing = [p for p in wanted if p not in self._known]
        if missing:
            tasks = {p: asyncio.ensure_future(self._fetch(client, p)) for p in missing}
            _done, pending = await asyncio.wait(tasks.values(), timeout=self._wait)
            for task in pending:
                task.cancel()
            for place, task in tasks.items():
                link = task.result() if task.done() and not task.cancelled() else None
                if link:
                    self._remember(place, link)
        return {p: self._known.get(p) or built_link(p) for p in wanted}

    async def _fetch(self, client: AsyncWebClient, place: CardPlace) -> str | None:
        channel, ts = place
        try:
            response = await client.chat_getPermalink(channel=channel, message_ts=ts)
        except SlackApiError as e:
            log.warning("chat.getPermalink for %s/%s failed: %s", channel, ts, e.response.get("error"))
            return None
        except Exception as e:  # noqa: BLE001 - a link is a nicety; the answer goes out without it
            log.warning("chat.getPermalink for %s/%s failed: %s", channel, ts, type(e).__name__)
            return None
        link = response.get("permalink")
        return link if isinstance(link, str) and link.startswith("https://") else None

    def _remember(self, place: CardPlace, link: str) -> None:
        self._known[place] = link
        self._known.move_to_end(place)
        while len(self._known) > self._size:
            self._known.popitem(last=False)


def built_link(place: CardPlace) -> str:
    """A message link made from its channel and ts (Slack redirects it into the workspace)."""
    channel, ts = place
    return f"https://slack.com/archives/{channel}/p{ts.replace('.', '')}"
