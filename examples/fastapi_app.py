r"""A small async payments API whose every change lands in whodid's audit log.

Run it with::

    DATABASE_URL=sqlite+aiosqlite:///./payments.db \
        uvicorn examples.fastapi_app:app_from_env --factory --no-proxy-headers

then, for example::

    curl -X POST localhost:8000/customers \
        -H "Authorization: Bearer sk_live_demo_4eC39HqLyjWDarjtT1zdp7dc" \
        -H "Content-Type: application/json" -d '{"email": "ada@example.com", "name": "Ada"}'
    curl localhost:8000/audit/recent \
        -H "Authorization: Bearer sk_live_demo_4eC39HqLyjWDarjtT1zdp7dc"

What it shows:

- ``AuditMiddleware`` is pure ASGI, so the audit context it installs is the one
  the endpoint, its dependencies and the ORM flush all run under.
- Authentication stays the app's business. It names the actor with
  ``whodid.set_actor`` from a *sync* dependency (run by FastAPI in a worker
  thread) for API keys and from an *async* one for dashboard users; both reach
  the ORM hooks because the context object is shared, not copied.
- Entries are written by the same ``AsyncSession`` transaction as the change,
  so a request that fails and rolls back leaves no entry behind.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from decimal import Decimal
from typing import Annotated, Any

import sqlalchemy as sa
from fastapi import Cookie, Depends, FastAPI, Header, HTTPException, Query, Request, Response
from pydantic import BaseModel, Field
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

import whodid
from whodid import Actor, Auditor, Entry
from whodid.capture.asgi import AuditMiddleware
from whodid.store.schema import entries

# Tracking is registered on the model classes, which exist once per process, so
# the auditor is module-level too. It needs no engine: ORM entries go out on the
# flush's connection and record() is always given the session.
auditor = Auditor()


def _new_id(prefix: str) -> str:
    # Prefixed ids make an entry's entity_id self-describing in logs and exports.
    return f"{prefix}_{secrets.token_hex(12)}"


class Base(DeclarativeBase):
    pass


# tax_id is redacted: the log must prove *that* it changed without becoming a
# second copy of it that every auditor with log access can read.
@auditor.track(feature="customer", entity_type="customer", redact={"tax_id"}, tenant="account_id")
class Customer(Base):
    __tablename__ = "customers"

    id: Mapped[str] = mapped_column(sa.String(40), primary_key=True, default=lambda: _new_id("cus"))
    account_id: Mapped[str] = mapped_column(sa.String(40), index=True)
    email: Mapped[str] = mapped_column(sa.String(254))
    name: Mapped[str | None] = mapped_column(sa.String(200))
    tax_id: Mapped[str | None] = mapped_column(sa.String(40))
    # "metadata" is reserved on declarative classes, hence the trailing underscore.
    metadata_: Mapped[dict[str, Any]] = mapped_column("metadata", sa.JSON, default=dict)


@auditor.track(feature="payment", entity_type="payment", tenant="account_id")
class Payment(Base):
    __tablename__ = "payments"

    id: Mapped[str] = mapped_column(sa.String(40), primary_key=True, default=lambda: _new_id("pay"))
    account_id: Mapped[str] = mapped_column(sa.String(40), index=True)
    customer_id: Mapped[str] = mapped_column(sa.ForeignKey("customers.id"))
    # Numeric, never float: the audit log stores Decimal("10.10") as "10.10".
    amount: Mapped[Decimal] = mapped_column(sa.Numeric(12, 2))
    amount_refunded: Mapped[Decimal] = mapped_column(sa.Numeric(12, 2), default=Decimal("0.00"))
    currency: Mapped[str] = mapped_column(sa.String(3))
    status: Mapped[str] = mapped_column(sa.String(20))


# Instrumented once, at import, like the tracking above; each app passes its own
# engine per session (Sessions(bind=...)). Instrumenting a new factory inside
# create_app() would be the obvious alternative, but whodid 0.1.0 can then
# silently skip the hooks once an earlier app has been garbage-collected (see
# OrmCapture.instrument), and a test suite creates many apps.
# expire_on_commit=False: responses are built from the objects after the
# commit, and an async session cannot lazily reload expired attributes.
Sessions = auditor.instrument(async_sessionmaker(expire_on_commit=False))


# -- authentication ---------------------------------------------------------------------------
#
# A real app keeps these in its database. Keys are looked up by their SHA-256 so
# the secret itself is never stored (and so can never leak into the audit log).


@dataclass(frozen=True, slots=True)
class ApiKey:
    id: str
    account_id: str
    prefix: str  # what dashboards show; safe to log


@dataclass(frozen=True, slots=True)
class User:
    id: str
    email: str
    account_id: str


@dataclass(frozen=True, slots=True)
class Principal:
    actor: Actor
    account_id: str


DEMO_API_KEY = "sk_live_demo_4eC39HqLyjWDarjtT1zdp7dc"
OTHER_API_KEY = "sk_live_other_9fQ2xLmR7bVc1NwZ0kTy"
API_KEYS = {
    hashlib.sha256(DEMO_API_KEY.encode()).hexdigest(): ApiKey(
        "key_demo", "acct_demo", "sk_live_demo"
    ),
    hashlib.sha256(OTHER_API_KEY.encode()).hexdigest(): ApiKey(
        "key_other", "acct_other", "sk_live_other"
    ),
}
USERS = {
    "usr_ada": User("usr_ada", "ada@example.com", "acct_demo"),
    "usr_bob": User("usr_bob", "bob@example.com", "acct_other"),
}
SESSION_SECRET = os.environ.get("SESSION_SECRET", "demo-only-session-secret").encode()


def sign_session(user_id: str) -> str:
    """The ``session`` cookie value for ``user_id``: ``usr_...`` plus an HMAC.

    Signed rather than the bare user id so a client cannot pose as another user.
    """
    mac = hmac.new(SESSION_SECRET, user_id.encode(), hashlib.sha256).hexdigest()
    return f"{user_id}.{mac}"


def _user_from_cookie(value: str) -> User | None:
    user_id, _, mac = value.rpartition(".")
    expected = sign_session(user_id).rpartition(".")[2]
    if not user_id.startswith("usr_") or not hmac.compare_digest(mac, expected):
        return None
    return USERS.get(user_id)


def _unauthorized() -> HTTPException:
    return HTTPException(401, "authentication required", headers={"WWW-Authenticate": "Bearer"})


def api_key_actor(
    request: Request, authorization: Annotated[str | None, Header()] = None
) -> Principal | None:
    # Deliberately sync, as many real key checks are (a blocking DB or cache
    # lookup): FastAPI runs it in a worker thread under a *copy* of the
    # request's contextvars. set_actor() still reaches the ORM hooks, because it
    # mutates the request's context object rather than setting a new one.
    if authorization is None:
        return None
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.startswith("sk_live_"):
        raise _unauthorized()
    key = API_KEYS.get(hashlib.sha256(token.encode()).hexdigest())
    if key is None:
        raise _unauthorized()
    # The label is the stored prefix, never derived from the secret at hand.
    actor = Actor.api_key(key.id, label=key.prefix)
    whodid.set_actor(actor)
    # Read by the middleware's tenant= resolver if and when an entry is written.
    request.state.account_id = key.account_id
    return Principal(actor, key.account_id)


async def authenticate(
    request: Request,
    api_key: Annotated[Principal | None, Depends(api_key_actor)],
    session: Annotated[str | None, Cookie()] = None,
    x_passkey: Annotated[str | None, Header()] = None,
) -> Principal:
    if api_key is not None:
        return api_key
    user = _user_from_cookie(session) if session else None
    if user is None:
        raise _unauthorized()
    # A real app reads this from the server-side session, recorded when the
    # user signed in; the header keeps the demo stateless.
    passkey = x_passkey == "1"
    actor = Actor.user(user.id, label=user.email)
    whodid.set_actor(actor, passkey=passkey)
    request.state.account_id = user.account_id
    return Principal(actor, user.account_id)


def tenant_of(request: Request) -> str | None:
    # Taken from what authentication established, not from a client-supplied
    # header: the tenant of an entry decides who may read it, so it must not be
    # something the caller can claim. Lazy: only runs when an entry is written,
    # i.e. after the dependencies above have run.
    return getattr(request.state, "account_id", None)


# -- API schemas ------------------------------------------------------------------------------

Money = Annotated[Decimal, Field(gt=0, max_digits=12, decimal_places=2)]


class CustomerIn(BaseModel):
    email: str = Field(max_length=254)
    name: str | None = Field(default=None, max_length=200)
    tax_id: str | None = Field(default=None, max_length=40)
    metadata: dict[str, Any] = Field(default_factory=dict)


class CustomerPatch(BaseModel):
    email: str | None = Field(default=None, max_length=254)
    name: str | None = Field(default=None, max_length=200)
    tax_id: str | None = Field(default=None, max_length=40)
    metadata: dict[str, Any] | None = None


class CustomerOut(BaseModel):
    id: str
    email: str
    name: str | None
    metadata: dict[str, Any]

    @classmethod
    def of(cls, c: Customer) -> CustomerOut:
        return cls(id=c.id, email=c.email, name=c.name, metadata=c.metadata_)


class PaymentIn(BaseModel):
    customer_id: str
    amount: Money
    currency: str = Field(pattern=r"^[A-Z]{3}$")
    # Processor test tokens, as card networks' sandboxes have them.
    source: str = "tok_visa"


class RefundIn(BaseModel):
    amount: Money | None = None  # None: refund whatever is left
    reason: str | None = Field(default=None, max_length=200)


class PaymentOut(BaseModel):
    id: str
    customer_id: str
    amount: Decimal
    amount_refunded: Decimal
    currency: str
    status: str

    @classmethod
    def of(cls, p: Payment) -> PaymentOut:
        return cls(
            id=p.id,
            customer_id=p.customer_id,
            amount=p.amount,
            amount_refunded=p.amount_refunded,
            currency=p.currency,
            status=p.status,
        )


class PaymentDeclined(Exception):
    pass


def charge(source: str, amount: Decimal, currency: str) -> None:
    """Stand-in for the card processor; ``tok_chargeDeclined`` is always declined."""
    if source == "tok_chargeDeclined":
        raise PaymentDeclined("card_declined")


# -- dependencies -----------------------------------------------------------------------------


async def db(request: Request) -> AsyncIterator[AsyncSession]:
    # Leaving the block without a commit rolls back: the change and its audit
    # entries are in the same transaction, so they vanish together.
    async with Sessions(bind=request.app.state.engine) as session:
        yield session


# Module-level, not inside create_app: with postponed annotations FastAPI
# resolves these names from the module's globals.
Db = Annotated[AsyncSession, Depends(db)]
Auth = Annotated[Principal, Depends(authenticate)]


async def own_customer(session: AsyncSession, who: Principal, customer_id: str) -> Customer:
    customer = await session.get(Customer, customer_id)
    # 404 rather than 403 for other accounts' ids: do not confirm they exist.
    if customer is None or customer.account_id != who.account_id:
        raise HTTPException(404, "no such customer")
    return customer


# -- the app ----------------------------------------------------------------------------------


def create_app(database_url: str) -> FastAPI:
    """The payments API on ``database_url`` (an async driver URL)."""
    engine = create_async_engine(database_url)
    if engine.dialect.name == "sqlite":
        # SQLite enforces foreign keys only when asked, per connection.
        @sa.event.listens_for(engine.sync_engine, "connect")
        def _foreign_keys(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with engine.begin() as conn:
            await conn.run_sync(Base.metadata.create_all)
            await conn.run_sync(auditor.create_all)
        yield
        await engine.dispose()

    app = FastAPI(title="payments", lifespan=lifespan)
    app.state.engine = engine
    app.add_middleware(AuditMiddleware, tenant=tenant_of, trusted_proxies=["127.0.0.1/32"])

    @app.post("/customers", status_code=201)
    async def create_customer(body: CustomerIn, session: Db, who: Auth) -> CustomerOut:
        customer = Customer(
            account_id=who.account_id,
            email=body.email,
            name=body.name,
            tax_id=body.tax_id,
            metadata_=body.metadata,
        )
        session.add(customer)
        await session.commit()
        return CustomerOut.of(customer)

    @app.patch("/customers/{customer_id}")
    async def update_customer(
        customer_id: str, body: CustomerPatch, session: Db, who: Auth
    ) -> CustomerOut:
        customer = await own_customer(session, who, customer_id)
        changes = body.model_dump(exclude_unset=True)
        if "metadata" in changes:
            changes["metadata_"] = changes.pop("metadata") or {}
        for key, value in changes.items():
            setattr(customer, key, value)
        await session.commit()
        return CustomerOut.of(customer)

    @app.delete("/customers/{customer_id}", status_code=204)
    async def delete_customer(customer_id: str, session: Db, who: Auth) -> Response:
        customer = await own_customer(session, who, customer_id)
        has_payments = await session.scalar(
            sa.select(sa.exists().where(Payment.customer_id == customer_id))
        )
        if has_payments:
            # Payments must keep pointing at a customer; deleting is a 409, not a 500.
            raise HTTPException(409, "customer has payments")
        await session.delete(customer)
        await session.commit()
        return Response(status_code=204)

    @app.post("/payments", status_code=201)
    async def create_payment(body: PaymentIn, session: Db, who: Auth) -> PaymentOut:
        await own_customer(session, who, body.customer_id)
        payment = Payment(
            account_id=who.account_id,
            customer_id=body.customer_id,
            amount=body.amount,
            currency=body.currency,
            status="succeeded",
        )
        session.add(payment)
        # Flush before charging so the database has accepted the row (and its
        # audit entry) before money moves. If the charge fails, the rollback
        # takes the row and the entry with it: no entry for a payment that
        # never happened.
        await session.flush()
        try:
            charge(body.source, body.amount, body.currency)
        except PaymentDeclined as exc:
            raise HTTPException(402, str(exc)) from None
        await session.commit()
        return PaymentOut.of(payment)

    @app.post("/payments/{payment_id}/refund")
    async def refund_payment(payment_id: str, body: RefundIn, session: Db, who: Auth) -> PaymentOut:
        payment = await session.get(Payment, payment_id)
        if payment is None or payment.account_id != who.account_id:
            raise HTTPException(404, "no such payment")
        remaining = payment.amount - payment.amount_refunded
        amount = remaining if body.amount is None else body.amount
        if amount <= 0 or amount > remaining:
            raise HTTPException(422, f"can refund at most {remaining}")
        payment.amount_refunded += amount
        payment.status = "refunded" if payment.amount_refunded == payment.amount else "partial"
        # Flushed first so the row's own "payment.update" entry precedes the
        # business event in the log (record() does not autoflush).
        await session.flush()
        # The ORM entry says which columns changed; this one says why, with
        # what only the endpoint knows. Both share the request id, so the log
        # can show them as one action.
        metadata = {"amount": str(amount), "currency": payment.currency, "reason": body.reason}
        await session.run_sync(
            lambda s: auditor.record(
                "payment.refund", entity=("payment", payment_id), metadata=metadata, session=s
            )
        )
        await session.commit()
        return PaymentOut.of(payment)

    @app.get("/audit/recent")
    async def recent_entries(
        session: Db, who: Auth, limit: Annotated[int, Query(ge=1, le=100)] = 20
    ) -> list[dict[str, Any]]:
        # Scoped to the caller's tenant: the log of one account is private to it.
        result = await session.execute(
            sa.select(entries)
            .where(entries.c.tenant_id == who.account_id)
            .order_by(entries.c.seq.desc())
            .limit(limit)
        )
        return [Entry.from_row(row).to_dict() for row in result.mappings()]

    return app


def app_from_env() -> FastAPI:
    """For ``uvicorn examples.fastapi_app:app_from_env --factory``."""
    return create_app(os.environ.get("DATABASE_URL", "sqlite+aiosqlite:///./payments.db"))


if __name__ == "__main__":
    import uvicorn

    # proxy_headers=False: whodid's trusted_proxies does the X-Forwarded-For
    # walk itself; letting uvicorn rewrite the client address first would make
    # it trust the header twice.
    uvicorn.run(app_from_env(), host="127.0.0.1", port=8000, proxy_headers=False)
