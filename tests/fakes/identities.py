"""The workspace the tests and benchmarks pretend to be: secrets, channel and people.
Plain constants (no pytest), so that bench/ can use them too."""

from __future__ import annotations

import os

SIGNING_SECRET = "test-signing-secret"
BOT_TOKEN = "xoxb-test-token"
FLOKIT_KEY = "test-flokit-key"
CHANNEL = "C0CARDS"
APPROVER = "U0APPROVER"
APPROVER_EMAIL = "approver@example.com"
OTHER_APPROVER = "U0OTHER"
OUTSIDER = "U0OUTSIDER"
GROUP = "S0LEADS"
GROUP_MEMBER = "U0LEAD"

POSTGRES_URL = os.environ.get("SIGNOFF_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
