"""What both benchmarks share: the repository on ``sys.path``, the fixed test identities, a
scratch database per run (a temp SQLite file or a fresh PostgreSQL database, dropped after),
percentiles and a description of the machine.

Imported by ``bench/ack.py`` and ``bench/poll.py`` as a sibling module (``python bench/x.py``
puts ``bench/`` first on ``sys.path``); it then puts the repository root there too, so that
``app``, ``store``, ``bot`` and ``tests.fakes`` import as they do in the tests.
"""

from __future__ import annotations

import contextlib
import math
import os
import platform
import sys
import tempfile
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from tests.fakes.identities import (  # noqa: E402,F401  (after the sys.path insert above)
    APPROVER,
    APPROVER_EMAIL,
    BOT_TOKEN,
    CHANNEL,
    FLOKIT_KEY,
    SIGNING_SECRET,
)
from tests.fakes.identities import POSTGRES_URL as DEFAULT_POSTGRES_URL  # noqa: E402


@contextlib.contextmanager
def scratch_database(kind: str, postgres_url: str = DEFAULT_POSTGRES_URL) -> Iterator[str]:
    """A fresh, empty database URL for one run; removed afterwards whatever happens."""
    if kind == "sqlite":
        with tempfile.TemporaryDirectory(prefix="signoff-bench-") as tmp:
            yield f"sqlite:///{Path(tmp) / 'signoff.db'}"
        return
    if kind != "postgresql":
        raise ValueError(f"unknown store {kind!r}")
    import psycopg

    name = f"signoff_bench_{uuid.uuid4().hex[:12]}"
    try:
        admin = psycopg.connect(postgres_url, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as e:
        first = (str(e).strip().splitlines() or [""])[0]
        raise SystemExit(f"PostgreSQL not reachable at {postgres_url} ({first}); pass --postgres-url") from None
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield f"{postgres_url.rsplit('/', 1)[0]}/{name}"
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100); NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine() -> dict[str, Any]:
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu_model(),
        "python": platform.python_version(),
        "platform": platform.platform(terse=True),
    }


def code_version() -> str:
    """The commit benchmarked, and whether the working tree differed from it (read-only git)."""
    import subprocess

    try:
        head = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10
        ).stdout.strip()
        changed = subprocess.run(
            ["git", "--no-optional-locks", "-C", str(REPO_ROOT), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{head or 'unknown'}{' + uncommitted changes' if changed else ''}"


def describe_machine() -> str:
    m = machine()
    return (f"machine: {m['nproc']} cores, {m['cpu']}, Python {m['python']}, {m['platform']}\n"
            f"code: {code_version()}")
