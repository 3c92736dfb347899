"""Button clicks on a card: Approve and Reject open a modal; Rollback (behind Slack's own
confirmation) and Retry decide at once. Nothing is trusted from the payload: the store says
which action a card shows and the approver list says who may decide."""

from __future__ import annotations

import logging
from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot import ids, render
from bot.cards import CardReader
from bot.listeners.common import Click, ModalContext, parse_click, refusal_text, tell_clicker
from core.decide import DecisionService, Result
from sources.base import Op
from store.models import Action

log = logging.getLogger(__name__)


def register(app: AsyncApp, service: DecisionService, cards: CardReader) -> None:
    async def open_modal(
        ack: AsyncAck, body: dict[str, Any], client: AsyncWebClient, op: Op, option: str | None = None
    ) -> None:
        click = parse_click(body)
        action = await _admit(ack, client, service, click, op, option)
        if action is None:
            return
        await ack()
        assert click.action_id is not None
        if not click.trigger_id:
            return
        card = await cards.for_modal(action)
        context = ModalContext(click.action_id, click.channel, click.ts, option).dumps()
        modal = render.approve_modal(card, context) if op is Op.APPROVE else render.reject_modal(card, context)
        await client.views_open(trigger_id=click.trigger_id, view=modal)

    @app.action(ids.APPROVE)
    async def approve(ack: AsyncAck, body: dict[str, Any], client: AsyncWebClient) -> None:
        await open_modal(ack, body, client, Op.APPROVE)

    @app.action(ids.REJECT)
    async def reject(ack: AsyncAck, body: dict[str, Any], client: AsyncWebClient) -> None:
        await open_modal(ack, body, client, Op.REJECT)

    async def decide_now(
        ack: AsyncAck, body: dict[str, Any], client: AsyncWebClient, op: Op, option: str | None = None
    ) -> None:
        click = parse_click(body)
        if await _admit(ack, client, service, click, op, option) is None:
            return
        assert click.action_id is not None
        outcome = await service.decide(
            action_id=click.action_id,
            op=op,
            user_id=click.user_id,
            note=None,
            channel=click.channel,
            option_key=option,
        )
        await ack()  # only now: the decision is committed (or refused)
        if outcome.result is not Result.RECORDED:
            await tell_clicker(client, click, refusal_text(outcome))

    @app.action(ids.ROLLBACK)
    async def rollback(ack: AsyncAck, body: dict[str, Any], client: AsyncWebClient) -> None:
        await decide_now(ack, body, client, Op.ROLLBACK)

    async def named_option(ack: AsyncAck, body: dict[str, Any], client: AsyncWebClient) -> None:
        """A source's own named option: approve- and reject-like ones through their modals,
        any other decided at once (behind Slack's confirmation; the core checks the key
        against what the action offers)."""
        kind, key = ids.parse_option_action_id(parse_click(body).control) or (None, "")
        op = Op(kind) if kind else Op.OTHER
        if op in (Op.APPROVE, Op.REJECT):
            await open_modal(ack, body, client, op, key)
        else:
            await decide_now(ack, body, client, op, key)

    @app.action(ids.OPTION_PATTERN)
    async def option(ack: AsyncAck, body: dict[str, Any], client: AsyncWebClient) -> None:
        await named_option(ack, body, client)

    @app.action(ids.OVERFLOW)
    async def overflow(ack: AsyncAck, body: dict[str, Any], client: AsyncWebClient) -> None:
        """An option picked from a card's overflow menu: as if its own button was clicked."""
        await named_option(ack, body, client)

    @app.action(ids.OPEN_CARD)
    async def open_card(ack: AsyncAck, body: dict[str, Any], client: AsyncWebClient) -> None:
        """From a digest: show the action's full card (with its buttons) to the clicker."""
        click = parse_click(body)
        if await _admit(ack, client, service, click, None) is None:
            return
        await ack()
        assert click.action_id is not None
        card = await cards.card(click.action_id)
        if card is None or not click.channel:
            return
        try:
            await client.chat_postEphemeral(
                channel=click.channel, user=click.user_id, text=render.card_text(card), blocks=render.card_blocks(card)
            )
        except SlackApiError as e:
            log.warning("could not show action %s to %s: %s", click.action_id, click.user_id, e.response.get("error"))

    @app.action(ids.RETRY)
    async def retry(ack: AsyncAck, body: dict[str, Any], client: AsyncWebClient) -> None:
        click = parse_click(body)
        if await _admit(ack, client, service, click, None) is None:
            return
        assert click.action_id is not None
        outcome = await service.retry(action_id=click.action_id, user_id=click.user_id)
        await ack()
        if outcome.result is not Result.RECORDED:
            await tell_clicker(client, click, refusal_text(outcome))


async def _admit(
    ack: AsyncAck,
    client: AsyncWebClient,
    service: DecisionService,
    click: Click,
    op: Op | None,
    option: str | None = None,
) -> Action | None:
    """Refuse (ack and explain) a click that may not go further; the action (as the check
    read it) if it may."""
    if click.action_id is None:
        await ack()
        await tell_clicker(client, click, render.unknown_action_text())
        return None
    outcome = await service.check_click(
        user_id=click.user_id,
        action_id=click.action_id,
        channel=click.channel,
        ts=click.ts,
        op=op,
        option_key=option,
    )
    if outcome.result is Result.RECORDED and outcome.action is not None:
        return outcome.action
    await ack()
    await tell_clicker(client, click, refusal_text(outcome))
    return None
