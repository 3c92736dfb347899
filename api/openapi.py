"""The OpenAPI 3.1 document of Signoff's own Actions API (``GET /openapi.json``)."""

from __future__ import annotations

from typing import Any


def document() -> dict[str, Any]:
    return {"openapi": "3.1.0", "info": {"title": "Signoff Actions API", "version": "1"}, "paths": {}}
