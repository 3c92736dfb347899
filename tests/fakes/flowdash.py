"""A fake Flowdash Actions API (seed 001), served over real loopback HTTP for tests.

Built from the document: ``GET /api/v1/workflows/<wf>/tasks/<id>/actions``, ``POST
/api/v1/workflows/<wf>/executions`` and ``GET /api/v1/workflows/<wf>/executions/<id>``,
Bearer auth, 422 with ``errors`` for unmet requirements, executions that run asynchronously
(Pending, then Success or Fail with ``errors``).

Where the document is silent, the fake chooses: while an execution runs, the task offers no
actions (so a second execution of the same action is refused); on Success the task offers
what the test said comes next (nothing by default); on Fail it offers its actions again. An
action the task does not offer is a 422 too; a ``performed_by`` the test forbade is a 403.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, Final

from aiohttp import web

from tests.fakes.flokit import Recorded
from multidict import CIMultiDict, CIMultiDictProxy
from tests.fakes.server import LoopbackServer

DEFAULT_API_KEY: Final = "test-flowdash-key"
APPROVE_REJECT: Final = ({"id": "edHR10", "name": "Approve"}, {"id": "PvHaOO", "name": "Reject"})


@dataclass
class Task:
    actions: list[dict[str, str]]
    # What the task offers once an action's execution succeeded (by action id; default: nothing).
    next_actions: dict[str, list[dict[str, str]]] = field(default_factory=dict)
    requirements: list[str] = field(default_factory=list)  # unmet: every execution POST answers 422


@dataclass
class Execution:
    id: str
    workflow_id: str
    task_id: str
    action_id: str
    performed_by: str | None
    status: str = "Pending"
    errors: list[str] = field(default_factory=list)


@dataclass
class _Fault:
    path_suffix: str
    method: str | None
    status: int
    times: int
    after_effect: bool
    delay: float


class FakeFlowdash(LoopbackServer):
    def __init__(self, *, api_key: str = DEFAULT_API_KEY) -> None:
        super().__init__()
        self.api_key = api_key
        self.tasks: dict[tuple[str, str], Task] = {}
        self.executions: dict[str, Execution] = {}
        self.requests: list[Recorded] = []
        self.forbidden: set[str] = set()  # performed_by emails without permission: 403
        self.execution_seconds = 0.3  # how long an execution stays Pending
        self.fail_with: list[str] = []  # the next execution ends Fail with these errors
        self.hold = False  # executions stay Pending until release()
        self._faults: list[_Fault] = []
        self._seq = 0
        self._timers: set[asyncio.Task[None]] = set()

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._middleware])
        app.router.add_get("/api/v1/workflows/{wf}/tasks/{task}/actions", self._actions)
        app.router.add_post("/api/v1/workflows/{wf}/executions", self._execute)
        app.router.add_get("/api/v1/workflows/{wf}/executions/{id}", self._execution)
        return app

    async def stop(self) -> None:
        for timer in list(self._timers):
            timer.cancel()
        await super().stop()

    # ---- test controls ----

    def add_task(
        self, workflow_id: str, task_id: str, actions: list[dict[str, str]] | tuple[dict[str, str], ...] = APPROVE_REJECT,
        *, next_actions: dict[str, list[dict[str, str]]] | None = None, requirements: list[str] | None = None,
    ) -> Task:
        task = Task([dict(a) for a in actions], dict(next_actions or {}), list(requirements or []))
        self.tasks[(workflow_id, task_id)] = task
        return task

    def fail_next(
        self, path_suffix: str, *, method: str | None = None, status: int = 503, times: int = 1,
        after_effect: bool = False, delay: float = 0.0,
    ) -> None:
        """The next ``times`` matching requests get ``status`` (0: the connection is reset);
        ``after_effect``: the request takes effect first, only its answer is lost."""
        self._faults.append(_Fault(path_suffix, method, status, times, after_effect, delay))

    def calls(self, method: str | None = None, path_suffix: str | None = None) -> list[Recorded]:
        return [r for r in self.requests if (method is None or r.method == method)
                and (path_suffix is None or r.path.endswith(path_suffix))]

    def executions_of(self, task_id: str) -> list[Execution]:
        return [e for e in self.executions.values() if e.task_id == task_id]

    def release(self) -> None:
        """End every held execution (as :attr:`hold` stopped them)."""
        self.hold = False
        for execution in self.executions.values():
            if execution.status == "Pending":
                self._finish(execution)

    # ---- plumbing ----

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        body = await request.read()
        try:
            parsed = json.loads(body) if body else None
        except ValueError:
            parsed = None
        self.requests.append(Recorded(
            method=request.method, path=request.path, raw_path=request.raw_path.split("?", 1)[0],
            query=dict(request.query), json=parsed, headers=CIMultiDictProxy(CIMultiDict(request.headers)), body=body,
        ))
        fault = self._take_fault(request)
        if fault is None:
            return await self._handle(request, handler)
        if fault.after_effect:
            await self._handle(request, handler)
        await self._wait(fault.delay)
        if fault.status == 0:
            self._reset(request)
        return web.json_response({"message": HTTPStatus(fault.status or 500).phrase}, status=fault.status or 500)

    async def _handle(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if request.headers.get("Authorization") != f"Bearer {self.api_key}":
            return web.json_response({"message": "Unauthorized"}, status=401)
        try:
            return await handler(request)
        except web.HTTPException as exc:
            return web.json_response({"message": exc.reason}, status=exc.status)

    def _take_fault(self, request: web.Request) -> _Fault | None:
        for fault in self._faults:
            if request.path.endswith(fault.path_suffix) and fault.method in (None, request.method):
                fault.times -= 1
                if fault.times <= 0:
                    self._faults.remove(fault)
                return fault
        return None

    # ---- endpoints ----

    async def _actions(self, request: web.Request) -> web.Response:
        task = self.tasks.get((request.match_info["wf"], request.match_info["task"]))
        if task is None:
            return web.json_response({"message": "Task not found"}, status=404)
        return web.json_response(task.actions)

    async def _execute(self, request: web.Request) -> web.Response:
        workflow_id = request.match_info["wf"]
        try:
            body = await request.json()
        except ValueError:
            return web.json_response({"message": "invalid JSON"}, status=400)
        if not isinstance(body, dict) or not isinstance(body.get("task_id"), str) or not isinstance(body.get("action_id"), str):
            return web.json_response({"message": "task_id and action_id are required"}, status=400)
        task = self.tasks.get((workflow_id, body["task_id"]))
        if task is None:
            return web.json_response({"message": "Task not found"}, status=404)
        performed_by = body.get("performed_by")
        if performed_by in self.forbidden:
            return web.json_response({"message": f"{performed_by} may not perform this action"}, status=403)
        if body["action_id"] not in {a["id"] for a in task.actions}:
            return web.json_response({"status": "Fail", "errors": ["Action is not available"]}, status=422)
        if task.requirements:
            return web.json_response({"status": "Fail", "errors": list(task.requirements)}, status=422)
        self._seq += 1
        execution = Execution(f"ex{self._seq:04d}", workflow_id, body["task_id"], body["action_id"], performed_by)
        self.executions[execution.id] = execution
        execution.previous = list(task.actions)  # type: ignore[attr-defined]
        task.actions = []  # running: nothing else can be done to the task meanwhile
        if not self.hold:
            timer = asyncio.ensure_future(self._finish_later(execution))
            self._timers.add(timer)
            timer.add_done_callback(self._timers.discard)
        return web.json_response({"id": execution.id, "status": "Pending"})

    async def _finish_later(self, execution: Execution) -> None:
        await self._wait(self.execution_seconds)
        self._finish(execution)

    def _finish(self, execution: Execution) -> None:
        if execution.status != "Pending":
            return
        task = self.tasks[(execution.workflow_id, execution.task_id)]
        if self.fail_with:
            execution.status, execution.errors, self.fail_with = "Fail", list(self.fail_with), []
            task.actions = execution.previous  # type: ignore[attr-defined]
            return
        execution.status = "Success"
        task.actions = [dict(a) for a in task.next_actions.get(execution.action_id, [])]

    async def _execution(self, request: web.Request) -> web.Response:
        execution = self.executions.get(request.match_info["id"])
        if execution is None or execution.workflow_id != request.match_info["wf"]:
            return web.json_response({"message": "Execution not found"}, status=404)
        answer: dict[str, Any] = {"id": execution.id, "status": execution.status}
        if execution.status == "Fail":
            answer["errors"] = execution.errors
        return web.json_response(answer)
