"""First rough figures for the capture core (the benchmark suite makes them rigorous).

    python benchmarks/rough_capture.py [postgresql+psycopg://...]

1. In-process ASGI request that writes nothing: bare Starlette vs AuditMiddleware.
2. Single-row insert / update / delete transactions: bare vs audited, SQLite file (WAL)
   and, when a URL is given, PostgreSQL.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import tempfile
import time
from decimal import Decimal

import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from whodid import Actor, Auditor, audit_context
from whodid.asgi import AuditMiddleware


def asgi_app(audited: bool) -> Starlette:
    async def hello(request):  # type: ignore[no-untyped-def]
        return PlainTextResponse("ok")

    app = Starlette(routes=[Route("/", hello)])
    if audited:
        app.add_middleware(AuditMiddleware, actor=lambda r: None)
    return app


async def per_request(app: Starlette, n: int) -> float:
    scope = {
        "type": "http",
        "method": "GET",
        "path": "/",
        "raw_path": b"/",
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"x"), (b"user-agent", b"bench")],
        "client": ("127.0.0.1", 1),
        "server": ("x", 80),
        "scheme": "http",
        "http_version": "1.1",
        "asgi": {"version": "3.0"},
    }

    async def receive():  # type: ignore[no-untyped-def]
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):  # type: ignore[no-untyped-def]
        pass

    for _ in range(200):
        await app(dict(scope), receive, send)
    t = time.perf_counter()
    for _ in range(n):
        await app(dict(scope), receive, send)
    return (time.perf_counter() - t) / n * 1e6


class Base(DeclarativeBase):
    pass


class Item(Base):
    __tablename__ = "items"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(50))
    price: Mapped[Decimal] = mapped_column(sa.Numeric(10, 2))


class AuditedItem(Base):
    __tablename__ = "audited_items"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(50))
    price: Mapped[Decimal] = mapped_column(sa.Numeric(10, 2))


def crud(url: str, n: int) -> dict[str, tuple[float, float]]:
    engine = sa.create_engine(url)
    if engine.dialect.name == "sqlite":
        sa.event.listen(engine, "connect", lambda c, r: c.execute("PRAGMA journal_mode=WAL"))
    Base.metadata.drop_all(engine)
    auditor = Auditor(engine)
    auditor.track(AuditedItem, feature="item")
    Base.metadata.create_all(engine)
    auditor.create_all()
    Session = sessionmaker(engine)
    auditor.instrument(Session)
    results: dict[str, list[float]] = {}
    for model, key in ((Item, "bare"), (AuditedItem, "audited")):
        ins, upd, dele = [], [], []
        with audit_context(actor=Actor.user("usr_1", "a@example.com"), request_id="r1"):
            for i in range(n):
                with Session() as s:
                    t = time.perf_counter()
                    obj = model(name=f"n{i}", price=Decimal("1.00"))
                    s.add(obj)
                    s.commit()
                    t1 = time.perf_counter()
                    obj.name = f"m{i}"
                    s.commit()
                    t2 = time.perf_counter()
                    s.delete(obj)
                    s.commit()
                    t3 = time.perf_counter()
                ins.append(t1 - t)
                upd.append(t2 - t1)
                dele.append(t3 - t2)
        results[key] = [statistics.median(x) * 1e6 for x in (ins, upd, dele)]
    engine.dispose()
    return {
        op: (results["bare"][i], results["audited"][i])
        for i, op in enumerate(("insert", "update", "delete"))
    }


def main() -> None:
    bare = min(asyncio.run(per_request(asgi_app(False), 20000)) for _ in range(3))
    audited = min(asyncio.run(per_request(asgi_app(True), 20000)) for _ in range(3))
    print(
        f"ASGI request writing nothing: bare {bare:.1f} us, audited {audited:.1f} us "
        f"(+{audited - bare:.1f} us)"
    )
    urls = [f"sqlite:///{tempfile.mkdtemp()}/bench.db"] + sys.argv[1:]
    for url in urls:
        for op, (b, a) in crud(url, 300).items():
            print(
                f"{url.split(':')[0]:>20} {op:>6}: bare {b:7.0f} us  audited {a:7.0f} us  "
                f"{a / b:.2f}x"
            )


if __name__ == "__main__":
    main()
