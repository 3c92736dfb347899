"""The sandbox as ``python app.py demo`` runs it (on a free port, in a scratch directory), and a
real headless Chromium (Debian's, driven by Playwright) to use it as a person would."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

import app

# Debian's chromium (apt-get install chromium); Playwright downloads no browser of its own here.
CHROMIUM = os.environ.get("SIGNOFF_TEST_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
# Where the approve test saves the README's pictures (card.png, modal.png), when set:
# SIGNOFF_SCREENSHOTS=docs .venv/bin/python -m pytest tests/sandbox -k approve
SCREENSHOTS = Path(os.environ["SIGNOFF_SCREENSHOTS"]).resolve() if os.environ.get("SIGNOFF_SCREENSHOTS") else None


def browser_missing() -> str | None:
    if not Path(CHROMIUM).exists():
        return f"no browser: {CHROMIUM} is not installed (apt-get install chromium; CI installs it)"
    try:
        import playwright.async_api  # noqa: F401
    except ImportError:
        return "no browser driver: playwright is not installed (pip install -e '.[test]')"
    return None


class RunningSandbox:
    def __init__(self, url: str, workdir: Path, task: asyncio.Task[None], stop: asyncio.Event) -> None:
        self.url, self.workdir, self.task, self.stop = url, workdir, task, stop


async def start_sandbox(workdir: Path, *, fresh: bool = True) -> RunningSandbox:
    lines: list[str] = []
    ready = asyncio.Event()
    stop = asyncio.Event()

    def told(line: str) -> None:
        lines.append(line)
        ready.set()

    task = asyncio.create_task(app.demo(port=0, fresh=fresh, workdir=workdir, ready=told, stopping=stop))
    waiter = asyncio.create_task(ready.wait())
    await asyncio.wait({task, waiter}, timeout=60, return_when=asyncio.FIRST_COMPLETED)
    waiter.cancel()
    if task.done():
        task.result()  # raises why it did not start
    assert lines, "the sandbox did not say where it serves within 60 s"
    found = re.search(r"http://127\.0\.0\.1:\d+/sandbox", lines[0])
    assert found, lines[0]
    return RunningSandbox(found.group(0), workdir, task, stop)


async def stop_sandbox(running: RunningSandbox) -> None:
    running.stop.set()
    await asyncio.wait_for(running.task, 30)


@pytest.fixture
async def sandbox(tmp_path: Path) -> AsyncIterator[RunningSandbox]:
    running = await start_sandbox(tmp_path)
    try:
        yield running
    finally:
        await stop_sandbox(running)


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    missing = browser_missing()
    if missing is not None:
        if os.environ.get("SIGNOFF_REQUIRE_BROWSER") == "1":  # CI installs one: a skip there is a failure
            pytest.fail(missing)
        pytest.skip(missing)
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        chromium = await p.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            yield chromium
        finally:
            await chromium.close()


@pytest.fixture
async def page(browser: Any, sandbox: RunningSandbox) -> AsyncIterator[Any]:
    if SCREENSHOTS is not None:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    context = await browser.new_context(viewport={"width": 1360, "height": 1000}, device_scale_factor=1)
    page = await context.new_page()
    await page.goto(sandbox.url + "?as=U0SBADA")
    try:
        yield page
    finally:
        await context.close()
