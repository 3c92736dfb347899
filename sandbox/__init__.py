"""The sandbox: Signoff in a browser, with no Slack workspace and no Actions API.

A local, Slack-like page and Web API (``slack_api``: the same server the tests use as their
fake Slack), signed requests to the bot as Slack sends them (``slack_requests``), the example
actions seeded through Signoff's own Actions API, and metric values a visitor sets for the
rollback watch. ``python app.py demo`` builds it; ``app.py`` stays the composition root.
"""
