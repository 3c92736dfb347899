"""Modal submissions: the approval note and the rejection reason. The decision is committed
before the ack closes the modal; a refusal keeps the modal open with the reason."""

from __future__ import annotations

from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp
from slack_sdk.web.async_client import AsyncWebClient

from bot import ids, render
from bot.listeners.common import ModalContext, input_value, refusal_text, tell
from core.decide import DecisionService, Outcome, Result
from sources.base import Op
from store.models import AuditEvent


def register(app: AsyncApp, service: DecisionService) -> None:
    async def submit(
        ack: AsyncAck, body: dict[str, Any], client: AsyncWebClient, op: Op, block_id: str, input_id: str
    ) -> None:
        view = body.get("view") or {}
        user_id = str((body.get("user") or {}).get("id") or "")
        context = ModalContext.loads(view.get("private_metadata"))
        if context is None:
            await ack(response_action="errors", errors={block_id: render.unknown_action_text()})
            return
        text = input_value(view, block_id, input_id)
        if op is Op.REJECT and not (text or "").strip():
            await ack(response_action="errors", errors={block_id: "Please give a reason for rejecting."})
            return
        confirmation = input_value(view, ids.CONFIRM_BLOCK, ids.CONFIRM_INPUT)
        outcome = await service.decide(
            action_id=context.action_id,
            op=op,
            user_id=user_id,
            note=text,
            channel=context.channel,
            confirmation=confirmation,
            option_key=context.option,
        )
        if outcome.result is Result.RECORDED or _already_theirs(outcome, user_id, op):
            await ack()
        elif outcome.result is Result.ENDORSED:
            await ack()  # durable; say how many more it needs
            await tell(client, channel=context.channel, user_id=user_id, text=refusal_text(outcome))
        elif outcome.result is Result.CONFIRMATION_REQUIRED:
            await ack(
                response_action="errors", errors={ids.CONFIRM_BLOCK: render.confirmation_required_text(in_modal=True)}
            )
        else:
            await ack(response_action="errors", errors={block_id: refusal_text(outcome)[:150]})

    @app.view(ids.APPROVE_VIEW)
    async def approve(ack: AsyncAck, body: dict[str, Any], client: AsyncWebClient) -> None:
        await submit(ack, body, client, Op.APPROVE, ids.NOTE_BLOCK, ids.NOTE_INPUT)

    @app.view(ids.REJECT_VIEW)
    async def reject(ack: AsyncAck, body: dict[str, Any], client: AsyncWebClient) -> None:
        await submit(ack, body, client, Op.REJECT, ids.REASON_BLOCK, ids.REASON_INPUT)


def _already_theirs(outcome: Outcome, user_id: str, op: Op) -> bool:
    """The same person's same decision already won (a redelivered or double submission):
    close the modal as the first answer did, recording nothing more."""
    d = outcome.decision
    return (
        outcome.result is Result.NOT_POSSIBLE
        and d is not None
        and d.actor == user_id
        and d.op == op.value
        and d.event in (AuditEvent.REQUESTED.value, AuditEvent.RETRIED.value, AuditEvent.CONFIRMED.value)
    )
