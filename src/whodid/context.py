"""Who is acting, and from where: the request context the ORM hooks read.

One :class:`RequestContext` lives in a :class:`~contextvars.ContextVar` per
request (set by the middleware) or per :func:`audit_context` block (jobs,
scripts). The object itself is mutable on purpose: FastAPI runs sync
dependencies in a thread pool with a *copy* of the context, so a
``ContextVar.set`` made there would never reach the request's own task. A
mutation of the shared object does.

Fields a middleware can compute (actor, tenant, passkey, ip, user agent) are
resolved lazily, the first time an entry is written: a request that writes
nothing pays for none of it, and an actor resolver sees whatever the auth
layer put on the request by then.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Literal, Protocol

ActorType = Literal["user", "api_key", "system", "anonymous"]


@dataclass(frozen=True, slots=True)
class Actor:
    """Who performed an action: a user, an API key, or the system (a job)."""

    type: ActorType
    id: str | None = None
    label: str | None = None

    @classmethod
    def user(cls, id: str, label: str | None = None) -> Actor:
        """A person signed in to the dashboard; ``label`` is usually the email."""
        return cls("user", str(id), label)

    @classmethod
    def api_key(cls, id: str, label: str | None = None) -> Actor:
        """A programmatic caller; ``label`` is the key prefix, never the secret."""
        return cls("api_key", str(id), label)

    @classmethod
    def system(cls, name: str, label: str | None = None) -> Actor:
        """A job or worker acting on the platform's behalf, named e.g. ``nightly-settlement``."""
        return cls("system", str(name), label)


#: Used for changes made in a request whose actor could not be resolved.
ANONYMOUS = Actor("anonymous")
#: Used for changes made outside any request and any :func:`audit_context`.
UNATTRIBUTED = Actor("system")


class Enrichment(Protocol):
    """What the writer asks of an enricher (``whodid.store.enrich.Enricher`` is one)."""

    def country(self, ip: str | None) -> str | None: ...

    def client(self, user_agent: str | None) -> dict[str, object] | None: ...


class ContextSource:
    """Where a context's lazy fields come from; the middlewares subclass it."""

    __slots__ = ()
    enricher: Enrichment | None = None
    in_request = False

    def actor(self) -> Actor | None:
        return None

    def tenant_id(self) -> str | None:
        return None

    def passkey(self) -> bool:
        return False

    def ip(self) -> str | None:
        return None

    def user_agent(self) -> str | None:
        return None


_NO_SOURCE = ContextSource()
_UNSET: Any = object()


class RequestContext:
    """The audit context of one request or :func:`audit_context` block.

    A field not given is asked of the parent context (a block inside a
    request) or, at the top, of the source (the middleware's resolvers), once.
    """

    __slots__ = (
        "_actor",
        "_ip",
        "_passkey",
        "_tenant_id",
        "_user_agent",
        "parent",
        "request_id",
        "source",
    )

    def __init__(
        self,
        *,
        actor: Actor | None = _UNSET,
        tenant_id: str | None = _UNSET,
        passkey: bool = _UNSET,
        ip: str | None = _UNSET,
        user_agent: str | None = _UNSET,
        request_id: str | None = _UNSET,
        source: ContextSource = _NO_SOURCE,
        parent: RequestContext | None = None,
    ) -> None:
        self._actor = actor
        self._tenant_id = tenant_id
        self._passkey = passkey
        self._ip = ip
        self._user_agent = user_agent
        if request_id is _UNSET:
            request_id = parent.request_id if parent is not None else None
        self.request_id: str | None = request_id
        self.source: ContextSource = parent.source if parent is not None else source
        self.parent = parent

    @classmethod
    def for_request(cls, request_id: str, source: ContextSource) -> RequestContext:
        """The context a middleware installs: every field lazy. A fast path,
        since it runs on every request, entry or not."""
        ctx = object.__new__(cls)
        ctx._actor = ctx._tenant_id = ctx._passkey = ctx._ip = ctx._user_agent = _UNSET
        ctx.request_id = request_id
        ctx.source = source
        ctx.parent = None
        return ctx

    def _lazy(self, name: str) -> Any:
        # Asked once: of the parent context if nested, else of the source.
        value = getattr(self, "_" + name)
        if value is _UNSET:
            if self.parent is not None:
                value = getattr(self.parent, name)
            else:
                value = getattr(self.source, name)()
            setattr(self, "_" + name, value)
        return value

    @property
    def actor(self) -> Actor | None:
        return self._lazy("actor")  # type: ignore[no-any-return]

    @property
    def tenant_id(self) -> str | None:
        return self._lazy("tenant_id")  # type: ignore[no-any-return]

    @property
    def passkey(self) -> bool:
        return bool(self._lazy("passkey"))

    @property
    def ip(self) -> str | None:
        return self._lazy("ip")  # type: ignore[no-any-return]

    @property
    def user_agent(self) -> str | None:
        return self._lazy("user_agent")  # type: ignore[no-any-return]

    @property
    def in_request(self) -> bool:
        """Whether this context comes from an HTTP request (not only a block)."""
        return self.source.in_request

    def child(self, **overrides: Any) -> RequestContext:
        """A context for a nested block: ``overrides``, the rest from this one."""
        return RequestContext(parent=self, **overrides)

    def __repr__(self) -> str:
        return (
            f"RequestContext(actor={self.actor!r}, tenant_id={self.tenant_id!r}, "
            f"passkey={self.passkey!r}, ip={self.ip!r}, request_id={self.request_id!r})"
        )


#: The current audit context: public for the capture middlewares, which set it.
# Holds a RequestContext, or what a middleware installs on every request: a
# list [middleware, request, request_id (str or ASCII bytes), None] turned into a RequestContext
# (kept in its last slot) the first time anything reads it. A list, because it
# is the cheapest mutable object to make, and it must be mutable so a thread
# pool that copied the context still shares the one RequestContext.
CURRENT: ContextVar[RequestContext | list[Any] | None] = ContextVar("whodid_context", default=None)


def _get() -> RequestContext | None:
    value = CURRENT.get()
    if value is None or value.__class__ is RequestContext:
        return value
    assert isinstance(value, list)
    ctx: RequestContext | None = value[3]
    if ctx is None:
        request_id = value[2]
        if request_id.__class__ is bytes:  # the ASGI middleware keeps the header's bytes
            request_id = request_id.decode("ascii")
        ctx = value[3] = RequestContext.for_request(request_id, value[0].source_for(value[1]))
    return ctx


def current_context() -> RequestContext | None:
    """The context of the running request or :func:`audit_context` block, if any."""
    return _get()


def set_actor(actor: Actor | None, *, passkey: bool | None = None) -> None:
    """Name who is acting for the rest of the current request or block.

    Call it after your own authentication (for example in a FastAPI dependency,
    sync or async). Outside any request or block it starts a context for the
    current task or thread, so a script can call it once at the top.
    """
    if actor is not None and not isinstance(actor, Actor):
        raise TypeError(
            f"set_actor() takes an Actor, got {type(actor).__name__}; "
            "build one with Actor.user(...), Actor.api_key(...) or Actor.system(...)"
        )
    ctx = _get()
    if ctx is None:
        ctx = RequestContext()
        CURRENT.set(ctx)
    ctx._actor = actor
    if passkey is not None:
        ctx._passkey = passkey


@contextlib.contextmanager
def audit_context(
    *,
    actor: Actor | None = _UNSET,
    tenant_id: str | None = _UNSET,
    passkey: bool = _UNSET,
    ip: str | None = _UNSET,
    user_agent: str | None = _UNSET,
    request_id: str | None = _UNSET,
) -> Iterator[RequestContext]:
    """Attribute every change made inside the block, e.g. in a job or a script.

    Fields not given are inherited from the enclosing context, if any.
    """
    if actor is not None and actor is not _UNSET and not isinstance(actor, Actor):
        raise TypeError("audit_context(actor=...) takes an Actor, e.g. Actor.system('nightly-job')")
    ctx = RequestContext(
        actor=actor,
        tenant_id=tenant_id,
        passkey=passkey,
        ip=ip,
        user_agent=user_agent,
        request_id=request_id,
        parent=_get(),
    )
    token = CURRENT.set(ctx)
    try:
        yield ctx
    finally:
        CURRENT.reset(token)


def snapshot() -> dict[str, Any] | None:
    """The current audit context as a small JSON-safe dict, to carry into a job.

    Taken inside a request, it resolves the middleware's lazy fields first (the
    actor, tenant and client as the request knows them). None outside any
    request or :func:`audit_context`.

    Example:
        ``queue.enqueue(run_refund, whodid.snapshot(), payment_id)``
    """
    ctx = current_context()
    if ctx is None:
        return None
    actor = ctx.actor or (ANONYMOUS if ctx.in_request else None)
    return {
        "actor": None
        if actor is None
        else {"type": actor.type, "id": actor.id, "label": actor.label},
        "tenant_id": ctx.tenant_id,
        "passkey": bool(ctx.passkey),
        "ip": ctx.ip,
        "user_agent": ctx.user_agent,
        "request_id": ctx.request_id,
    }


@contextlib.contextmanager
def restore(snap: dict[str, Any] | None) -> Iterator[RequestContext | None]:
    """Bring back a :func:`snapshot` for the block: what the job writes is
    attributed as the code that enqueued it would have been. ``None`` (nothing
    was captured) restores nothing.

    Example:
        ``with whodid.restore(snap): refund(payment_id)``
    """
    if snap is None:
        yield None
        return
    raw = snap.get("actor")
    actor = None
    if isinstance(raw, dict) and raw.get("type") in ("user", "api_key", "system", "anonymous"):
        actor = Actor(raw["type"], raw.get("id"), raw.get("label"))
    with audit_context(
        actor=actor,
        tenant_id=snap.get("tenant_id"),
        passkey=bool(snap.get("passkey")),
        ip=snap.get("ip"),
        user_agent=snap.get("user_agent"),
        request_id=snap.get("request_id"),
    ) as ctx:
        yield ctx
