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
    actions.register(app, service, cards)
    views.register(app, service)
    events.register(app)
    if home is not None:
        home_tab.register(app, home)
    if commands is not None:
        slash.register(app, commands)
