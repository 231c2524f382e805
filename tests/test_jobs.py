"""The audit context follows work into queues: snapshot/restore, Celery, RQ (real Redis)."""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker

import whodid
from whodid import ALL_TENANTS, Actor, Auditor, audit_context


class Base(DeclarativeBase):
    pass


class Payment(Base):
    __tablename__ = "payments"
    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    status: Mapped[str] = mapped_column(sa.String(20))


ADA = Actor.user("usr_ada", label="ada@example.com")

# The payments app of the workers below: module-level, as a worker imports it.
STATE: dict[str, Any] = {}


def setup_app(url: str) -> tuple[Auditor, Any]:
    engine = sa.create_engine(url)
    Base.metadata.create_all(engine)
    auditor = Auditor(engine)
    auditor.create_all()
    auditor.track(Payment)
    Session = auditor.instrument(sessionmaker(engine))
    with Session.begin() as s:
        s.add_all(Payment(id=i, status="paid") for i in range(1, 5))
    STATE.update(auditor=auditor, Session=Session)
    return auditor, Session


def refund(payment_id: int) -> str:
    with STATE["Session"].begin() as s:
        s.get(Payment, payment_id).status = "refunded"
    return "refunded"


def refunds(auditor: Auditor) -> dict[str, Any]:
    found = auditor.list(tenant_id=ALL_TENANTS, action="payments.update").entries
    return {e.entity_id: e for e in found}


def test_a_snapshot_is_json_and_restores_anywhere(sqlite_url):
    auditor, _ = setup_app(sqlite_url)
    assert whodid.snapshot() is None
    with audit_context(actor=ADA, tenant_id="org_1", request_id="req_1", ip="203.0.113.9"):
        snap = whodid.snapshot()
    assert snap is not None and json.loads(json.dumps(snap)) == snap
    with whodid.restore(snap):
        refund(1)
    with whodid.restore(None):  # nothing captured: nothing restored
        refund(2)
    done = refunds(auditor)
    assert (done["1"].actor_id, done["1"].tenant_id, done["1"].request_id) == (
        "usr_ada",
        "org_1",
        "req_1",
    )
    assert done["1"].ip == "203.0.113.9"
    assert done["2"].actor_type == "system" and done["2"].actor_id is None


def test_a_snapshot_in_a_request_resolves_the_middlewares_context(sqlite_url):
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route
    from starlette.testclient import TestClient

    from whodid.asgi import AuditMiddleware

    async def endpoint(request: Any) -> JSONResponse:
        return JSONResponse(whodid.snapshot())

    app = Starlette(routes=[Route("/", endpoint)])
    app.add_middleware(
        AuditMiddleware,
        actor=lambda r: Actor.user(r.headers["x-user"]) if "x-user" in r.headers else None,
        tenant=lambda r: r.headers.get("x-org"),
    )
    client = TestClient(app)
    snap = client.get("/", headers={"x-user": "usr_1", "x-org": "org_9"}).json()
    assert snap["actor"] == {"type": "user", "id": "usr_1", "label": None}
    assert snap["tenant_id"] == "org_9" and snap["request_id"]
    anonymous = client.get("/").json()
    assert anonymous["actor"] == {"type": "anonymous", "id": None, "label": None}


def test_celery_carries_the_context_into_a_real_worker(redis_url, sqlite_url):
    from celery import Celery
    from celery.contrib.testing.worker import start_worker

    import whodid.celery

    auditor, _ = setup_app(sqlite_url)
    app = Celery("whodid_jobs_test", broker=redis_url, backend=redis_url)
    task = app.task(name="payments.refund")(refund)
    whodid.celery.install(app)
    with start_worker(app, pool="solo", perform_ping_check=False, shutdown_timeout=20):
        with audit_context(actor=ADA, tenant_id="org_1", request_id="req_celery"):
            queued = task.delay(1)
        unqueued = task.delay(2)  # queued by nobody in particular
        assert queued.get(timeout=30) == unqueued.get(timeout=30) == "refunded"
    done = refunds(auditor)
    assert (done["1"].actor_type, done["1"].actor_id) == ("user", "usr_ada")
    assert (done["1"].tenant_id, done["1"].request_id) == ("org_1", "req_celery")
    assert (done["2"].actor_type, done["2"].actor_id) == ("system", "payments.refund")
    assert whodid.current_context() is None  # nothing leaks out of the tasks


def run_with_context(snap: dict[str, Any] | None, payment_id: int) -> str:
    """What any other queue needs: the two functions, around the job."""
    with whodid.restore(snap):
        return refund(payment_id)


def test_rq_needs_only_snapshot_and_restore(redis_url, sqlite_url):
    from redis import Redis
    from rq import Queue, SimpleWorker

    auditor, _ = setup_app(sqlite_url)
    connection = Redis.from_url(redis_url)
    queue = Queue("whodid-test", connection=connection)
    with audit_context(actor=ADA, tenant_id="org_2", request_id="req_rq"):
        queue.enqueue(run_with_context, whodid.snapshot(), 3)
    SimpleWorker([queue], connection=connection).work(burst=True)
    done = refunds(auditor)
    assert (done["3"].actor_id, done["3"].tenant_id, done["3"].request_id) == (
        "usr_ada",
        "org_2",
        "req_rq",
    )
