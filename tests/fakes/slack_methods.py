"""The Web API method table lives with the sandbox's local Slack (``sandbox/slack_methods.py``)."""

from sandbox.slack_methods import EXTRA_REQUIRED, NEWER_THAN_SPEC, SPEC_METHODS, known_required_params  # noqa: F401
