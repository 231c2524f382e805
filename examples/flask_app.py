"""A small payments API (Flask 3 + SQLAlchemy 2) audited with whodid.

Every change to a customer or a payment is written to ``whodid_entries`` in the
same transaction as the change itself, attributed to whoever made it: an API
key (``Authorization: Bearer sk_live_...``) or a signed-in user (``session``
cookie). Run it with::

    python examples/flask_app.py            # or DATABASE_URL=postgresql+psycopg://...

It creates a demo organisation and prints an API key and a session cookie to
try the endpoints with ``curl``.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

import sqlalchemy as sa
from flask import Blueprint, Flask, Response, current_app, jsonify, request
from sqlalchemy.orm import (
    DeclarativeBase,
    Mapped,
    Session,
    mapped_column,
    scoped_session,
    sessionmaker,
)
from werkzeug.exceptions import HTTPException

from whodid import Actor, Auditor, Entry, audit_context
from whodid.capture.wsgi import WSGIAuditMiddleware
from whodid.store.schema import entries

# No engine here: the models are declared once at import time, while each
# create_app() brings its own database. Entries are written on the session's
# own connection, so the Auditor never needs one of its own in this app.
auditor = Auditor()

API_KEY_PREFIX = "sk_live_"
# Enough of the key to recognise it in the dashboard and the audit log, far
# too little to use it.
API_KEY_LABEL_LENGTH = len(API_KEY_PREFIX) + 4
SESSION_COOKIE = "session"
PRINCIPAL_KEY = "payments.principal"
MONEY_STEP = Decimal("0.01")
MAX_AMOUNT = Decimal("99999999.99")  # what Numeric(10, 2) holds


def new_id(prefix: str) -> str:
    """Stripe-style ids: the prefix says what an id is when it shows up in a log."""
    return f"{prefix}_{secrets.token_hex(12)}"


class Base(DeclarativeBase):
    pass


class User(Base):
    """A person who signs in to the dashboard."""

    __tablename__ = "users"

    id: Mapped[str] = mapped_column(sa.String(40), primary_key=True)
    org_id: Mapped[str] = mapped_column(sa.String(40), index=True)
    email: Mapped[str] = mapped_column(sa.String(320), unique=True)


# Key management is security-relevant, so it is audited too; ``secret_hash``
# matches whodid's default "secret" pattern and is stored as "[REDACTED]".
@auditor.track(feature="api_key", entity_type="api_key", tenant="org_id")
class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(sa.String(40), primary_key=True)
    org_id: Mapped[str] = mapped_column(sa.String(40), index=True)
    prefix: Mapped[str] = mapped_column(sa.String(16))
    # Only a hash is kept: a database leak must not leak usable keys. SHA-256
    # (not a slow password hash) is enough because keys are 192 random bits.
    secret_hash: Mapped[str] = mapped_column(sa.String(64), unique=True)


# entity_type is spelled out so ORM entries and the manual "payment.refund"
# event name the same entity type (the default would be the table name).
@auditor.track(feature="customer", entity_type="customer", redact={"tax_id"}, tenant="org_id")
class Customer(Base):
    __tablename__ = "customers"

    id: Mapped[str] = mapped_column(sa.String(40), primary_key=True)
    org_id: Mapped[str] = mapped_column(sa.String(40), index=True)
    email: Mapped[str] = mapped_column(sa.String(320))
    name: Mapped[str | None] = mapped_column(sa.String(200))
    tax_id: Mapped[str | None] = mapped_column(sa.String(40))
    # "metadata" is reserved on declarative classes, hence the trailing underscore.
    metadata_: Mapped[dict[str, str]] = mapped_column("metadata", sa.JSON, default=dict)


@auditor.track(feature="payment", entity_type="payment", tenant="org_id")
class Payment(Base):
    __tablename__ = "payments"

    id: Mapped[str] = mapped_column(sa.String(40), primary_key=True)
    org_id: Mapped[str] = mapped_column(sa.String(40), index=True)
    customer_id: Mapped[str] = mapped_column(sa.ForeignKey("customers.id"), index=True)
    # Money is Numeric/Decimal end to end: a float would turn 0.1 + 0.2 into a
    # refund of 0.30000000000000004.
    amount: Mapped[Decimal] = mapped_column(sa.Numeric(10, 2))
    amount_refunded: Mapped[Decimal] = mapped_column(sa.Numeric(10, 2))
    currency: Mapped[str] = mapped_column(sa.String(3))
    status: Mapped[str] = mapped_column(sa.String(20))


# -- authentication -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling, as authenticated by this app; whodid only reads it."""

    actor: Actor
    org_id: str


def hash_api_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def sign_session(signing_key: str, user_id: str) -> str:
    """The session cookie value: the user id plus an HMAC, so it cannot be forged."""
    signature = hmac.new(signing_key.encode(), user_id.encode(), hashlib.sha256).hexdigest()
    return f"{user_id}.{signature}"


def unsign_session(signing_key: str, value: str) -> str | None:
    user_id, _, signature = value.rpartition(".")
    if not user_id:
        return None
    expected = sign_session(signing_key, user_id).rpartition(".")[2]
    return user_id if hmac.compare_digest(signature, expected) else None


def authenticate(session: Session) -> Principal | None:
    auth = request.headers.get("Authorization", "")
    scheme, _, token = auth.partition(" ")
    if scheme.lower() == "bearer":
        token = token.strip()
        if not token.startswith(API_KEY_PREFIX):
            return None
        key = session.scalar(sa.select(ApiKey).where(ApiKey.secret_hash == hash_api_key(token)))
        if key is None:
            return None
        return Principal(Actor.api_key(key.id, label=key.prefix), key.org_id)

    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie:
        user_id = unsign_session(current_app.config["SESSION_SIGNING_KEY"], cookie)
        user = session.get(User, user_id) if user_id else None
        if user is not None:
            return Principal(Actor.user(user.id, label=user.email), user.org_id)
    return None


# The whodid resolvers. They run lazily, when the first audit entry of a
# request is written; by then the before_request hook below has authenticated
# the caller and left the result in the environ, so they only read it.


def _principal(environ: dict[str, Any]) -> Principal | None:
    principal = environ.get(PRINCIPAL_KEY)
    return principal if isinstance(principal, Principal) else None


def resolve_actor(environ: dict[str, Any]) -> Actor | None:
    principal = _principal(environ)
    return principal.actor if principal else None


def resolve_tenant(environ: dict[str, Any]) -> str | None:
    principal = _principal(environ)
    return principal.org_id if principal else None


def resolve_passkey(environ: dict[str, Any]) -> bool:
    # Stand-in for a real WebAuthn check. Only a person signs in with a passkey;
    # an API key sending the header proves nothing.
    principal = _principal(environ)
    return (
        principal is not None
        and principal.actor.type == "user"
        and environ.get("HTTP_X_PASSKEY") == "1"
    )


# -- errors and input ---------------------------------------------------------


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


class CardDeclined(Exception):
    pass


def charge_card(payment_id: str, amount: Decimal, currency: str, source: str) -> None:
    """Stand-in for the card processor; test tokens behave as Stripe's do."""
    if source == "tok_chargeDeclined":
        raise CardDeclined("your card was declined")


def _json_body() -> dict[str, Any]:
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise ApiError(400, "invalid_request", "the request body must be a JSON object")
    return body


def _email(value: Any) -> str:
    if not isinstance(value, str) or "@" not in value or len(value) > 320:
        raise ApiError(400, "invalid_email", "email must be an email address")
    return value.strip().lower()


def _optional_text(body: dict[str, Any], key: str, limit: int) -> str | None:
    value = body.get(key)
    if value is not None and (not isinstance(value, str) or len(value) > limit):
        raise ApiError(400, "invalid_request", f"{key} must be a string of at most {limit} chars")
    return value


def _metadata(value: Any) -> dict[str, str]:
    # Bounded, flat string pairs: metadata is copied into every audit entry of
    # the customer, so it must stay small and predictable.
    if not isinstance(value, dict) or len(value) > 50:
        raise ApiError(400, "invalid_metadata", "metadata must be an object of up to 50 keys")
    for k, v in value.items():
        if len(k) > 40 or not (v is None or (isinstance(v, str) and len(v) <= 500)):
            raise ApiError(
                400, "invalid_metadata", "metadata keys are <= 40 chars, values strings <= 500"
            )
    return value


def _amount(value: Any) -> Decimal:
    # Amounts travel as strings ("12.50") so no JSON parser turns them into floats.
    if not isinstance(value, str):
        raise ApiError(400, "invalid_amount", 'amount must be a decimal string, e.g. "12.50"')
    try:
        amount = Decimal(value)
    except InvalidOperation:
        raise ApiError(400, "invalid_amount", f"amount {value!r} is not a number") from None
    if not amount.is_finite() or not 0 < amount <= MAX_AMOUNT or amount % MONEY_STEP:
        raise ApiError(400, "invalid_amount", "amount must be positive, with at most 2 decimals")
    return amount.quantize(MONEY_STEP)


def _currency(value: Any) -> str:
    if not isinstance(value, str) or len(value) != 3 or not value.isalpha():
        raise ApiError(400, "invalid_currency", "currency must be an ISO 4217 code, e.g. usd")
    return value.lower()


# -- views ----------------------------------------------------------------------

api = Blueprint("payments", __name__)


def db() -> Session:
    session: Session = current_app.extensions["payments.db"]()
    return session


def principal() -> Principal:
    found = _principal(request.environ)
    assert found is not None  # before_request rejected anonymous callers
    return found


def customer_json(customer: Customer) -> dict[str, Any]:
    return {
        "id": customer.id,
        "object": "customer",
        "email": customer.email,
        "name": customer.name,
        # Responses end up in client logs; the full tax id never leaves the API.
        "tax_id_last4": customer.tax_id[-4:] if customer.tax_id else None,
        "metadata": customer.metadata_,
    }


def payment_json(payment: Payment) -> dict[str, Any]:
    return {
        "id": payment.id,
        "object": "payment",
        "customer": payment.customer_id,
        "amount": str(payment.amount),
        "amount_refunded": str(payment.amount_refunded),
        "currency": payment.currency,
        "status": payment.status,
    }


def _customer(customer_id: str) -> Customer:
    # Filtering on org_id is what keeps one tenant out of another's customers.
    customer = db().scalar(
        sa.select(Customer).where(Customer.id == customer_id, Customer.org_id == principal().org_id)
    )
    if customer is None:
        raise ApiError(404, "resource_missing", f"no such customer: {customer_id}")
    return customer


@api.before_request
def require_principal() -> None:
    found = authenticate(db())
    if found is None:
        raise ApiError(401, "unauthenticated", "send an API key or sign in")
    request.environ[PRINCIPAL_KEY] = found


@api.post("/customers")
def create_customer() -> tuple[dict[str, Any], int]:
    body = _json_body()
    customer = Customer(
        id=new_id("cus"),
        org_id=principal().org_id,
        email=_email(body.get("email")),
        name=_optional_text(body, "name", 200),
        tax_id=_optional_text(body, "tax_id", 40),
        metadata_=_metadata(body.get("metadata") or {}),
    )
    session = db()
    session.add(customer)
    session.commit()
    return customer_json(customer), 201


@api.get("/customers/<customer_id>")
def get_customer(customer_id: str) -> dict[str, Any]:
    return customer_json(_customer(customer_id))


@api.patch("/customers/<customer_id>")
def update_customer(customer_id: str) -> dict[str, Any]:
    body = _json_body()
    customer = _customer(customer_id)
    if "email" in body:
        customer.email = _email(body["email"])
    if "name" in body:
        customer.name = _optional_text(body, "name", 200)
    if "tax_id" in body:
        customer.tax_id = _optional_text(body, "tax_id", 40)
    if "metadata" in body:
        # Merge like Stripe does (null deletes a key). A new dict, not an
        # in-place edit: SQLAlchemy only notices a JSON column was reassigned.
        merged = {**customer.metadata_, **_metadata(body["metadata"])}
        customer.metadata_ = {k: v for k, v in merged.items() if v is not None}
    # Assigning an unchanged value is fine: whodid compares old and new and
    # records only the fields that really changed (or nothing at all).
    db().commit()
    return customer_json(customer)


@api.delete("/customers/<customer_id>")
def delete_customer(customer_id: str) -> dict[str, Any]:
    customer = _customer(customer_id)
    session = db()
    has_payments = session.scalar(sa.select(sa.exists().where(Payment.customer_id == customer.id)))
    if has_payments:
        # Payments are financial records that must be kept: refuse, never cascade.
        raise ApiError(409, "customer_has_payments", "customers with payments cannot be deleted")
    session.delete(customer)
    session.commit()
    return {"id": customer_id, "object": "customer", "deleted": True}


@api.post("/payments")
def create_payment() -> tuple[dict[str, Any], int]:
    body = _json_body()
    customer_id = body.get("customer")
    if not isinstance(customer_id, str):
        raise ApiError(400, "invalid_request", "customer must be a customer id")
    customer = _customer(customer_id)
    source = body.get("source")
    if not isinstance(source, str):
        raise ApiError(400, "invalid_request", "source must be a card token")
    payment = Payment(
        id=new_id("pay"),
        org_id=customer.org_id,
        customer_id=customer.id,
        amount=_amount(body.get("amount")),
        amount_refunded=Decimal("0.00"),
        currency=_currency(body.get("currency")),
        status="pending",
    )
    session = db()
    session.add(payment)
    # The row (and its audit entry) exists before the charge, so the payment id
    # can serve as the processor's idempotency key. A decline rolls back both:
    # the log never claims a payment the database does not have.
    session.flush()
    try:
        charge_card(payment.id, payment.amount, payment.currency, source)
    except CardDeclined as exc:
        session.rollback()
        raise ApiError(402, "card_declined", str(exc)) from None
    payment.status = "succeeded"
    session.commit()
    return payment_json(payment), 201


@api.post("/payments/<payment_id>/refund")
def refund_payment(payment_id: str) -> dict[str, Any]:
    body = request.get_json(silent=True) or {}
    if not isinstance(body, dict):
        raise ApiError(400, "invalid_request", "the request body must be a JSON object")
    session = db()
    # FOR UPDATE: two concurrent refunds must not both see the full amount left.
    payment = session.scalar(
        sa.select(Payment)
        .where(Payment.id == payment_id, Payment.org_id == principal().org_id)
        .with_for_update()
    )
    if payment is None:
        raise ApiError(404, "resource_missing", f"no such payment: {payment_id}")
    if payment.status not in ("succeeded", "partially_refunded"):
        raise ApiError(409, "not_refundable", f"a {payment.status} payment cannot be refunded")
    remaining = payment.amount - payment.amount_refunded
    amount = _amount(body["amount"]) if "amount" in body else remaining
    if amount > remaining:
        raise ApiError(400, "invalid_amount", f"at most {remaining} can still be refunded")
    reason = _optional_text(body, "reason", 200)

    payment.amount_refunded = payment.amount_refunded + amount
    payment.status = "refunded" if amount == remaining else "partially_refunded"
    # Flush first so the row's update entry precedes the refund event in the log.
    session.flush()
    # The ORM entry says which columns changed; this event says why, in terms
    # a support agent searches for. session= puts it in the same transaction.
    auditor.record(
        "payment.refund",
        entity=("payment", payment.id),
        metadata={"amount": str(amount), "currency": payment.currency, "reason": reason},
        session=session,
    )
    session.commit()
    return payment_json(payment)


@api.get("/audit/recent")
def recent_audit_entries() -> dict[str, Any]:
    limit = min(max(request.args.get("limit", 20, type=int), 1), 100)
    rows = db().execute(
        sa.select(entries)
        .where(entries.c.tenant_id == principal().org_id)
        .order_by(entries.c.seq.desc())
        .limit(limit)
    )
    return {"data": [Entry.from_row(row).to_dict() for row in rows.mappings()]}


def _api_error(exc: ApiError) -> tuple[Response, int]:
    return jsonify(error={"type": exc.code, "message": exc.message}), exc.status


def _http_error(exc: HTTPException) -> tuple[Response, int]:
    status = exc.code or 500
    return jsonify(
        error={"type": exc.name.lower().replace(" ", "_"), "message": exc.description}
    ), status


# -- application factory ----------------------------------------------------------


def create_app(
    database_url: str,
    *,
    session_signing_key: str | None = None,
    trusted_proxies: list[str] | None = None,
) -> Flask:
    """The payments API on ``database_url``; tables are created if missing.

    ``trusted_proxies`` are the addresses of the reverse proxies in front of
    the app (default: one on the same host). Only their X-Forwarded-For and
    Forwarded headers are believed; anyone else could claim any address.
    """
    app = Flask(__name__)
    # Random by default: sessions then end with the process, which is the safe
    # failure for a demo; set it in production so sessions survive restarts.
    app.config["SESSION_SIGNING_KEY"] = (
        session_signing_key or os.environ.get("SESSION_SIGNING_KEY") or secrets.token_hex(32)
    )

    engine = sa.create_engine(database_url)
    if engine.dialect.name == "sqlite":

        @sa.event.listens_for(engine, "connect")
        def _sqlite_foreign_keys(dbapi_connection: Any, _record: Any) -> None:
            # Off by default in SQLite, per connection.
            dbapi_connection.execute("PRAGMA foreign_keys=ON")

    # A real app would run migrations; create_all keeps the example self-contained.
    Base.metadata.create_all(engine)
    auditor.create_all(engine)

    Session = scoped_session(sessionmaker(engine, expire_on_commit=False))
    # One factory per app, so two apps in one process (tests) never share hooks.
    auditor.instrument(Session)
    app.extensions["payments.db"] = Session
    app.extensions["payments.engine"] = engine

    @app.teardown_appcontext
    def _remove_session(_exc: BaseException | None) -> None:
        # Rolls back whatever was not committed, so an exception after a flush
        # discards the change and its audit entries together.
        Session.remove()

    app.register_blueprint(api)
    app.register_error_handler(ApiError, _api_error)
    app.register_error_handler(HTTPException, _http_error)

    app.wsgi_app = WSGIAuditMiddleware(  # type: ignore[method-assign]
        app.wsgi_app,
        actor=resolve_actor,
        tenant=resolve_tenant,
        passkey=resolve_passkey,
        trusted_proxies=trusted_proxies if trusted_proxies is not None else ["127.0.0.1", "::1"],
    )
    return app


def create_user(session: Session, *, org_id: str, email: str) -> User:
    user = User(id=new_id("usr"), org_id=org_id, email=email)
    session.add(user)
    return user


def create_api_key(session: Session, *, org_id: str) -> tuple[ApiKey, str]:
    """A new key and its secret; the secret is shown once and never stored."""
    secret = API_KEY_PREFIX + secrets.token_urlsafe(24)
    key = ApiKey(
        id=new_id("key"),
        org_id=org_id,
        prefix=secret[:API_KEY_LABEL_LENGTH],
        secret_hash=hash_api_key(secret),
    )
    session.add(key)
    return key, secret


def session_cookie(app: Flask, user: User) -> str:
    return sign_session(app.config["SESSION_SIGNING_KEY"], user.id)


if __name__ == "__main__":
    app = create_app(os.environ.get("DATABASE_URL", "sqlite:///payments.db"))
    org_id = new_id("org")
    with app.app_context():
        session = db()
        # Set-up done by a script, not a request: say who did it.
        with audit_context(actor=Actor.system("demo-seed"), tenant_id=org_id):
            user = create_user(session, org_id=org_id, email=f"admin+{org_id}@example.com")
            _key, secret = create_api_key(session, org_id=org_id)
            session.commit()
        cookie = session_cookie(app, user)
    base = "http://127.0.0.1:5000"
    print(f"API key:        {secret}")
    print(f"session cookie: {cookie}")
    print(
        f"try: curl -s {base}/customers -H 'Authorization: Bearer {secret}' "
        "-H 'Content-Type: application/json' -d '{\"email\": \"ada@example.com\"}'"
    )
    print(f"     curl -s {base}/audit/recent -b 'session={cookie}'")
    app.run(host="127.0.0.1", port=5000)
