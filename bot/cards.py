"""The card's read model: everything a card (or a notice showing it) displays about one
action, loaded from the store in one read and handed to the pure renderers."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from bot.render import CardView, DecisionView, WatchView
from core.decide import has_failed_guardrail
from core.lifecycle import options_for, stored_options
from policy import Policy
from sources.base import Capabilities, Op, Status
from store import hot, queries
from store.db import Database
from store.models import Action, AuditEvent, Decision, Outbox, OutboxState, Watch


def decision_view(decision: Decision | None) -> DecisionView | None:
    if decision is None or decision.at is None:
        return None
    return DecisionView(
        event=decision.event,
        op=decision.op,
        actor=decision.actor,
        note=decision.note,
        at=decision.at,
        to_status=decision.to_status,
        option=decision.option,
    )


_FOLLOWS_APPROVAL = frozenset({Status.APPROVED, Status.RUNNING, Status.SUCCEEDED})


def watch_view(watch: Watch) -> WatchView:
    return WatchView(
        position=watch.position,
        reading=watch.reading,
        detail=watch.reading_detail,
        tripped=watch.tripped,
        baseline=watch.baseline,
        active=watch.active,
        ended=watch.ended,
    )


def card_view(
    action: Action,
    decision: Decision | None,
    outbox: Outbox | None,
    caps: Capabilities,
    confirmed: Decision | None = None,
    watches: Sequence[Watch] = (),
    approvals: Sequence[str] = (),
    needed: int = 1,
    confirm_required: bool = False,
) -> CardView:
    """What a card shows. Once the upstream moves an action we approved on (to running, say),
    the card keeps crediting our approval rather than the upstream's record of it."""
    assert action.id is not None
    status = Status(action.status)
    failed = outbox is not None and outbox.state == OutboxState.FAILED.value
    decided_by_upstream = action.decided_by
    if (
        decision is not None
        and decision.event == AuditEvent.UPSTREAM.value
        and confirmed is not None
        and confirmed.op == Op.APPROVE.value
        and status in _FOLLOWS_APPROVAL
    ):
        decision, decided_by_upstream = confirmed, None
    return CardView(
        action_id=action.id,
        source=action.source,
        external_id=action.external_id,
        type=action.type,
        title=action.title,
        rationale=action.rationale,
        status=status,
        expected_impact=action.expected_impact,
        data_signals=list(action.data_signals or []),
        guardrail_checks=list(action.guardrail_checks or []),
        rollback_conditions=list(action.rollback_conditions or []),
        created_at=action.upstream_created_at,
        options=options_for(status, caps, stored_options(action.options)),
        decision=decision_view(decision),
        decided_by_upstream=decided_by_upstream,
        last_error=action.last_error,
        retry_available=failed and action.last_error is not None,
        watches=tuple(watch_view(w) for w in watches),
        approvals=tuple(approvals),
        approvals_needed=needed,
        confirm_required=confirm_required,
        details=tuple((str(f[0]), str(f[1])) for f in (action.details or {}).get("fields") or () if len(f) == 2),
        url=(action.details or {}).get("url"),
        running=(
            status.in_flight
            and outbox is not None
            and outbox.state == OutboxState.PENDING.value
            and outbox.reference is not None
        ),
        risk=action.risk,
    )


async def load_card(
    reads: hot.Reads,
    *,
    action: Action,
    caps: Capabilities,
    policy: Policy | None = None,
    latest: queries.Latest | None = None,
) -> CardView:
    """Everything the card shows, from the store (and the action's route, when given);
    ``latest``: where already read with the action (``Reads.card_shown``)."""
    assert action.id is not None
    needed = policy.required_approvals(action.type, action.risk, source=action.source) if policy is not None else 1
    confirm = (
        policy is not None
        and policy.confirm_failed_guardrails(action.type, action.risk, source=action.source)
        and has_failed_guardrail(action)
    )
    approvals: list[str] = []
    if needed > 1 and action.status == Status.READY.value:
        approvals = list(dict.fromkeys(d.actor for d in await reads.endorsements(action_id=action.id)))
    latest = latest or await reads.latest(action_id=action.id)
    watches = await reads.watches_for(action_id=action.id) if action.watch_started_at else ()
    return card_view(
        action, latest.decision, latest.outbox, caps, latest.confirmed, watches, approvals, needed, confirm
    )


class CardReader:
    """One action's card as it stands now, for a modal or an ephemeral copy."""

    def __init__(
        self, *, db: Database, capabilities: Callable[[str], Capabilities], policy: Policy | None = None
    ) -> None:
        self._db = db
        self._caps = capabilities
        self._policy = policy

    async def card(self, action_id: int) -> CardView | None:
        async def load(reads: hot.Reads) -> CardView | None:
            action = await reads.action(action_id=action_id)
            if action is None:
                return None
            return await load_card(reads, action=action, caps=self._caps(action.source), policy=self._policy)

        return await self._db.hot.read(load)

    async def for_modal(self, action: Action) -> CardView:
        """What the approve and reject modals show, from the action row a click already read:
        the store is read again only for a route that needs several approvers."""
        assert action.id is not None
        policy = self._policy
        needed = policy.required_approvals(action.type, action.risk, source=action.source) if policy else 1
        approvals: list[str] = []
        if needed > 1 and action.status == Status.READY.value:
            action_id = action.id
            endorsed = await self._db.hot.read(lambda reads: reads.endorsements(action_id=action_id))
            approvals = list(dict.fromkeys(d.actor for d in endorsed))
        confirm = (
            policy is not None
            and policy.confirm_failed_guardrails(action.type, action.risk, source=action.source)
            and has_failed_guardrail(action)
        )
        return card_view(
            action, None, None, self._caps(action.source), approvals=approvals, needed=needed, confirm_required=confirm
        )
