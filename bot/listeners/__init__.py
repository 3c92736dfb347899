"""Bolt listeners, split by kind. ``register`` is called once by ``app.py``."""

from __future__ import annotations

from slack_bolt.async_app import AsyncApp

from bot.listeners import actions, events, views
from bot.service import DecisionService


def register(app: AsyncApp, service: DecisionService) -> None:
    actions.register(app, service)
    views.register(app, service)
    events.register(app)
