"""One HTTP request to an Actions API, as every source module makes it: the transport's
failures mapped onto the error family (a timeout or a broken connection is transient, an
invalid URL permanent), never an aiohttp exception. What an answer's status means is each
source's own business."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
from yarl import URL

from sources.base import PermanentError, TransientError


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes
    headers: Mapping[str, str]

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


def url_for(base: URL, path: str) -> URL:
    """``path`` (already encoded) under the base URL's own path."""
    return base.with_path(base.raw_path.rstrip("/") + path, encoded=True)


async def send(
    session: aiohttp.ClientSession,
    method: str,
    url: URL,
    *,
    who: str,
    where: str,
    headers: Mapping[str, str],
    timeout: aiohttp.ClientTimeout,
    params: Mapping[str, str] | None = None,
    json: Any = None,
    data: bytes | None = None,
) -> Answer:
    """Send one request and read the whole answer. ``who`` and ``where`` name the source and
    the call in error messages ("FloKit GET /v1/actions: timed out")."""
    try:
        async with session.request(
            method,
            url,
            params=params,
            json=json,
            data=data,
            headers=dict(headers),
            timeout=timeout,
            raise_for_status=False,
        ) as resp:
            return Answer(resp.status, await resp.read(), resp.headers)
    except TimeoutError as exc:  # aiohttp's own timeouts are TimeoutErrors too
        raise TransientError(f"{who} {where}: timed out") from exc
    except aiohttp.InvalidURL as exc:
        raise PermanentError(f"{who} {where}: invalid URL") from exc
    except aiohttp.ClientError as exc:
        raise TransientError(f"{who} {where}: {type(exc).__name__}") from exc
