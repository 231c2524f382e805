"""The demo: a small payments app on embedded SQLite, audited by whodid.

``whodid demo`` serves it. It shows the whole path with no audit code in the
endpoints: the middleware names the actor (a dashboard user from a session
cookie, or an API key from a bearer token), the ORM hooks record every change,
``/audit/`` is the audit log dashboard (``whodid.web.audit_app`` mounted) and
``/audit/recent`` lists what was recorded.
"""

from __future__ import annotations

import html
import secrets
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from decimal import Decimal, InvalidOperation
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import HTTPConnection, Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route

from whodid.auditor import Auditor
from whodid.capture.asgi import AuditMiddleware
from whodid.context import Actor, audit_context
from whodid.tenancy import ALL_TENANTS
from whodid.web import Viewer, audit_app

DEFAULT_DB = "sqlite:///whodid-demo.sqlite3"

# Fixed credentials of the demo: two workspaces, a user and an API key in each.
USERS = {
    "usr_ada": ("ada@acme.example", "org_acme", "owner"),
    "usr_bob": ("bob@acme.example", "org_acme", "member"),
    "usr_eve": ("eve@globex.example", "org_globex", "owner"),
}
API_KEYS = {
    "sk_live_acme_4f9a2c": ("key_acme_1", "org_acme"),
    "sk_live_globex_77be01": ("key_globex_1", "org_globex"),
}


class Base(DeclarativeBase):
    pass


class Customer(Base):
    __tablename__ = "customers"

    id: Mapped[str] = mapped_column(sa.String(40), primary_key=True)
    org_id: Mapped[str] = mapped_column(sa.String(40))
    email: Mapped[str] = mapped_column(sa.String(200))
    name: Mapped[str] = mapped_column(sa.String(200))
    tax_id: Mapped[str | None] = mapped_column(sa.String(40))
    profile: Mapped[dict[str, Any]] = mapped_column(sa.JSON, default=dict)


class Payment(Base):
    __tablename__ = "payments"

    id: Mapped[str] = mapped_column(sa.String(40), primary_key=True)
    org_id: Mapped[str] = mapped_column(sa.String(40))
    customer_id: Mapped[str] = mapped_column(sa.ForeignKey("customers.id"))
    amount: Mapped[Decimal] = mapped_column(sa.Numeric(12, 2))
    currency: Mapped[str] = mapped_column(sa.String(3))
    status: Mapped[str] = mapped_column(sa.String(20), default="succeeded")


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(8)}"


# -- who is calling: resolvers for the middleware -----------------------------


def _bearer(conn: HTTPConnection) -> tuple[str, str] | None:
    auth = conn.headers.get("authorization", "")
    token = auth.removeprefix("Bearer ").strip()
    return API_KEYS.get(token)


def resolve_actor(conn: HTTPConnection) -> Actor | None:
    key = _bearer(conn)
    if key is not None:
        token = conn.headers["authorization"].removeprefix("Bearer ").strip()
        return Actor.api_key(key[0], label=token[:12])  # a prefix, never the secret
    user = USERS.get(conn.cookies.get("session", ""))
    if user is not None:
        return Actor.user(conn.cookies["session"], label=user[0])
    return None


def resolve_tenant(conn: HTTPConnection) -> str | None:
    key = _bearer(conn)
    if key is not None:
        return key[1]
    user = USERS.get(conn.cookies.get("session", ""))
    return user[1] if user else None


def resolve_passkey(conn: HTTPConnection) -> bool:
    # Stands in for "this session was verified with WebAuthn".
    return conn.headers.get("x-passkey") == "1"


def viewer_of(conn: HTTPConnection) -> Viewer | None:
    """Who reads the audit log: the session's user, in their workspace and role."""
    user_id = conn.cookies.get("session", "")
    if user_id not in USERS:
        return None
    email, org, role = USERS[user_id]
    return Viewer(tenant_id=org, role=role, actor=Actor.user(user_id, label=email))


# -- the app ------------------------------------------------------------------


class Demo:
    """The demo's database, auditor and session factory."""

    def __init__(self, url: str = DEFAULT_DB) -> None:
        self.engine = sa.create_engine(url)
        self.auditor = Auditor(self.engine)
        self.auditor.track(Customer, feature="customer", redact={"tax_id"}, tenant="org_id")
        self.auditor.track(Payment, feature="payment", tenant="org_id")
        self.Session = sessionmaker(self.engine, expire_on_commit=False)
        self.auditor.instrument(self.Session)

    def create_all(self) -> None:
        Base.metadata.create_all(self.engine)
        self.auditor.create_all()

    @contextmanager
    def session(self) -> Iterator[Session]:
        with self.Session.begin() as session:
            yield session

    def seed(self) -> None:
        """Sample activity from users, API keys and a job, unless already there."""
        if self.auditor.count(tenant_id=ALL_TENANTS):
            return
        for user_id, (email, org, _) in USERS.items():
            with (
                audit_context(
                    actor=Actor.user(user_id, label=email),
                    tenant_id=org,
                    passkey=user_id != "usr_bob",
                    ip="81.2.69.160",
                    user_agent="Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) "
                    "AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36",
                    request_id=new_id("req"),
                ),
                self.session() as s,
            ):
                cus = Customer(
                    id=new_id("cus"),
                    org_id=org,
                    email=f"customer-of-{user_id}@example.com",
                    name="Jane Doe",
                    tax_id="DE123456789",
                    profile={"address": {"city": "Berlin"}, "tags": ["vip"]},
                )
                s.add(cus)
                s.flush()
                s.add(
                    Payment(
                        id=new_id("pay"),
                        org_id=org,
                        customer_id=cus.id,
                        amount=Decimal("150.00"),
                        currency="EUR",
                    )
                )
        with audit_context(actor=Actor.system("nightly-settlement")), self.session() as s:
            for payment in s.scalars(sa.select(Payment)):
                payment.status = "settled"
        self.auditor.record(
            "auth.signin.failed",
            entity=("user", "usr_bob"),
            actor=Actor("anonymous"),
            tenant_id="org_acme",
            metadata={"reason": "wrong password"},
        )

    # Endpoints: plain CRUD, no audit code anywhere below. They talk to SQLite
    # synchronously; on an embedded file that is quicker than a thread hop.

    async def create_customer(self, request: Request) -> Response:
        body = await _json(request)
        org = resolve_tenant(request)
        if org is None:
            return _error(401, "unauthenticated", "sign in or send an API key")
        if not isinstance(body.get("email"), str):
            return _error(400, "invalid_request", "email is required")
        with self.session() as s:
            cus = Customer(
                id=new_id("cus"),
                org_id=org,
                email=body["email"],
                name=str(body.get("name", "")),
                tax_id=body.get("tax_id"),
                profile=body.get("profile") or {},
            )
            s.add(cus)
        return JSONResponse({"id": cus.id}, status_code=201)

    async def update_customer(self, request: Request) -> Response:
        body = await _json(request)
        with self.session() as s:
            cus = s.get(Customer, request.path_params["id"])
            if cus is None or cus.org_id != resolve_tenant(request):
                return _error(404, "not_found", "no such customer")
            for field in ("email", "name", "tax_id", "profile"):
                if field in body:
                    setattr(cus, field, body[field])
        return JSONResponse({"id": cus.id})

    async def delete_customer(self, request: Request) -> Response:
        with self.session() as s:
            cus = s.get(Customer, request.path_params["id"])
            if cus is None or cus.org_id != resolve_tenant(request):
                return _error(404, "not_found", "no such customer")
            s.execute(sa.delete(Payment).where(Payment.customer_id == cus.id))
            s.delete(cus)
        return Response(status_code=204)

    async def create_payment(self, request: Request) -> Response:
        body = await _json(request)
        org = resolve_tenant(request)
        try:
            amount = Decimal(str(body.get("amount")))
        except InvalidOperation:
            return _error(400, "invalid_request", "amount must be a decimal string")
        with self.session() as s:
            cus = s.get(Customer, str(body.get("customer_id")))
            if cus is None or cus.org_id != org:
                return _error(404, "not_found", "no such customer")
            pay = Payment(
                id=new_id("pay"),
                org_id=org,
                customer_id=cus.id,
                amount=amount,
                currency=str(body.get("currency", "EUR"))[:3],
            )
            s.add(pay)
        return JSONResponse({"id": pay.id}, status_code=201)

    async def refund_payment(self, request: Request) -> Response:
        with self.session() as s:
            pay = s.get(Payment, request.path_params["id"])
            if pay is None or pay.org_id != resolve_tenant(request):
                return _error(404, "not_found", "no such payment")
            pay.status = "refunded"
            # A business event beside the row change, in the same transaction.
            self.auditor.record(
                "payment.refund",
                entity=("payment", pay.id),
                metadata={"amount": pay.amount, "currency": pay.currency},
                session=s,
            )
        return JSONResponse({"id": pay.id, "status": "refunded"})

    async def recent(self, request: Request) -> Response:
        org = resolve_tenant(request)
        if org is None:  # never "the entries with no tenant" for a stranger
            return JSONResponse({"data": []})
        page = await run_in_threadpool(lambda: self.auditor.list(tenant_id=org, limit=50))
        return JSONResponse({"data": [e.to_dict() for e in page.entries]})

    async def index(self, request: Request) -> Response:
        if "text/html" in request.headers.get("accept", ""):
            return HTMLResponse(_home_page(request.cookies.get("session")))
        return JSONResponse(
            {
                "app": "whodid demo",
                "dashboard": "/audit/  (sign in first: /signin/usr_ada)",
                "try": [
                    "curl -b session=usr_ada localhost:8000/audit/recent",
                    "curl -H 'Authorization: Bearer sk_live_acme_4f9a2c' -d "
                    '\'{"email": "new@example.com"}\' localhost:8000/customers',
                ],
            }
        )

    def app(self) -> Starlette:
        @asynccontextmanager
        async def lifespan(app: Starlette) -> AsyncIterator[None]:
            self.create_all()
            self.seed()
            yield
            self.engine.dispose()

        routes = [
            Route("/", self.index),
            Route("/customers", self.create_customer, methods=["POST"]),
            Route("/customers/{id}", self.update_customer, methods=["PATCH"]),
            Route("/customers/{id}", self.delete_customer, methods=["DELETE"]),
            Route("/payments", self.create_payment, methods=["POST"]),
            Route("/payments/{id}/refund", self.refund_payment, methods=["POST"]),
            Route("/signin/{user_id}", sign_in),
            # Before the mount, which would otherwise answer /audit/recent.
            Route("/audit/recent", self.recent),
            Mount("/audit", audit_app(self.auditor, authorize=viewer_of)),
        ]
        app = Starlette(routes=routes, lifespan=lifespan)
        app.add_middleware(
            AuditMiddleware,
            actor=resolve_actor,
            tenant=resolve_tenant,
            passkey=resolve_passkey,
            trusted_proxies=["127.0.0.1/32"],
        )
        return app


async def sign_in(request: Request) -> Response:
    """The demo's stand-in for a login form: any of the fixed users, no password."""
    user_id = request.path_params["user_id"]
    if user_id not in USERS:
        return _error(404, "not_found", f"no demo user {user_id[:40]!r}")
    # Relative, so the demo works wherever it is mounted.
    response = RedirectResponse("../audit/", status_code=303)
    response.set_cookie("session", user_id, httponly=True, samesite="lax")
    return response


def _home_page(session: str | None) -> str:
    """The demo's front page: who you are, and links to sign in as each user."""
    rows = "".join(
        f'<li><a class="menu-item" href="signin/{html.escape(uid)}">'
        f"<span>{html.escape(email)}</span>"
        f'<span class="muted">{html.escape(role)} of {html.escape(org)}'
        f"{' (signed in)' if uid == session else ''}</span></a></li>"
        for uid, (email, org, role) in USERS.items()
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>whodid demo</title><link rel="stylesheet" href="audit/static/dashboard.css"></head>
<body><main><section class="panel filters-panel">
<h1>whodid demo</h1>
<p class="subtitle">A small payments app whose every change lands in an audit log.
Sign in as one of its users to open the <a href="audit/">audit log dashboard</a>;
only owners and admins may read it.</p>
<ul class="related">{rows}</ul>
</section></main></body></html>"""


async def _json(request: Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)


def create_app(url: str = DEFAULT_DB) -> Starlette:
    return Demo(url).app()


__all__ = ["DEFAULT_DB", "Demo", "create_app"]
