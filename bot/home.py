"""The App Home tab: what a viewer sees when they open Signoff's Home, kept current.

``HomeService.opened`` (the ``app_home_opened`` listener) records the open and publishes the
viewer's Home. ``refresh`` (a job ``app.py`` schedules, and kicks when an action changes)
republishes the Home of everyone who opened theirs within ``HOME_WINDOW`` whose content
changed. What changed is told by a fingerprint of the content, kept in ``homes``: the part
every viewer shares (the ready queue, the actions under watch) is read and hashed once per
run, and only a viewer whose fingerprint moved is rendered and published.

Several replicas may refresh at once: a Home is then at worst published twice
(``views.publish`` replaces the whole view), and a fingerprint is saved only over the one its
publisher read, so two racing publishes leave the next run to publish again rather than a
stale Home marked current. Slack errors are logged with their code and never raised: a
rate limit is waited out by the client's retry handler; a transient error leaves the
fingerprint as it was, so the next run tries again.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import timedelta

import aiohttp
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.web.async_client import AsyncWebClient
from sqlalchemy.exc import DBAPIError

from bot import render_home
from bot.auth import ApproverCheck, Verdict, names_requester
from bot.render import WatchView
from bot.render_home import Access, DecisionItem, HomeView, ReadyItem, WatchedItem, WatchLine
from core.clock import Clock, utc_now
from core.lifecycle import options_for, stored_options
from core.people import ApproversFor
from sources.base import Capabilities, Status
from store import home as store
from store.db import Database

log = logging.getLogger(__name__)

HOME_WINDOW = timedelta(days=7)  # whose Home the refresh keeps current: opened within this
# Part of every fingerprint: change it when the layout changes, so every Home is republished.
LAYOUT = "home/1"
# Slack errors worth trying again on the next run (nothing about the view itself).
_TRANSIENT = frozenset({"ratelimited", "internal_error", "fatal_error", "service_unavailable", "request_timeout"})


@dataclass(frozen=True)
class Shared:
    """What every viewer's Home shows alike, read and hashed once per refresh run."""

    ready: tuple[ReadyItem, ...]
    ready_total: int
    watched: tuple[WatchedItem, ...]
    watched_total: int
    ready_digest: str
    watched_digest: str
    requested_by: tuple[tuple[int, str], ...]  # (action id, requester) of the ready page, where named

    @property
    def any_email_requester(self) -> bool:
        return any("@" in requester for _, requester in self.requested_by)


def _slack_error(e: SlackApiError) -> tuple[str, int]:
    """Slack's error code and the HTTP status of a refused call."""
    response = e.response
    data = response.get("error") if hasattr(response, "get") else None
    status = getattr(response, "status_code", None) or getattr(response, "status", None) or 200
    return str(data or f"HTTP {status}"), int(status)


def _digest(*parts: object) -> str:
    return hashlib.sha256(repr(parts).encode("utf-8")).hexdigest()


def _ready_item(row: store.ReadyRow, caps: Capabilities) -> ReadyItem:
    return ReadyItem(
        action_id=row.id,
        version=row.version,
        source=row.source,
        external_id=row.external_id,
        type=row.type,
        title=row.title,
        created_at=row.created_at,
        expected_impact=row.expected_impact,
        guardrail_checks=tuple(row.guardrail_checks or ()),
        risk=row.risk,
        options=options_for(Status.READY, caps, stored_options(row.options)),
    )


def _watched_item(row: store.WatchedRow) -> WatchedItem:
    return WatchedItem(
        action_id=row.id,
        version=row.version,
        source=row.source,
        title=row.title,
        status=Status(row.status),
        watches=tuple(
            WatchLine(
                condition=w.condition,
                watch=WatchView(
                    position=w.position,
                    reading=w.reading,
                    detail=w.detail,
                    tripped=w.tripped,
                    baseline=w.baseline,
                    active=w.active,
                    ended=w.ended,
                ),
            )
            for w in row.watches
        ),
    )


def _decision_item(row: store.DecisionRow) -> DecisionItem:
    return DecisionItem(
        decision_id=row.id,
        action_id=row.action_id,
        op=row.op,
        note=row.note,
        at=row.at,
        title=row.title,
        source=row.source,
        status=Status(row.status),
    )


@dataclass(frozen=True)
class Viewer:
    """What only this viewer's Home depends on."""

    user_id: str
    access: Access
    own: frozenset[int]  # ready actions (of the page shown) they requested themselves
    decisions: tuple[DecisionItem, ...]
    others: frozenset[int] = frozenset()  # ready actions whose route names other approvers


class HomeService:
    def __init__(
        self,
        *,
        db: Database,
        slack: AsyncWebClient,
        approvers: ApproverCheck,
        capabilities: Callable[[str], Capabilities],
        channel: str,
        clock: Clock = utc_now,
        window: timedelta = HOME_WINDOW,
        publishes_at_once: int = 4,
        approvers_for: ApproversFor | None = None,
    ) -> None:
        self._approvers_for = approvers_for
        self._db = db
        self._slack = slack
        self._approvers = approvers
        self._caps = capabilities
        self._channel = channel
        self._clock = clock
        self._window = window
        self._publishes_at_once = publishes_at_once

    # ---- reading -------------------------------------------------------------------------

    async def _shared(self) -> Shared:
        async with self._db.read() as session:
            ready_rows, ready_total = await store.ready_queue(session, limit=render_home.READY_SHOWN)
            watched_rows, watched_total = await store.watched_actions(session, limit=render_home.WATCHED_SHOWN)
        ready = tuple(_ready_item(r, self._caps(r.source)) for r in ready_rows)
        watched = tuple(_watched_item(r) for r in watched_rows)
        return Shared(
            ready=ready,
            ready_total=ready_total,
            watched=watched,
            watched_total=watched_total,
            ready_digest=_digest(ready, ready_total),
            watched_digest=_digest(watched, watched_total),
            requested_by=tuple(
                (r.id, (r.requested_by or "").strip()) for r in ready_rows if (r.requested_by or "").strip()
            ),
        )

    async def _decisions(self, user_ids: Sequence[str]) -> dict[str, tuple[DecisionItem, ...]]:
        async with self._db.read() as session:
            rows = await store.recent_decisions(session, user_ids=user_ids, limit=render_home.DECISIONS_SHOWN)
        return {user: tuple(_decision_item(r) for r in found) for user, found in rows.items()}

    async def _routed(self, user_id: str, shared: Shared) -> tuple[set[int], set[int]]:
        """Of the shown ready actions whose route names its own approvers: those the viewer
        may decide, and those they may not (the click would be refused, so no buttons)."""
        allowed: set[int] = set()
        others: set[int] = set()
        if self._approvers_for is None:
            return allowed, others
        for item in shared.ready:
            approvers = self._approvers_for(item.type, item.risk, source=item.source)
            if approvers is self._approvers.default:
                continue  # APPROVERS: the viewer's overall access says
            if await self._approvers.check(user_id, approvers) is Verdict.ALLOWED:
                allowed.add(item.action_id)
            else:
                others.add(item.action_id)
        return allowed, others

    async def _viewer(self, user_id: str, shared: Shared, decisions: tuple[DecisionItem, ...]) -> Viewer:
        verdict = await self._approvers.check(user_id)
        routed_allowed, routed_others = await self._routed(user_id, shared)
        if verdict is not Verdict.ALLOWED and routed_allowed:
            verdict = Verdict.ALLOWED  # an approver of some routes only: the rest are marked
            routed_others |= {i.action_id for i in shared.ready} - routed_allowed
        access = {
            Verdict.ALLOWED: Access.APPROVER,
            Verdict.UNKNOWN: Access.UNKNOWN,
        }.get(verdict, Access.NOT_APPROVER)
        own: set[int] = set()
        if access is not Access.NOT_APPROVER and shared.requested_by:
            email: str | None = None
            if shared.any_email_requester:
                email = await self._approvers.email(user_id)
            own = {
                action_id for action_id, requester in shared.requested_by if names_requester(requester, user_id, email)
            }
        return Viewer(
            user_id=user_id, access=access, own=frozenset(own), decisions=decisions, others=frozenset(routed_others)
        )

    def _fingerprint(self, shared: Shared, viewer: Viewer) -> str:
        if viewer.access is Access.NOT_APPROVER:
            ready: tuple[object, ...] = (shared.ready_total,)
        else:
            ready = (shared.ready_digest, tuple(sorted(viewer.own)), tuple(sorted(viewer.others)))
        return _digest(LAYOUT, self._channel, viewer.access.value, ready, shared.watched_digest, viewer.decisions)

    def _view(self, shared: Shared, viewer: Viewer) -> HomeView:
        ready = tuple(
            replace(item, own=item.action_id in viewer.own, others=item.action_id in viewer.others)
            for item in shared.ready
        )
        return HomeView(
            user_id=viewer.user_id,
            access=viewer.access,
            channel=self._channel,
            ready=ready,
            ready_total=shared.ready_total,
            decisions=viewer.decisions,
            watched=shared.watched,
            watched_total=shared.watched_total,
        )

    # ---- publishing ----------------------------------------------------------------------

    async def _publish(self, shared: Shared, viewer: Viewer, previous: str | None, fingerprint: str) -> bool:
        """Publish one Home and record its fingerprint. False (logged) when it is to be tried
        again on the next refresh; a view Slack refused for good is recorded as published, so
        the same content is not sent again every run (a change, or opening the Home, retries)."""
        view = render_home.home_view(self._view(shared, viewer))
        try:
            await self._slack.views_publish(user_id=viewer.user_id, view=view)
        except SlackApiError as e:
            error, status = _slack_error(e)
            if error in _TRANSIENT or status >= 500:
                log.warning(
                    "could not publish the Home of %s (%s); trying again on the next refresh", viewer.user_id, error
                )
                return False
            # Publishing the same content again would be refused again: wait for a change.
            log.error("Slack refused the Home of %s: %s", viewer.user_id, error)
        except (TimeoutError, SlackClientError, aiohttp.ClientError) as e:
            log.warning("could not reach Slack to publish the Home of %s (%s)", viewer.user_id, type(e).__name__)
            return False
        async with self._db.write() as session:
            await store.save_fingerprint(
                session, user_id=viewer.user_id, previous=previous, fingerprint=fingerprint, now=self._clock()
            )
        return True

    async def publish(self, user_id: str, *, previous: str | None = None) -> bool:
        """Build the viewer's Home from the store and publish it with ``views.publish``."""
        shared = await self._shared()
        decisions = (await self._decisions([user_id])).get(user_id, ())
        viewer = await self._viewer(user_id, shared, decisions)
        return await self._publish(shared, viewer, previous, self._fingerprint(shared, viewer))

    async def opened(self, user_id: str) -> None:
        """The user opened their Home tab: remember them (the refresh keeps their Home
        current for a while) and publish it now. Never raises: a failure is logged."""
        try:
            async with self._db.write() as session:
                previous = await store.record_open(session, user_id=user_id, now=self._clock())
            await self.publish(user_id, previous=previous)
        except DBAPIError as e:
            log.error("store unavailable while publishing the Home of %s: %s", user_id, type(e).__name__)
        except (TimeoutError, SlackClientError, aiohttp.ClientError) as e:
            log.warning("could not check %s for their Home (%s)", user_id, type(e).__name__)

    async def refresh(self) -> int:
        """Republish the Home of each recent viewer whose content changed; returns how many
        were handled (published, or refused for good)."""
        async with self._db.read() as session:
            homes = await store.recent_homes(session, since=self._clock() - self._window)
        if not homes:
            return 0
        shared = await self._shared()
        decisions = await self._decisions([h.user_id for h in homes])
        limit = asyncio.Semaphore(self._publishes_at_once)
        published = 0

        async def one(row: store.HomeRow) -> None:
            nonlocal published
            async with limit:
                try:
                    viewer = await self._viewer(row.user_id, shared, decisions.get(row.user_id, ()))
                except (TimeoutError, SlackClientError, aiohttp.ClientError) as e:
                    # Not the approver check's own failures (those are a verdict): Slack unreachable.
                    log.warning("could not check %s for their Home (%s)", row.user_id, type(e).__name__)
                    return
                fingerprint = self._fingerprint(shared, viewer)
                if fingerprint == row.fingerprint:
                    return
                if await self._publish(shared, viewer, row.fingerprint, fingerprint):
                    published += 1

        await asyncio.gather(*(one(row) for row in homes))
        return published


async def refresh(service: HomeService) -> int:
    """The scheduled job: ``app.py`` runs it every ``HOMES_INTERVAL_SECONDS`` and when kicked."""
    try:
        return await service.refresh()
    except DBAPIError as e:
        log.error("store unavailable while refreshing Homes: %s", type(e).__name__)
        return 0
