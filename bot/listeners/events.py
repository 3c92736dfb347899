"""Events API: Slack telling us our access ended. Signoff cannot post or update cards after
either, so it says so loudly; the decisions already recorded stay in the store."""

from __future__ import annotations

import logging
from typing import Any

from slack_bolt.async_app import AsyncApp

log = logging.getLogger(__name__)


def register(app: AsyncApp) -> None:
    @app.event("app_uninstalled")
    async def uninstalled(event: dict[str, Any]) -> None:
        log.error("Signoff was uninstalled from the workspace: cards can no longer be posted or updated")

    @app.event("tokens_revoked")
    async def revoked(event: dict[str, Any]) -> None:
        log.error(
            "Slack revoked Signoff's tokens (%s): reinstall the app",
            ", ".join(sorted((event.get("tokens") or {}).keys())),
        )
