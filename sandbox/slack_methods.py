"""The Slack Web API methods FakeSlack answers, and the arguments each requires.

Facts from Slack's method documentation (api.slack.com/methods), kept here so the fake needs
nothing outside the repository. ``tests/test_slack_published.py`` checks this table against
Slack's published OpenAPI spec when the shared folder holding it is beside the clone.
"""

from __future__ import annotations

# Method -> the arguments its spec marks required (``token`` aside), as the spec lists them.
SPEC_METHODS: dict[str, tuple[str, ...]] = {
    "auth.test": (),
    "chat.getPermalink": ("channel", "message_ts"),
    "chat.postEphemeral": ("channel", "user"),
    "chat.postMessage": ("channel",),
    "chat.update": ("channel", "ts"),
    "conversations.history": (),
    "conversations.replies": (),
    "usergroups.users.list": ("usergroup",),
    "users.info": (),
    "users.lookupByEmail": ("email",),
    "views.open": ("trigger_id", "view"),
    "views.publish": ("user_id", "view"),
    "views.push": ("trigger_id", "view"),
    "views.update": (),
}

# Where the (2020) spec is looser than today's Slack: arguments the current method docs
# require although the spec does not mark them required.
EXTRA_REQUIRED: dict[str, tuple[str, ...]] = {
    "conversations.history": ("channel",),
    "conversations.replies": ("channel", "ts"),
    "users.info": ("user",),
    "views.update": ("view",),
}

# Methods Slack added after that spec, with the arguments their docs require (token aside).
NEWER_THAN_SPEC: dict[str, tuple[str, ...]] = {
    "apps.connections.open": (),  # Socket Mode (2021); takes the app-level token
}


def known_required_params(method: str) -> tuple[str, ...] | None:
    """The arguments ``method`` requires (token aside), or None when it is not a method here."""
    if method in SPEC_METHODS:
        return SPEC_METHODS[method]
    return NEWER_THAN_SPEC.get(method)
