"""Celery: the audit context follows a task from the code that queued it into the worker.

``whodid.celery.install(app)`` connects three of Celery's signals:

- ``before_task_publish``: the queuing code's :func:`whodid.snapshot` travels
  in the task message's headers (``whodid_context``);
- ``task_prerun``: the worker restores it for the task, so a refund queued by
  ada@ in request ``req_1`` is ada@ in ``req_1`` when it runs; a task queued
  with no context runs as the system actor named after the task;
- ``task_postrun``: the context ends with the task.

Needs the ``whodid[celery]`` extra.
"""

from __future__ import annotations

import contextlib
from typing import Any

try:
    from celery import Celery
    from celery.signals import before_task_publish, task_postrun, task_prerun
except ImportError as missing:  # pragma: no cover - the extra is not installed
    raise ImportError("whodid.celery needs Celery: pip install 'whodid[celery]'") from missing

from whodid.context import Actor, audit_context, restore, snapshot

HEADER = "whodid_context"

_open: dict[str, contextlib.ExitStack] = {}


def install(app: Celery) -> Celery:
    """Carry the audit context into ``app``'s tasks; returns ``app``. Idempotent."""
    before_task_publish.connect(_publish, weak=False, dispatch_uid="whodid.publish")
    task_prerun.connect(_prerun, weak=False, dispatch_uid="whodid.prerun")
    task_postrun.connect(_postrun, weak=False, dispatch_uid="whodid.postrun")
    return app


def _publish(headers: dict[str, Any] | None = None, **_: Any) -> None:
    snap = snapshot()
    if headers is not None and snap is not None:
        headers[HEADER] = snap


def _carried(task: Any) -> dict[str, Any] | None:
    request = task.request
    snap = getattr(request, HEADER, None)
    if snap is None and isinstance(getattr(request, "headers", None), dict):
        snap = request.headers.get(HEADER)
    return snap if isinstance(snap, dict) else None


def _prerun(task_id: str | None = None, task: Any = None, **_: Any) -> None:
    if task_id is None or task is None:
        return
    stack = contextlib.ExitStack()
    snap = _carried(task)
    if snap is not None:
        stack.enter_context(restore(snap))
    else:
        stack.enter_context(audit_context(actor=Actor.system(str(task.name))))
    _open[task_id] = stack


def _postrun(task_id: str | None = None, **_: Any) -> None:
    stack = _open.pop(task_id or "", None)
    if stack is not None:
        stack.close()
