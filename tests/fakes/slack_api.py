"""The tests' fake Slack Web API is the sandbox's local Slack (one fake Slack in the repository)."""

from sandbox.slack_api import (  # noqa: F401 - re-exported for the tests
    MAX_MESSAGE_BLOCKS,
    SOCKET_ACK_DEADLINE_SECONDS,
    Call,
    LocalSlack,
    Message,
    SlackError,
    SocketConnection,
    check_blocks,
    check_view,
    known_required_params,
)

FakeSlack = LocalSlack  # the name the tests know it by
