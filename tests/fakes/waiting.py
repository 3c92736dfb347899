"""The tests' one polling helper is the sandbox's (``sandbox/waiting.py``), which the fake
Slack's ``wait_for`` waits with too: one loop in the repository."""

from sandbox.waiting import describe, eventually  # noqa: F401 - re-exported for the tests
