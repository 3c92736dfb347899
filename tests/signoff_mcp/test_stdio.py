"""``signoff-mcp`` over stdio: the SDK's own MCP client starts the installed command as a
subprocess, pointed at the real bot on loopback (``SIGNOFF_URL``, ``SIGNOFF_API_KEY`` and
nothing else), with the fake Slack; and what it says when it cannot start."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client

from tests.api.test_actions_api import SERVICE_KEY, start
from tests.conftest import Harness
from tests.signoff_mcp.flow import ASK, ask_approve_report, refused

COMMAND = Path(sys.executable).parent / "signoff-mcp"  # the console script `pip install` made


@asynccontextmanager
async def stdio_session(tmp_path: Path, env: dict[str, str]) -> AsyncIterator[Client]:
    # Started in an empty folder: it reads no .env nor signoff.toml, only what it is given.
    params = StdioServerParameters(command=str(COMMAND), env=env, cwd=str(tmp_path / "agent"))
    (tmp_path / "agent").mkdir(exist_ok=True)
    with (tmp_path / "stderr.txt").open("w") as errlog:
        async with Client(stdio_client(params, errlog=errlog)) as client:  # type: ignore[arg-type]
            yield client


async def run(env: dict[str, str], cwd: Path, *args: str) -> tuple[int, str, str]:
    """The command run to its end, with only ``env`` besides PATH: (exit code, stdout, stderr)."""
    proc = await asyncio.create_subprocess_exec(
        str(COMMAND), *args, env={"PATH": str(COMMAND.parent), **env}, cwd=str(cwd),
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_list_request_approve_in_slack_get_report(harness: Harness, tmp_path: Path) -> None:
    base = await start(harness, tmp_path)
    async with stdio_session(tmp_path, {"SIGNOFF_URL": base, "SIGNOFF_API_KEY": SERVICE_KEY}) as client:
        await ask_approve_report(harness, client)
        # A bad argument is a tool error, and the server goes on serving.
        text = await refused(client, "request_approval", {**ASK, "action_type": "refund"})
        assert "unknown action_type 'refund'; known: drop_table, restart_service, warm_cache" in text
        assert len((await client.list_tools()).tools) == 4


async def test_a_key_revoked_while_it_runs_is_a_tool_error(harness: Harness, tmp_path: Path) -> None:
    base = await start(harness, tmp_path)
    async with stdio_session(tmp_path, {"SIGNOFF_URL": base, "SIGNOFF_API_KEY": SERVICE_KEY}) as client:
        await harness.restart(api_keys=f"other:service:{'n' * 24}", port=harness.bot.port if harness.bot else 0,
                              signoff_config=str(tmp_path / "signoff.toml"))
        text = await refused(client, "list_action_types", {})
        assert "Signoff refused the API key" in text


async def test_missing_settings_and_a_refused_key_stop_it_with_one_line(harness: Harness, tmp_path: Path) -> None:
    code, out, _err = await run({}, tmp_path, "--help")
    assert code == 0 and "SIGNOFF_URL" in out and "SIGNOFF_API_KEY" in out
    code, _out, err = await run({}, tmp_path, "serve")
    assert code == 2 and "takes no arguments" in err
    code, out, err = await run({}, tmp_path)
    assert code == 2 and out == ""
    assert err.strip().splitlines() == [
        "signoff-mcp: SIGNOFF_URL is required but not set; SIGNOFF_API_KEY is required but not set "
        "(signoff-mcp needs SIGNOFF_URL and SIGNOFF_API_KEY)"
    ]
    code, _out, err = await run({"SIGNOFF_URL": "signoff.example.com", "SIGNOFF_API_KEY": SERVICE_KEY}, tmp_path)
    assert code == 2 and "SIGNOFF_URL must be Signoff's http(s) address" in err and SERVICE_KEY not in err

    base = await start(harness, tmp_path)
    code, out, err = await run({"SIGNOFF_URL": base, "SIGNOFF_API_KEY": "wrong-key-0123456789abcdef"}, tmp_path)
    assert code == 2 and out == ""
    assert err.strip() == f"signoff-mcp: SIGNOFF_API_KEY was refused by Signoff at {base} (401)"
    code, _out, err = await run({"SIGNOFF_URL": base + "/nothing", "SIGNOFF_API_KEY": SERVICE_KEY}, tmp_path)
    assert code == 2 and "has no Actions API (404)" in err
