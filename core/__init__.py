"""Signoff's core: the lifecycle of an action and everything that moves it.

- ``lifecycle``: the states, the decision options an action offers, and the transitions.
- ``registry``: the configured Actions APIs (sources), keyed by an action's ``source``.
- ``ingest``: one idempotent way in for new actions, whether polled or pushed.
- ``decide``: who may decide what, recorded durably (the compare-and-set, audit, outbox).
- ``deliver``: decisions carried upstream once, followed until they land, and settled.
- ``people``: the directory of people (who is this user, are they an approver).
- ``events``: in-process change events (a decision committed, an action changed).
- ``watch``, ``rules``, ``reminders``: rollback conditions, and nothing waiting unnoticed.

The core knows neither Slack nor any one source: adapters (``bot/``, the HTTP API, the
sandbox) call it, and it calls ``store/`` and the sources through ``sources.base``.
"""
