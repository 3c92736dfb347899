"""Signoff's HTTP adapters other than Slack's: the intake sources push their actions to
(``POST /intake/<source>``), and, later, the agents' own Actions API."""
