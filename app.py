"""Signoff's entry point and only composition root.

``python app.py`` reads the settings, builds the store, the clients, the scheduler and the
web server, and owns their lifecycle: ``Signoff.start()`` and ``Signoff.stop()`` are the one
place where anything starts or stops. ``python app.py migrate`` applies the pending schema
migrations and exits.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from collections.abc import Awaitable, Callable, Iterable
from datetime import datetime, timedelta, timezone

import aiohttp
from aiohttp import web
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from pydantic import ValidationError
from slack_bolt.async_app import AsyncApp
from slack_sdk.http_retry.builtin_async_handlers import AsyncRateLimitErrorRetryHandler
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot import home, jobs, listeners
from bot.auth import ApproverCheck
from bot.cards import CardReader
from bot.command_service import CommandService
from bot.jobs import JobContext, SlackNotifier
from api import intake
from bot.web import slack_events
from core import ingest, refresh, reminders, watch
from core.clock import Clock, utc_now
from core.decide import DecisionService
from core.deliver import DeliveryContext, RetryPolicy, deliver_outbox
from core.ingest import IngestContext
from core.people import Approvers
from core.registry import Registered, SourceRegistry
from core.reminders import ReminderContext
from core.watch import WatchContext
from policy import Policy, PolicyError, Timings, load_policy
from settings import Settings, describe_errors
from sources.fieldkit import FieldkitSource
from sources.flokit import FloKitSource
from sources.metrics import HttpMetrics, MetricsProvider
from store.db import Database, SchemaError

log = logging.getLogger("signoff")

MAX_REQUEST_BYTES = 1024 * 1024  # Slack's payloads are far smaller; larger bodies get a 413
OUTBOX_INTERVAL_SECONDS = 1.0
CARDS_INTERVAL_SECONDS = 5.0
NOTICES_INTERVAL_SECONDS = 5.0
HOMES_INTERVAL_SECONDS = 10.0  # App Home refresh: cheap when nothing changed (one fingerprint per viewer)
REMINDERS_INTERVAL_SECONDS = 60.0
REFRESH_INTERVAL_SECONDS = 2.0  # looks for open actions of unlisted sources due a read (each has its own backoff)
WATCH_TICK_SECONDS = 60.0  # the watch job looks for due rules this often (or each interval, if shorter)
STOP_GRACE_SECONDS = 20.0
SLACK_TIMEOUT_SECONDS = 10


def _seconds(value: float | None) -> timedelta | None:
    return timedelta(seconds=value) if value is not None else None


class StartupError(Exception):
    """Signoff cannot start as configured; the message says why."""


class Job:
    """A scheduled job that never overlaps itself and can be asked to run now.

    A kick while it runs makes it run once more when it finishes, so no wake-up is lost.
    """

    def __init__(self, scheduler: AsyncIOScheduler, name: str, fn: Callable[[], Awaitable[object]]) -> None:
        self._scheduler = scheduler
        self.name = name
        self._fn = fn
        self._running: asyncio.Task[None] | None = None
        self._again = False

    async def run(self) -> None:
        if self._running is not None:
            self._again = True
            return
        self._running = asyncio.current_task()
        try:
            while True:
                self._again = False
                await self._fn()
                if not self._again:
                    return
        finally:
            self._running = None

    def kick(self) -> None:
        if self._running is not None:
            self._again = True
        elif self._scheduler.running and self._scheduler.get_job(self.name):
            self._scheduler.modify_job(self.name, next_run_time=datetime.now(timezone.utc))

    async def wait_idle(self) -> None:
        task = self._running
        if task is not None and task is not asyncio.current_task():
            await asyncio.wait({task})


class Signoff:
    """The running bot: everything built from one ``Settings``."""

    def __init__(
        self, settings: Settings, *, retry: RetryPolicy | None = None, clock: Clock = utc_now,
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
        self.http: aiohttp.ClientSession | None = None
        self.slack_http: aiohttp.ClientSession | None = None
        self.scheduler = AsyncIOScheduler(timezone=timezone.utc)
        self._retry = retry or RetryPolicy()
        self._clock = clock
        self._runner: web.AppRunner | None = None
        self._socket_handler: object | None = None
        self.port: int | None = None
        self.jobs: dict[str, Job] = {}

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
                self.http, base_url=s.flokit_api_url, api_key=s.flokit_api_key.get_secret_value(),
                timeout=s.flokit_timeout_seconds,
            )
            # One delivery: the email lookup and up to two FloKit calls, each bounded by a timeout.
            lease = timedelta(seconds=SLACK_TIMEOUT_SECONDS + 2 * s.flokit_timeout_seconds + 5)
            entries.append(Registered(flokit, outbox_lease=lease))
        if s.fieldkit_api_key is not None:
            assert s.fieldkit_api_url is not None and s.fieldkit_intake_token is not None  # settings check both
            fieldkit = FieldkitSource(
                self.http, base_url=s.fieldkit_api_url, api_key=s.fieldkit_api_key.get_secret_value(),
                timeout=s.fieldkit_timeout_seconds,
            )
            # One delivery: the name and email lookup, the decide, and a read (a 409, or an answer
            # without the status), each bounded by a timeout; a catalog read may come with it.
            lease = timedelta(seconds=SLACK_TIMEOUT_SECONDS + 3 * s.fieldkit_timeout_seconds + 5)
            entries.append(
                Registered(fieldkit, outbox_lease=lease, intake_token=s.fieldkit_intake_token.get_secret_value())
            )
        if self._extra_sources is not None:
            entries.extend(self._extra_sources(self.http))
        return SourceRegistry(entries)

    def _build(self) -> None:
        s = self.settings
        self.http = aiohttp.ClientSession(raise_for_status=False)
        # One session (one pool of TLS connections) for every Web API call, not one per call.
        self.slack_http = aiohttp.ClientSession(raise_for_status=False)
        self.slack = AsyncWebClient(
            token=s.slack_bot_token.get_secret_value(),
            base_url=s.slack_api_url,
            timeout=SLACK_TIMEOUT_SECONDS,
            session=self.slack_http,
            # Only 429s are retried in the client: Slack did not act on them. A 5xx or a broken
            # connection may come after Slack posted the message, so the card sync retries
            # those itself, looking for the card before posting again.
            retry_handlers=[AsyncRateLimitErrorRetryHandler(max_retry_count=3)],
        )
        self.sources = self._sources()
        approvers = ApproverCheck(self._default_approvers, self.slack)
        # A changed action also may owe thread notices, or need its rollback watch set up.
        changed = lambda: self.kick("cards", "notices", "watch", "homes")  # noqa: E731
        self.ingest = IngestContext(
            db=self.db, sources=self.sources, channel=s.slack_channel, policy=self.policy, on_change=changed,
            clock=self._clock, digest_threshold=s.digest_threshold,
        )
        delivery = DeliveryContext(
            db=self.db, sources=self.sources, people=approvers, notifier=SlackNotifier(self.slack),
            on_change=changed, clock=self._clock, retry=self._retry,
        )
        ctx = JobContext(
            db=self.db, sources=self.sources, slack=self.slack,
            kick_cards=lambda: self.kick("cards", "notices"), clock=self._clock, retry=self._retry,
            policy=self.policy, pacer=jobs.Pacer(s.slack_post_interval_seconds),
        )
        reminder_ctx = ReminderContext(
            db=self.db, policy=self.policy, approvers_for=self.approvers_for, quiet=s.quiet, clock=self._clock,
            kick_notices=lambda: self.kick("notices"), kick_cards=lambda: self.kick("cards"),
        )
        self.refresh = refresh.RefreshContext(
            db=self.db, sources=self.sources, on_change=changed, clock=self._clock,
            lease=self.sources.outbox_lease,
        )
        metrics: MetricsProvider | None = None
        if s.metrics_url:
            metrics = HttpMetrics(
                self.http, url=s.metrics_url, timeout=s.metrics_timeout_seconds, clock=self._clock,
                token=s.metrics_token.get_secret_value() if s.metrics_token else None,
            )
        watch_tick = min(s.rollback_check_interval_seconds, WATCH_TICK_SECONDS)
        watch_ctx = WatchContext(
            db=self.db, metrics=metrics, policy=self.policy, clock=self._clock,
            interval=timedelta(seconds=s.rollback_check_interval_seconds), tick=timedelta(seconds=watch_tick),
            max_age=timedelta(seconds=s.metrics_max_age_seconds), capabilities=self.sources.capabilities,
            kick_outbox=lambda: self.kick("outbox"), kick_cards=lambda: self.kick("cards", "notices", "homes"),
            lease=timedelta(seconds=2 * s.metrics_timeout_seconds + 30),
        )
        self.home = home.HomeService(
            db=self.db, slack=self.slack, approvers=approvers, capabilities=self.sources.capabilities,
            channel=s.slack_channel, clock=self._clock, approvers_for=self.approvers_for,
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
        if refresh.unlisted(self.sources):
            # Open actions of sources that push them (and nothing after), read until they end.
            specs.append(("refresh", lambda: refresh.refresh(self.refresh), REFRESH_INTERVAL_SECONDS))
        now = datetime.now(timezone.utc)
        for name, fn, interval in specs:
            job = Job(self.scheduler, name, fn)
            self.jobs[name] = job
            self.scheduler.add_job(
                job.run, "interval", seconds=interval, id=name, name=name, next_run_time=now,
                # Job.run itself never overlaps: a tick while it runs just asks for one more
                # pass, so APScheduler need not skip (and warn about) concurrent ticks.
                max_instances=3, coalesce=True, misfire_grace_time=None,
            )

        self.service = DecisionService(
            db=self.db,
            approvers=approvers,
            capabilities=self.sources.capabilities,
            on_change=lambda: self.kick("outbox", "cards", "homes"),
            clock=self._clock,
            approvers_for=self.approvers_for,
            policy=self.policy,
        )
        self.bolt = AsyncApp(
            client=self.slack,
            signing_secret=s.slack_signing_secret.get_secret_value() if s.slack_signing_secret else None,
            request_verification_enabled=not s.socket_mode,
            logger=logging.getLogger("signoff.bolt"),
        )
        cards = CardReader(db=self.db, capabilities=self.sources.capabilities, policy=self.policy)
        commands = CommandService(db=self.db, decisions=self.service, cards=cards, clock=self._clock)
        listeners.register(self.bolt, self.service, cards=cards, home=self.home, commands=commands)

    def kick(self, *names: str) -> None:
        for name in names:
            job = self.jobs.get(name)
            if job is not None:
                job.kick()

    def web_app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_REQUEST_BYTES)
        app.router.add_get("/healthz", self._healthz)
        if self.settings.slack_signing_secret is not None and not self.settings.socket_mode:
            secret = self.settings.slack_signing_secret.get_secret_value()
            app.router.add_post("/slack/events", slack_events(self.bolt, secret))
        if self.sources.pushing():
            intake.add_routes(app, self.ingest, self.sources)
        return app

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
        if problems:
            return web.json_response({"ok": False, "problems": problems}, status=503)
        return web.json_response({"ok": True})

    # ---- lifecycle --------------------------------------------------------------------

    async def start(self, *, host: str = "0.0.0.0") -> None:
        # Raises SchemaError when the schema cannot be (or, with AUTO_MIGRATE=false, is not) at head.
        if self.settings.auto_migrate:
            await self.db.migrate()
        else:
            await self.db.check_schema()
        self._build()
        self.scheduler.start()
        self._runner = web.AppRunner(self.web_app(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, self.settings.port)
        await site.start()
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        self.port = sockets[0].getsockname()[1] if sockets else self.settings.port
        if self.settings.socket_mode:
            await self._connect_socket()
        log.info(
            "signoff started: %s mode, port %s, channel %s, store %s",
            "socket" if self.settings.socket_mode else "http", self.port, self.settings.slack_channel,
            self.db.url.render_as_string(hide_password=True),
        )

    async def _connect_socket(self) -> None:
        from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler

        assert self.settings.slack_app_token is not None
        app_token = self.settings.slack_app_token.get_secret_value()
        # slack_sdk retries a refused token forever; ask once so a wrong token is a clear error.
        try:
            await AsyncWebClient(base_url=self.settings.slack_api_url).apps_connections_open(app_token=app_token)
        except SlackApiError as e:
            raise StartupError(f"SLACK_APP_TOKEN was refused by Slack ({e.response.get('error')})") from e
        handler = AsyncSocketModeHandler(self.bolt, app_token)
        await handler.connect_async()
        self._socket_handler = handler

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
            if running:
                _done, pending = await asyncio.wait(running, timeout=STOP_GRACE_SECONDS)
                if pending:
                    log.warning("stopping with %d job(s) still running; their work resumes on the next start", len(pending))
                for task in pending:
                    task.cancel()
            self.scheduler.shutdown(wait=False)
        if self.http is not None:
            await self.http.close()
        if self.slack_http is not None:
            await self.slack_http.close()
        await self.db.dispose()
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


async def migrate(settings: Settings) -> str | None:
    """Apply the pending schema migrations; returns the revision the database is then at."""
    db = Database(settings.database_url)
    try:
        await db.migrate()
        return await db.schema_revision()
    finally:
        await db.dispose()


USAGE = """usage: python app.py [migrate]

  (no command)  run the bot
  migrate       apply pending database schema migrations, then exit"""


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args in (["-h"], ["--help"]):
        print(USAGE)
        return 0
    if args not in ([], ["migrate"]):
        print(USAGE, file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)  # signoff.store says what was migrated
    try:
        settings = Settings()  # type: ignore[call-arg]
    except ValidationError as e:
        print(f"signoff: {describe_errors(e)}", file=sys.stderr)
        return 2
    try:
        if args == ["migrate"]:
            revision = asyncio.run(migrate(settings))
            print(f"database schema at revision {revision} (head)")
        else:
            asyncio.run(serve(settings))
    except (StartupError, SchemaError) as e:
        print(f"signoff: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
