"""What Slack sends and answers lives with the sandbox's local Slack (``sandbox/slack_shapes.py``)."""

from sandbox.slack_shapes import *  # noqa: F401,F403 - re-exported for the tests
