"""Signoff's MCP server: its own Actions API as tools for AI agents (the Model Context Protocol).

``tools.py`` is the server (built with the official ``mcp`` SDK); ``stdio.py`` runs it as the
``signoff-mcp`` command over stdio, against a Signoff at ``SIGNOFF_URL``; ``http.py`` mounts it
on the bot at ``/mcp`` (streamable HTTP). Both act as the caller's API key through the API's
typed client, so the API's rules hold as they do for any client.
"""
