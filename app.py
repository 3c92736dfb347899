"""Signoff's entry point and only composition root.

``python app.py`` reads the settings, builds the store, the clients, the scheduler and the
web server, and owns their lifecycle: ``Signoff.start()`` and ``Signoff.stop()`` are the one
place where anything starts or stops. ``python app.py migrate`` applies the pending schema
migrations and exits; ``python app.py manifest --url URL`` prints the Slack app manifest for
that address; ``python app.py demo`` runs the same bot against the sandbox (a local Slack-like
page and Signoff's own Actions API, no settings, no network); ``python app.py --help`` lists the
commands.
"""

from __future__ import annotations

import asyncio
import contextvars
import gc
import hmac
import logging
import os
import re
import signal
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from importlib import resources
from pathlib import Path

import aiohttp
from aiohttp import web
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from pydantic import SecretStr, ValidationError
from slack_bolt.async_app import AsyncApp
from slack_bolt.logger.messages import warning_client_prioritized_and_token_skipped
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient
from sqlalchemy.engine import make_url

from api import actions as actions_api
from api import intake
from api.client import SignoffClient
from bot import home, jobs, listeners
from bot.auth import ApproverCheck
from bot.cards import CardReader
from bot.command_service import CommandService
from bot.health import (
    CountedRateLimitRetries,
    Health,
    QuietWhileReported,
    TrackedSlackClient,
    TrackedSource,
    slack_refusal,
    source_refused,
)
from bot.jobs import CardUpdater, JobContext, SlackNotifier
from bot.web import AckPaths, TimedSocketModeHandler, slack_events
from core import ingest, logs, refresh, reminders, watch
from core.clock import Clock, utc_now
from core.decide import DecisionService
from core.deliver import Deliverer, DeliveryContext, RetryPolicy, deliver_outbox
from core.events import Events, Foreground
from core.ingest import IngestContext
from core.metrics import CONTENT_TYPE, Metrics
from core.people import Approvers
from core.registry import Registered, SourceRegistry
from core.reminders import ReminderContext
from core.watch import WatchContext
from policy import Policy, PolicyError, Timings, load_policy
from sandbox import seeds, workspace
from sandbox.server import Sandbox
from sandbox.slack_api import LocalSlack
from settings import CodeSettings, DatabaseSettings, Settings, describe_errors, parse_api_keys
from sources.base import SourceError
from sources.fieldkit import FieldkitSource
from sources.flokit import FloKitSource
from sources.flowdash import FlowdashSource
from sources.metrics import HttpMetrics, MetricsProvider
from sources.signoff import SignoffSource
from store import reports
from store.db import Database, SchemaError

log = logging.getLogger("signoff")

MAX_REQUEST_BYTES = 1024 * 1024  # Slack's payloads are far smaller; larger bodies get a 413
OUTBOX_INTERVAL_SECONDS = 1.0
CARDS_INTERVAL_SECONDS = 5.0
NOTICES_INTERVAL_SECONDS = 5.0
HOMES_INTERVAL_SECONDS = 10.0  # App Home refresh: cheap when nothing changed (one fingerprint per viewer)
REMINDERS_INTERVAL_SECONDS = 60.0
REFRESH_INTERVAL_SECONDS = 2.0
CALLBACKS_INTERVAL_SECONDS = 2.0  # callbacks owed to API clients; kicked by each change
API_EXPIRY_INTERVAL_SECONDS = 5.0  # looks for open actions of unlisted sources due a read (each has its own backoff)
WATCH_TICK_SECONDS = 60.0  # the watch job looks for due rules this often (or each interval, if shorter)
STOP_GRACE_SECONDS = 20.0
# Jobs that every change kicks but that need not run for each: at most one run this often.
KICK_GAP_SECONDS = {"homes": 1.0, "watch": 1.0}
SLACK_TIMEOUT_SECONDS = 10
# /readyz asks the store, Slack and each source; one answer serves the probes of this long,
# and no single check waits longer than READY_TIMEOUT_SECONDS.
READY_CACHE_SECONDS = 5.0
READY_TIMEOUT_SECONDS = 5.0


def _seconds(value: float | None) -> timedelta | None:
    return timedelta(seconds=value) if value is not None else None


def _not_ready_reason(error: Exception) -> str:
    """Why a part did not answer, in words that never carry a secret."""
    if isinstance(error, SlackApiError):
        return f"Slack answered {error.response.get('error')}" if error.response is not None else "Slack failed"
    if isinstance(error, SourceError):
        return f"HTTP {error.status}" if error.status is not None else "unreachable"
    if isinstance(error, asyncio.TimeoutError | TimeoutError):
        return "no answer in time"
    if isinstance(error, RuntimeError) and str(error) in ("scheduler not running", "socket mode not connected"):
        return str(error)
    return f"unreachable ({type(error).__name__})"


class StartupError(Exception):
    """Signoff cannot start as configured; the message says why."""


def _our_loggers() -> list[str]:
    """Signoff's own loggers (whose per-retry lines about a reported refusal are dropped)."""
    prefixes = ("api.", "bot.", "core.", "sources.", "signoff")
    return [name for name in list(logging.root.manager.loggerDict) if name.startswith(prefixes)]


class _NotBoltsTokenWarning(logging.Filter):
    """Bolt reads SLACK_BOT_TOKEN from the environment itself and, given our client too (built
    from that same setting), warns that the token "will be unused" on every start. Nothing is
    unused: the client carries it."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() != warning_client_prioritized_and_token_skipped()


def _bolt_logger() -> logging.Logger:
    logger = logging.getLogger("signoff.bolt")
    if not any(isinstance(f, _NotBoltsTokenWarning) for f in logger.filters):
        logger.addFilter(_NotBoltsTokenWarning())
    return logger


class Job:
    """A scheduled job that never overlaps itself and can be asked to run now.

    A kick while it runs makes it run once more when it finishes, so no wake-up is lost.
    """

    def __init__(
        self, scheduler: AsyncIOScheduler, name: str, fn: Callable[[], Awaitable[object]], *, min_gap: float = 0.0
    ) -> None:
        self._scheduler = scheduler
        self.name = name
        self._fn = fn
        self._running: asyncio.Task[None] | None = None
        self._again = False
        # Kicks coalesce: a run starts at most this often (a burst of decisions asks for one
        # App Home refresh, not one each). The interval runs are unaffected.
        self._min_gap = timedelta(seconds=min_gap)
        self._started: datetime | None = None
        # The earliest run a kick asked for that has not started yet: a later kick asking for
        # the same run (or a later one) has nothing to change.
        self._woken_for: datetime | None = None

    async def run(self) -> None:
        if self._running is not None:
            self._again = True
            return
        self._running = asyncio.current_task()
        self._started = datetime.now(timezone.utc)
        self._woken_for = None
        try:
            while True:
                self._again = False
                await self._fn()
                if not self._again:
                    return
        finally:
            self._running = None

    def kick(self) -> None:
        now = datetime.now(timezone.utc)
        if self._min_gap and self._started is not None and now < self._started + self._min_gap:
            self._reschedule(self._started + self._min_gap)
        elif self._running is not None:
            self._again = True
        else:
            self._reschedule(now)

    def _reschedule(self, at: datetime) -> None:
        if self._woken_for is not None and self._woken_for <= at:
            return  # a run at least as early is already due (a burst of decisions asks once)
        if self._scheduler.running and self._scheduler.get_job(self.name):
            self._woken_for = at
            # In an empty context: the run it wakes is not the kicking request's work (nor
            # counted in its ack-path tally).
            contextvars.Context().run(self._scheduler.modify_job, self.name, next_run_time=at)

    async def wait_idle(self) -> None:
        task = self._running
        if task is not None and task is not asyncio.current_task():
            await asyncio.wait({task})


class Signoff:
    """The running bot: everything built from one ``Settings``."""

    def __init__(
        self,
        settings: Settings,
        *,
        retry: RetryPolicy | None = None,
        clock: Clock = utc_now,
        extra_sources: Callable[[aiohttp.ClientSession], Iterable[Registered]] | None = None,
    ) -> None:
        """``extra_sources`` registers sources beyond those the settings turn on, each built
        on the bot's HTTP session (a test's toy source, say)."""
        self.settings = settings
        self._extra_sources = extra_sources
        defaults = Timings(
            remind_after=_seconds(settings.remind_after_seconds),
            escalate_after=_seconds(settings.escalate_after_seconds),
            expire_after=_seconds(settings.expire_after_seconds),
            escalation_channel=settings.escalation_channel,
        )
        try:
            self.policy: Policy = load_policy(
                settings.signoff_config, auto_rollback=settings.auto_rollback, defaults=defaults
            )
        except PolicyError as e:
            raise StartupError(str(e)) from e
        self._default_approvers = settings.approver_set
        self._route_approvers = {
            i: Approvers(list(r.approvers)) for i, r in enumerate(self.policy.routes) if r.approvers is not None
        }
        self.db = Database(settings.database_url)
        self.catalog = {t.action_type: t for t in self.policy.action_types}  # Signoff's own API's types
        self.signoff_source: SignoffSource | None = None
        self.api: actions_api.ApiContext | None = None
        self.health = Health()  # parts whose credential is refused: /healthz names them
        self.http: aiohttp.ClientSession | None = None
        self.slack_http: aiohttp.ClientSession | None = None
        self.scheduler = AsyncIOScheduler(timezone=timezone.utc)
        self._retry = retry or RetryPolicy()
        self._clock = clock
        self._runner: web.AppRunner | None = None
        self._frozen = False  # start-up's objects kept out of the collector's passes (gc.freeze)
        self._socket_handler: object | None = None
        self.port: int | None = None
        self._host = "127.0.0.1"
        self.jobs: dict[str, Job] = {}
        self.ack_paths = AckPaths()  # store transactions before each Slack request's answer
        # GET /metrics: this bot's own registry (several bots may run in one process).
        self.metrics = Metrics()
        self.ready_cache_seconds = READY_CACHE_SECONDS
        self._ready: tuple[float, int, dict[str, object]] | None = None
        self._quiet = QuietWhileReported(self.health)

    # ---- building ---------------------------------------------------------------------

    def approvers_for(self, action_type: str, risk: str | None, *, source: str | None = None) -> Approvers:
        """Who may decide an action: its route's approvers, else APPROVERS."""
        route = self.policy.route_for(action_type, risk, source=source)
        if route is not None:
            found = self._route_approvers.get(self.policy.routes.index(route))
            if found is not None:
                return found
        return self._default_approvers

    def _sources(self) -> SourceRegistry:
        """Every Actions API the settings turn on, each with its own client and timeouts."""
        s = self.settings
        assert self.http is not None
        entries = []
        if s.flokit_api_key is not None:
            flokit = FloKitSource(
                self.http,
                base_url=s.flokit_api_url,
                api_key=s.flokit_api_key.get_secret_value(),
                timeout=s.flokit_timeout_seconds,
            )
            # One delivery: the email lookup and up to two FloKit calls, each bounded by a timeout.
            lease = timedelta(seconds=SLACK_TIMEOUT_SECONDS + 2 * s.flokit_timeout_seconds + 5)
            entries.append(Registered(flokit, outbox_lease=lease, credential="FLOKIT_API_KEY", display_name="FloKit"))
        if s.flowdash_api_key is not None:
            assert s.flowdash_intake_token is not None  # the settings require it with the key
            flowdash = FlowdashSource(
                self.http,
                base_url=s.flowdash_api_url,
                api_key=s.flowdash_api_key.get_secret_value(),
                timeout=s.flowdash_timeout_seconds,
            )
            # One delivery: the email lookup, a read of the task's actions, the execution, and
            # (when it ends at once) a second read, each bounded by a timeout.
            lease = timedelta(seconds=SLACK_TIMEOUT_SECONDS + 3 * s.flowdash_timeout_seconds + 5)
            entries.append(
                Registered(
                    flowdash,
                    outbox_lease=lease,
                    intake_token=s.flowdash_intake_token.get_secret_value(),
                    credential="FLOWDASH_API_KEY",
                    display_name="Flowdash",
                )
            )
        if s.fieldkit_api_key is not None:
            assert s.fieldkit_api_url is not None and s.fieldkit_intake_token is not None  # settings check both
            fieldkit = FieldkitSource(
                self.http,
                base_url=s.fieldkit_api_url,
                api_key=s.fieldkit_api_key.get_secret_value(),
                timeout=s.fieldkit_timeout_seconds,
            )
            # One delivery: the name and email lookup, the decide, and a read (a 409, or an answer
            # without the status), each bounded by a timeout; a catalog read may come with it.
            lease = timedelta(seconds=SLACK_TIMEOUT_SECONDS + 3 * s.fieldkit_timeout_seconds + 5)
            entries.append(
                Registered(
                    fieldkit,
                    outbox_lease=lease,
                    intake_token=s.fieldkit_intake_token.get_secret_value(),
                    credential="FIELDKIT_API_KEY",
                    display_name="Fieldkit",
                )
            )
        if s.api_keys:
            # Signoff's own Actions API: its "upstream" is this store (a decision lands at once).
            self.signoff_source = SignoffSource(
                self.db,
                self.catalog,
                clock=self._clock,
                on_callback=lambda: self.kick("callbacks"),
            )
            entries.append(Registered(self.signoff_source, credential="API_KEYS", display_name="Signoff API"))
        if self._extra_sources is not None:
            entries.extend(self._extra_sources(self.http))
        # Each source tells the health of its credential (/healthz) with every answer.
        return SourceRegistry(
            replace(
                e,
                source=TrackedSource(
                    e.source,
                    self.health,
                    credential=e.credential,
                    display_name=e.display_name,
                    metrics=self.metrics,
                ),
            )
            for e in entries
        )

    def _build(self) -> None:
        s = self.settings
        self.http = aiohttp.ClientSession(raise_for_status=False)
        # One session (one pool of TLS connections) for every Web API call, not one per call.
        self.slack_http = aiohttp.ClientSession(raise_for_status=False)
        self.slack = TrackedSlackClient(
            health=self.health,
            metrics=self.metrics,
            token=s.slack_bot_token.get_secret_value(),
            base_url=s.slack_api_url,
            timeout=SLACK_TIMEOUT_SECONDS,
            session=self.slack_http,
            # Only 429s are retried in the client: Slack did not act on them. A 5xx or a broken
            # connection may come after Slack posted the message, so the card sync retries
            # those itself, looking for the card before posting again.
            retry_handlers=[CountedRateLimitRetries(self.metrics, max_retry_count=3)],
        )
        self.sources = self._sources()
        approvers = ApproverCheck(self._default_approvers, self.slack)
        # A changed action also may owe thread notices, or need its rollback watch set up.
        changed = lambda: self.kick("cards", "notices", "watch", "homes")  # noqa: E731
        self.ingest = IngestContext(
            db=self.db,
            sources=self.sources,
            channel=s.slack_channel,
            policy=self.policy,
            on_change=changed,
            clock=self._clock,
            digest_threshold=s.digest_threshold,
            metrics=self.metrics,
        )
        # In-process events: a decision recorded here is delivered here at once, and the card
        # of an action changed by a decision is re-rendered here at once (leases in the store
        # hand the work to the sweeps if this process dies first).
        self.events = Events()
        self.foreground = Foreground()  # Slack requests in flight: live work gives way to them
        delivery = DeliveryContext(
            db=self.db,
            sources=self.sources,
            people=approvers,
            notifier=SlackNotifier(self.slack),
            on_change=lambda: self.kick("watch", "homes"),
            clock=self._clock,
            retry=self._retry,
            events=self.events,
            metrics_on=s.metrics_url is not None,
            metrics=self.metrics,
        )
        self.deliverer = Deliverer(delivery, foreground=self.foreground)
        ctx = JobContext(
            db=self.db,
            sources=self.sources,
            slack=self.slack,
            kick_cards=lambda: self.kick("cards", "notices"),
            clock=self._clock,
            retry=self._retry,
            policy=self.policy,
            pacer=jobs.Pacer(s.slack_post_interval_seconds),
        )
        self.card_updater = CardUpdater(
            ctx,
            kick_sweeps=lambda: self.kick("cards", "notices"),
            foreground=self.foreground,
            started=self.deliverer.started,
            patient_seconds=s.card_patience_seconds,
        )
        self.events.on_decided(self.deliverer.deliver_now)
        self.events.on_changed(self.card_updater.changed)
        self.events.on_carrying(self.card_updater.carrying)
        self.events.on_released(self.card_updater.released)
        reminder_ctx = ReminderContext(
            db=self.db,
            policy=self.policy,
            approvers_for=self.approvers_for,
            quiet=s.quiet,
            clock=self._clock,
            kick_notices=lambda: self.kick("notices"),
            kick_cards=lambda: self.kick("cards"),
        )
        self.refresh = refresh.RefreshContext(
            db=self.db,
            sources=self.sources,
            on_change=changed,
            clock=self._clock,
            lease=self.sources.outbox_lease,
        )
        metrics: MetricsProvider | None = None
        if s.metrics_url:
            metrics = HttpMetrics(
                self.http,
                url=s.metrics_url,
                timeout=s.metrics_timeout_seconds,
                clock=self._clock,
                token=s.metrics_token.get_secret_value() if s.metrics_token else None,
            )
        watch_tick = min(s.rollback_check_interval_seconds, WATCH_TICK_SECONDS)
        watch_ctx = WatchContext(
            db=self.db,
            metrics=metrics,
            policy=self.policy,
            clock=self._clock,
            interval=timedelta(seconds=s.rollback_check_interval_seconds),
            tick=timedelta(seconds=watch_tick),
            max_age=timedelta(seconds=s.metrics_max_age_seconds),
            capabilities=self.sources.capabilities,
            kick_outbox=lambda: self.kick("outbox"),
            kick_cards=lambda: self.kick("cards", "notices", "homes"),
            lease=timedelta(seconds=2 * s.metrics_timeout_seconds + 30),
        )
        self.home = home.HomeService(
            db=self.db,
            slack=self.slack,
            approvers=approvers,
            capabilities=self.sources.capabilities,
            channel=s.slack_channel,
            clock=self._clock,
            approvers_for=self.approvers_for,
        )
        specs: list[tuple[str, Callable[[], Awaitable[object]], float]] = [
            ("poll", lambda: ingest.poll(self.ingest), s.poll_interval_seconds),
            ("outbox", lambda: deliver_outbox(delivery), OUTBOX_INTERVAL_SECONDS),
            ("cards", lambda: jobs.sync_cards(ctx), CARDS_INTERVAL_SECONDS),
            ("notices", lambda: jobs.post_notices(ctx), NOTICES_INTERVAL_SECONDS),
            # Republishes the App Home of recent viewers whose content changed.
            ("homes", lambda: home.refresh(self.home), HOMES_INTERVAL_SECONDS),
            # Checks only the rules that are due; kicked when an action was just approved.
            ("watch", lambda: watch.check_rules(watch_ctx), watch_tick),
            ("reminders", lambda: reminders.remind(reminder_ctx), REMINDERS_INTERVAL_SECONDS),
        ]
        self.service = DecisionService(
            db=self.db,
            approvers=approvers,
            capabilities=self.sources.capabilities,
            on_change=lambda: self.kick("outbox", "cards", "homes"),
            on_recorded=lambda: self.kick("homes"),
            clock=self._clock,
            approvers_for=self.approvers_for,
            policy=self.policy,
            events=self.events,
            lease=lambda source: self.sources.entry(source).outbox_lease,
        )
        if s.api_keys:
            self.api = actions_api.ApiContext(
                db=self.db,
                ingest=self.ingest,
                keys=list(s.api_keys),
                catalog=self.catalog,
                decisions=self.service,
                per_minute=s.api_rate_limit,
                allowed_hosts=tuple(s.callback_allowed_hosts),
                clock=self._clock,
                kick_callbacks=lambda: self.kick("callbacks"),
                metrics=self.metrics,
            )
            api_ctx, http = self.api, self.http
            specs.append(
                ("callbacks", lambda: actions_api.deliver_callbacks(api_ctx, http), CALLBACKS_INTERVAL_SECONDS)
            )
            specs.append(("api_expiry", lambda: actions_api.expire(api_ctx), API_EXPIRY_INTERVAL_SECONDS))
        if refresh.unlisted(self.sources):
            # Open actions of sources that push them (and nothing after), read until they end.
            specs.append(("refresh", lambda: refresh.refresh(self.refresh), REFRESH_INTERVAL_SECONDS))
        now = datetime.now(timezone.utc)
        for name, fn, interval in specs:
            job = Job(self.scheduler, name, fn, min_gap=KICK_GAP_SECONDS.get(name, 0.0))
            self.jobs[name] = job
            self.scheduler.add_job(
                job.run,
                "interval",
                seconds=interval,
                id=name,
                name=name,
                next_run_time=now,
                # Job.run itself never overlaps: a tick while it runs just asks for one more
                # pass, so APScheduler need not skip (and warn about) concurrent ticks.
                max_instances=3,
                coalesce=True,
                misfire_grace_time=None,
            )

        self.bolt = AsyncApp(
            client=self.slack,
            signing_secret=s.slack_signing_secret.get_secret_value() if s.slack_signing_secret else None,
            request_verification_enabled=not s.socket_mode,
            logger=_bolt_logger(),
        )
        cards = CardReader(db=self.db, capabilities=self.sources.capabilities, policy=self.policy)
        commands = CommandService(
            db=self.db, decisions=self.service, cards=cards, clock=self._clock, ingest=self.ingest
        )
        listeners.register(self.bolt, self.service, cards=cards, home=self.home, commands=commands)

    def kick(self, *names: str) -> None:
        for name in names:
            job = self.jobs.get(name)
            if job is not None:
                job.kick()

    def web_app(self) -> web.Application:
        middlewares = [actions_api.json_errors] if self.api is not None else []
        app = web.Application(client_max_size=MAX_REQUEST_BYTES, middlewares=middlewares)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/metrics", self._metrics)
        if self.settings.slack_signing_secret is not None and not self.settings.socket_mode:
            secret = self.settings.slack_signing_secret.get_secret_value()
            app.router.add_post(
                "/slack/events", slack_events(self.bolt, secret, self.ack_paths, self.metrics, self.foreground)
            )
        if self.sources.pushing():
            intake.add_routes(app, self.ingest, self.sources, self.metrics)
        if self.api is not None:
            actions_api.add_routes(app, self.api)
            # /mcp: the MCP server for agents, acting as the caller's key on the API above (loopback).
            # Imported only here: the MCP SDK takes most of a second to import, for bots without the API too.
            from signoff_mcp.http import McpEndpoint, loopback_url

            McpEndpoint(self.api.keys, lambda: loopback_url(self._host, self.port or self.settings.port)).add_routes(
                app
            )
        return app

    async def _metrics(self, request: web.Request) -> web.Response:
        """Prometheus' text format; behind METRICS_SCRAPE_TOKEN (as Bearer) when it is set."""
        token = self.settings.metrics_scrape_token
        if token is not None:
            scheme, _, given = request.headers.get("Authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(
                given.strip().encode(), token.get_secret_value().encode()
            ):
                return web.json_response(
                    {"error": "missing or wrong scrape token (Authorization: Bearer <token>)"}, status=401
                )
        try:
            await self._observe_store()
        except Exception as e:  # noqa: BLE001 - the counters are still worth serving; /readyz says the store is down
            log.warning("metrics: the store could not be read (%s); its gauges are as last read", type(e).__name__)
        return web.Response(body=self.metrics.exposition(), headers={"Content-Type": CONTENT_TYPE})

    async def _observe_store(self) -> None:
        """The gauges that are the store's state now: two aggregate queries per scrape."""
        async with self.db.read() as session:
            backlog = await reports.backlog(session)
            rules = await reports.rule_states(session)
        now = self._clock()
        oldest = {source: max(0.0, (now - first).total_seconds()) for source, first in backlog.oldest.items()}
        self.metrics.set_backlog(self.sources.names, backlog.depth, oldest)
        self.metrics.set_rules(rules)

    async def _readyz(self, _request: web.Request) -> web.Response:
        """Whether this replica can do its work now: the store answers and its schema is at
        head, Slack answers, and so does each source. 503 with the parts that are not ready."""
        now = time.monotonic()
        if self._ready is None or now - self._ready[0] >= self.ready_cache_seconds:
            status, body = await self._check_ready()
            self._ready = (now, status, body)
        _at, status, body = self._ready
        return web.json_response(body, status=status)

    async def _check_ready(self) -> tuple[int, dict[str, object]]:
        async def store() -> None:
            await self.db.ping()
            await self.db.check_schema()

        checks: dict[str, Callable[[], Awaitable[object]]] = {"store": store, "slack": self.slack.auth_test}
        for name in self.sources.names:
            check = getattr(self.sources.entry(name).source, "check_access", None)
            if check is not None:
                checks[name] = check
        if not self.scheduler.running:
            checks["scheduler"] = self._not_running
        if self._socket_handler is not None:
            checks["socket_mode"] = self._socket_connected

        async def run(check: Callable[[], Awaitable[object]]) -> str | None:
            try:
                await asyncio.wait_for(check(), READY_TIMEOUT_SECONDS)
            except SchemaError:
                return "schema not at head"
            except Exception as e:  # noqa: BLE001 - whatever keeps it from answering: not ready
                return _not_ready_reason(e)
            return None

        results = await asyncio.gather(*(run(check) for check in checks.values()))
        not_ready = {name: why for name, why in zip(checks, results, strict=True) if why is not None}
        if not_ready:
            return 503, {"ready": False, "not_ready": sorted(not_ready), "problems": not_ready}
        return 200, {"ready": True}

    @staticmethod
    async def _not_running() -> None:
        raise RuntimeError("scheduler not running")

    async def _socket_connected(self) -> None:
        if not await self._socket_handler.client.is_connected():  # type: ignore[union-attr]
            raise RuntimeError("socket mode not connected")

    async def _healthz(self, _request: web.Request) -> web.Response:
        problems = []
        try:
            await self.db.ping()
        except Exception as e:  # noqa: BLE001 - any failure to reach the store is "unhealthy"
            problems.append(f"store unreachable: {type(e).__name__}")
        if not self.scheduler.running:
            problems.append("scheduler not running")
        if self._socket_handler is not None and not await self._socket_handler.client.is_connected():  # type: ignore[attr-defined]
            problems.append("socket mode not connected")
        unhealthy = self.health.problems
        problems.extend(unhealthy.values())
        if problems:
            return web.json_response({"ok": False, "problems": problems, "unhealthy": sorted(unhealthy)}, status=503)
        return web.json_response({"ok": True})

    # ---- lifecycle --------------------------------------------------------------------

    async def start(self, *, host: str = "0.0.0.0") -> None:
        # Raises SchemaError when the schema cannot be (or, with AUTO_MIGRATE=false, is not) at head.
        if self.settings.auto_migrate:
            await self.db.migrate()
        else:
            await self.db.check_schema()
        self._build()
        await self._check_credentials()
        for name in _our_loggers():
            logging.getLogger(name).addFilter(self._quiet)
        self.scheduler.start()
        self._host = host
        self._runner = web.AppRunner(self.web_app(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, self.settings.port)
        await site.start()
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        self.port = sockets[0].getsockname()[1] if sockets else self.settings.port
        if self.settings.socket_mode:
            await self._connect_socket()
        # What start-up made (modules, settings, compiled statements, clients) lives as long as
        # the process: kept out of the garbage collector's full passes, each of which paused
        # the loop for 100-170 ms under load (bench/ack.py: the decisions' p99), now 10-20 ms.
        gc.freeze()
        self._frozen = True
        log.info(
            "signoff started: %s mode, port %s, channel %s, store %s",
            "socket" if self.settings.socket_mode else "http",
            self.port,
            self.settings.slack_channel,
            self.db.url.render_as_string(hide_password=True),
        )

    async def _check_credentials(self) -> None:
        """Ask once whether each credential is taken: ``auth.test`` for the bot token, one
        read of each source. A refusal stops the start (StartupError, naming it); a service
        that cannot be reached is only a warning, as the jobs retry it."""
        try:
            await self.slack.auth_test()
        except SlackApiError as e:
            code = slack_refusal(e)
            if code is not None:
                raise StartupError(f"SLACK_BOT_TOKEN was refused by Slack ({code})") from e
            log.warning("Slack's auth.test failed (%s); starting anyway", e.response.get("error"))
        except Exception as e:  # noqa: BLE001 - unreachable (DNS, refused, timeout): the jobs retry
            log.warning("Slack unreachable at %s (%s); starting anyway", self.settings.slack_api_url, type(e).__name__)
        for name in self.sources.names:
            entry = self.sources.entry(name)
            check = getattr(entry.source, "check_access", None)
            if check is None:
                continue
            try:
                await check()
            except SourceError as e:
                if source_refused(e):
                    raise StartupError(
                        f"{entry.credential} was refused by {entry.display_name or name} (HTTP {e.status})"
                    ) from e
                log.warning(
                    "%s unreachable at start (%s); starting anyway, the jobs retry", entry.display_name or name, e
                )

    async def _connect_socket(self) -> None:
        assert self.settings.slack_app_token is not None
        app_token = self.settings.slack_app_token.get_secret_value()
        # slack_sdk retries a refused token forever; ask once so a wrong token is a clear error.
        try:
            await AsyncWebClient(base_url=self.settings.slack_api_url).apps_connections_open(app_token=app_token)
        except SlackApiError as e:
            raise StartupError(f"SLACK_APP_TOKEN was refused by Slack ({e.response.get('error')})") from e
        handler = TimedSocketModeHandler(self.bolt, app_token, self.metrics)
        await handler.connect_async()
        self._socket_handler = handler

    async def settle_live(self, timeout: float = STOP_GRACE_SECONDS) -> None:
        """Wait until the work this process started at once (deliveries, card updates) is
        done; for tests and benchmarks that then run a sweep deterministically."""
        await self.deliverer.drain(timeout)
        await self.card_updater.drain(timeout)

    async def _drain_live(self, timeout: float) -> None:
        await self.deliverer.drain(timeout)
        await self.card_updater.drain(timeout)
        self.deliverer.cancel()
        self.card_updater.cancel()

    async def stop(self) -> None:
        """Stop taking requests, let running jobs finish (what they leave is durable and
        retried on the next start), then close clients and the store."""
        if self._socket_handler is not None:
            await self._socket_handler.close_async()  # type: ignore[attr-defined]
        if self._runner is not None:
            await self._runner.cleanup()
        if self.scheduler.running:
            # Pause first: APScheduler's asyncio executor cancels running jobs on shutdown,
            # and a job cut off mid-transaction would have to be recovered on the next start.
            self.scheduler.pause()
            running = [asyncio.ensure_future(job.wait_idle()) for job in self.jobs.values()]
            # Deliveries first (each may hand a card to the updater), then the card updates.
            running.append(asyncio.ensure_future(self._drain_live(STOP_GRACE_SECONDS)))
            if running:
                _done, pending = await asyncio.wait(running, timeout=STOP_GRACE_SECONDS)
                if pending:
                    log.warning(
                        "stopping with %d job(s) still running; their work resumes on the next start", len(pending)
                    )
                for task in pending:
                    task.cancel()
            self.scheduler.shutdown(wait=False)
        if self.http is not None:
            await self.http.close()
        if self.slack_http is not None:
            await self.slack_http.close()
        for name in _our_loggers():
            logging.getLogger(name).removeFilter(self._quiet)
        await self.db.dispose()
        if self._frozen:
            gc.unfreeze()  # collectable again (a process that starts several, such as the tests)
            self._frozen = False
        log.info("signoff stopped")


async def serve(settings: Settings) -> None:
    bot = Signoff(settings)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    starting = asyncio.ensure_future(bot.start())
    stop_requested = asyncio.ensure_future(stopping.wait())
    try:
        await asyncio.wait({starting, stop_requested}, return_when=asyncio.FIRST_COMPLETED)
        if starting.done():
            starting.result()  # raises StartupError and the like
            await stop_requested
        else:
            starting.cancel()
    finally:
        stop_requested.cancel()
        await bot.stop()


DEMO_DB = "signoff-demo.db"
DEMO_SEEDED = "signoff-demo.seeded"  # written once the example actions are all proposed
DEMO_CHANNEL = "signoff-demo.channel.json"  # the sandbox's channel as Slack would keep it
DEMO_KEEP_CALLS = 1000  # Web API calls the sandbox's Slack remembers (it may run for days)
DEMO_CHECK_SECONDS = 5.0  # the sandbox's rollback watch checks often, so a visitor sees it act


def demo_settings(*, slack_url: str, database: Path) -> Settings:
    """The sandbox's bot: built here from code alone (no environment, no .env), pointed at the
    sandbox's local Slack, its metric values, its catalog, and a SQLite file."""
    catalog = Path(str(resources.files("sandbox").joinpath("signoff.toml")))
    return CodeSettings(
        slack_bot_token=SecretStr(workspace.BOT_TOKEN),
        slack_signing_secret=SecretStr(workspace.SIGNING_SECRET),
        slack_api_url=f"{slack_url}/api/",
        slack_channel=workspace.CHANNEL,
        approvers=[workspace.APPROVER.user_id, workspace.REQUESTER.user_id],
        database_url=f"sqlite:///{database}",
        api_keys=parse_api_keys(workspace.api_keys()),
        port=0,
        signoff_config=str(catalog),
        metrics_url=f"{slack_url}/sandbox/metric",
        rollback_check_interval_seconds=DEMO_CHECK_SECONDS,
    )


def _demo_store(workdir: Path, *, fresh: bool) -> Path:
    """The sandbox's SQLite file in ``workdir`` (anew with ``fresh``); StartupError when the
    directory cannot be written."""
    database = workdir / DEMO_DB
    try:
        if fresh:
            for name in (DEMO_DB, f"{DEMO_DB}-wal", f"{DEMO_DB}-shm", f"{DEMO_DB}-journal", DEMO_SEEDED, DEMO_CHANNEL):
                (workdir / name).unlink(missing_ok=True)
        with tempfile.NamedTemporaryFile(dir=workdir, prefix=".signoff-demo-"):
            pass
        if database.exists() and not os.access(database, os.W_OK):
            raise PermissionError(13, "Permission denied", str(database))
    except OSError as e:
        raise StartupError(
            f"the sandbox keeps its store in the working directory, which cannot be written ({workdir}: {e.strerror})"
        ) from e
    return database


async def demo(
    *,
    port: int,
    fresh: bool,
    workdir: Path,
    ready: Callable[[str], None] = print,
    stopping: asyncio.Event | None = None,
) -> None:
    """``python app.py demo``: the sandbox's page and local Slack on ``port`` (0: a free one),
    the same bot as production on a loopback port behind it, the example actions proposed at
    first start through its own Actions API; until SIGINT or SIGTERM (or ``stopping`` is set).
    ``ready`` is told the page's address once it serves."""
    database = _demo_store(workdir, fresh=fresh)
    loop = asyncio.get_running_loop()
    signals = (signal.SIGTERM, signal.SIGINT) if stopping is None else ()
    stopping = stopping or asyncio.Event()
    for sig in signals:
        loop.add_signal_handler(sig, stopping.set)
    http = aiohttp.ClientSession()
    slack = LocalSlack(bot_token=workspace.BOT_TOKEN, keep_calls=DEMO_KEEP_CALLS)
    sandbox = Sandbox(slack, http)
    sandbox.load(workdir / DEMO_CHANNEL)
    keeping = asyncio.ensure_future(sandbox.keep(workdir / DEMO_CHANNEL))
    bot: Signoff | None = None
    try:
        try:
            url = await slack.start(port=port, routes=sandbox.routes)
        except OSError as e:
            raise StartupError(f"cannot serve the sandbox on port {port} ({e.strerror}); set PORT to a free one") from e
        bot = Signoff(demo_settings(slack_url=url, database=database))
        await bot.start(host="127.0.0.1")
        base = f"http://127.0.0.1:{bot.port}"
        sandbox.connect(
            events_url=f"{base}/slack/events", api=SignoffClient(base, workspace.REQUESTER_KEY, session=http)
        )
        if not (workdir / DEMO_SEEDED).exists():
            await seeds.seed(SignoffClient(base, workspace.AGENT_KEY, session=http))
            (workdir / DEMO_SEEDED).write_text(f"{seeds.SEED_VERSION}\n", encoding="utf-8")
        sandbox.types = await SignoffClient(base, workspace.AGENT_KEY, session=http).types()
        ready(f"Signoff sandbox: {url}/sandbox  (store: {database}; Ctrl-C stops, `demo --fresh` starts anew)")
        await stopping.wait()
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)
        if bot is not None:
            await bot.stop()
        keeping.cancel()
        await asyncio.gather(keeping, return_exceptions=True)
        await slack.stop()
        await http.close()


async def migrate(settings: DatabaseSettings | Settings) -> str | None:
    """Apply the pending schema migrations; returns the revision the database is then at."""
    db = Database(settings.database_url)
    try:
        await db.migrate()
        return await db.schema_revision()
    finally:
        await db.dispose()


MANIFEST = Path(__file__).resolve().parent / "manifest.yml"
# The manifest's request URLs: the slash command's ``url``, interactivity's and events' ``request_url``.
_REQUEST_URL_LINE = re.compile(r"^(\s*(?:url|request_url):\s*)(\S+)\s*$", re.MULTILINE)


def manifest_for(base_url: str, text: str) -> str:
    """``manifest.yml`` with every request URL pointing at ``base_url`` + ``/slack/events``.

    ``base_url`` is the public address that reaches Signoff; Slack takes only https.
    Raises ValueError saying what is wrong with it.
    """
    base = base_url.strip().rstrip("/").removesuffix("/slack/events")
    if not re.fullmatch(r"https://[^/\s?#]+(/[^\s?#]*)?", base):
        raise ValueError(
            f"--url must be the public https:// address of Signoff, such as https://signoff.example.com, not {base_url!r}"
        )
    return _REQUEST_URL_LINE.sub(lambda m: f"{m.group(1)}{base}/slack/events", text)


USAGE = """usage: python app.py [COMMAND]

Signoff posts actions proposed through an Actions API to Slack for people to approve,
reject or roll back.

commands:
  (none)              run the bot
  migrate             apply pending database schema migrations, then exit (needs only DATABASE_URL)
  manifest --url URL  print the Slack app manifest (manifest.yml) with its three request
                      URLs (slash command, interactivity, events) set to URL/slack/events
  demo [--fresh]      try Signoff in a browser: the sandbox at http://127.0.0.1:PORT/sandbox
                      (PORT, default 3000), a local Slack-like page and example actions; no
                      settings, no network; its store is signoff-demo.db in the working
                      directory (--fresh starts anew)
  help                show this help (also -h, --help)

Settings come from the environment and from a .env file in the working directory:
.env.example lists what a first run needs, README.md (section "Settings") all of them.
A missing or malformed setting is named and the exit code is 2."""


def secrets_of(settings: Settings | DatabaseSettings) -> list[str]:
    """Every secret value in the settings (the secret types, the database password)."""
    found = [v.get_secret_value() for v in vars(settings).values() if isinstance(v, SecretStr)]
    try:
        password = make_url(settings.database_url).password
    except Exception:  # noqa: BLE001 - a URL SQLAlchemy cannot parse holds no password it would use
        password = None
    return [s for s in [*found, str(password or "")] if s]


def _usage_error(message: str) -> int:
    print(f"signoff: {message}\n\n{USAGE}", file=sys.stderr)
    return 2


def _print_manifest(args: list[str]) -> int:
    if len(args) == 1 and args[0].startswith("--url="):
        args = ["--url", args[0].removeprefix("--url=")]
    if len(args) != 2 or args[0] != "--url":
        return _usage_error("manifest needs --url URL, the public https:// address of Signoff")
    try:
        text = MANIFEST.read_text(encoding="utf-8")
    except OSError as e:
        print(f"signoff: cannot read {MANIFEST}: {e.strerror}", file=sys.stderr)
        return 2
    try:
        print(manifest_for(args[1], text), end="")
    except ValueError as e:
        print(f"signoff: {e}", file=sys.stderr)
        return 2
    return 0


def _run_demo(args: list[str]) -> int:
    if args not in ([], ["--fresh"]):
        return _usage_error(f"demo takes only --fresh, got {' '.join(args)!r}")
    port_text = os.environ.get("PORT", "3000").strip() or "3000"  # the one setting the sandbox honours
    if not port_text.isdigit() or not 0 < int(port_text) <= 65535:
        print(f"signoff: PORT must be a port number from 1 to 65535, not {port_text!r}", file=sys.stderr)
        return 2
    logs.configure(level="WARNING")
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    try:
        asyncio.run(demo(port=int(port_text), fresh=args == ["--fresh"], workdir=Path.cwd(), ready=_say))
    except (StartupError, SchemaError) as e:
        print(f"signoff: {e}", file=sys.stderr)
        return 2
    return 0


def _say(line: str) -> None:
    print(line, flush=True)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    command = args[0] if args else ""
    if command in ("-h", "--help", "help"):
        print(USAGE)
        return 0
    if command == "manifest":
        return _print_manifest(args[1:])
    if command == "demo":
        return _run_demo(args[1:])
    if command not in ("", "migrate"):
        return _usage_error(f"unknown command {command!r}")
    if len(args) > 1:
        return _usage_error(f"{command} takes no arguments, got {' '.join(args[1:])!r}")
    logs.configure()
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)  # signoff.store says what was migrated
    try:
        settings: Settings | DatabaseSettings = DatabaseSettings() if command == "migrate" else Settings()  # type: ignore[call-arg]
    except ValidationError as e:
        print(f"signoff: {describe_errors(e)}", file=sys.stderr)
        return 2
    # LOG_FORMAT and LOG_LEVEL; every secret setting's value is redacted from every line.
    logs.configure(fmt=settings.log_format, level=settings.log_level, secrets=secrets_of(settings))
    try:
        if command == "migrate":
            revision = asyncio.run(migrate(settings))
            print(f"database schema at revision {revision} (head)")
        else:
            assert isinstance(settings, Settings)
            asyncio.run(serve(settings))
    except (StartupError, SchemaError) as e:
        print(f"signoff: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
