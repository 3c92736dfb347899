"""The App Home tab: opening it (``app_home_opened`` on the Home tab) publishes the viewer's
Home. Bolt acknowledges the event first; the service logs what fails and never raises."""

from __future__ import annotations

import logging
from typing import Any

from slack_bolt.async_app import AsyncApp

from bot.home import HomeService

log = logging.getLogger(__name__)


def register(app: AsyncApp, home: HomeService) -> None:
    @app.event("app_home_opened")
    async def home_opened(event: dict[str, Any]) -> None:
        if event.get("tab") != "home":
            return  # the Messages tab (off in the manifest, but Slack may still send it)
        user_id = event.get("user")
        if not isinstance(user_id, str) or not user_id:
            log.warning("app_home_opened without a user; ignored")
            return
        await home.opened(user_id)
