"""The user's actor/tenant/passkey callables, as the middlewares call them."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from whodid.context import Actor, ContextSource
from whodid.errors import ConfigurationError


def check_resolver(name: str, fn: object) -> None:
    """Reject resolvers that cannot run at write time, at start-up."""
    if fn is None:
        return
    if not callable(fn):
        raise ConfigurationError(f"{name}= must be a callable taking the request, got {fn!r}")
    if inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
        getattr(fn, "__call__", None)  # noqa: B004 - callable objects too
    ):
        raise ConfigurationError(
            f"{name}= is async, but resolvers run inside the ORM flush, which is sync. "
            "Pass a sync function, or call whodid.set_actor(...) from your async "
            "dependency after authenticating."
        )


class Resolvers:
    """The three optional resolvers of a middleware, checked once at start-up."""

    def __init__(
        self,
        actor: Callable[[Any], Actor | None] | None,
        tenant: Callable[[Any], str | None] | None,
        passkey: Callable[[Any], bool | None] | None,
    ) -> None:
        for name, fn in (("actor", actor), ("tenant", tenant), ("passkey", passkey)):
            check_resolver(name, fn)
        self.actor = actor
        self.tenant = tenant
        self.passkey = passkey


class ResolverSource(ContextSource):
    """Lazy context fields that come from the resolvers, given the request object."""

    __slots__ = ()
    in_request = True
    mw: Any  # the middleware: its resolvers and enricher; a slot of each subclass

    @property
    def resolvers(self) -> Resolvers:
        return self.mw.resolvers  # type: ignore[no-any-return]

    @property
    def enricher(self) -> Any:  # type: ignore[override]
        return self.mw.enricher

    def request(self) -> Any:
        raise NotImplementedError

    def actor(self) -> Actor | None:
        if self.resolvers.actor is None:
            return None
        actor = self.resolvers.actor(self.request())
        if actor is not None and not isinstance(actor, Actor):
            raise TypeError(
                f"the actor= resolver returned {actor!r}; return an Actor "
                "(Actor.user(...), Actor.api_key(...)) or None"
            )
        return actor

    def tenant_id(self) -> str | None:
        if self.resolvers.tenant is None:
            return None
        tenant = self.resolvers.tenant(self.request())
        return None if tenant is None else str(tenant)

    def passkey(self) -> bool:
        fn = self.resolvers.passkey
        return bool(fn(self.request())) if fn is not None else False
