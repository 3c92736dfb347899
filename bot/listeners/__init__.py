"""Bolt listeners, split by kind. ``register`` is called once by ``app.py``."""

from __future__ import annotations

from slack_bolt.async_app import AsyncApp

from bot.cards import CardReader
from bot.command_service import CommandService
from bot.home import HomeService
from bot.listeners import actions, events, views
from bot.listeners import commands as slash
from bot.listeners import home as home_tab
from core.decide import DecisionService


def register(
    app: AsyncApp,
    service: DecisionService,
    *,
    cards: CardReader,
    home: HomeService | None = None,
    commands: CommandService | None = None,
) -> None:
    # Bolt tries the listeners in the order they were registered, and each one passed over
    # costs a matcher call with its arguments built (about 25 µs): the two modal submissions
    # (each a decision) first, then the seven buttons' listeners.
    views.register(app, service)
    actions.register(app, service, cards)
    events.register(app)
    if home is not None:
        home_tab.register(app, home)
    if commands is not None:
        slash.register(app, commands)
