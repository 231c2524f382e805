"""Actors, audit_context blocks and set_actor across tasks and threads.

Tests that start a context do so inside ``contextvars.Context().run`` (or a
thread, or asyncio.run), so nothing they set leaks into the next test.
"""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import anyio.to_thread
import pytest
from starlette.concurrency import run_in_threadpool

import whodid
from whodid import Actor, RequestContext, audit_context, current_context, set_actor
from whodid.context import ContextSource

T = TypeVar("T")


def isolated(fn: Callable[[], T]) -> T:
    """Run ``fn`` in an empty context, as a fresh task or thread would."""
    return contextvars.Context().run(fn)


@pytest.fixture(autouse=True)
def no_context_leaks() -> Any:
    assert current_context() is None
    yield
    assert current_context() is None


# -- Actor ------------------------------------------------------------------------------------


def test_actor_constructors():
    assert Actor.user("usr_1", "ada@example.com") == Actor("user", "usr_1", "ada@example.com")
    assert Actor.api_key("key_1", "sk_live_ab") == Actor("api_key", "key_1", "sk_live_ab")
    assert Actor.system("nightly-settlement") == Actor("system", "nightly-settlement", None)
    assert Actor.user("usr_2").label is None
    # Integer primary keys become strings: the log stores text ids.
    assert Actor.user(42).id == "42"  # type: ignore[arg-type]
    assert Actor.api_key(7).id == "7"  # type: ignore[arg-type]


def test_actors_are_immutable_values():
    a = Actor.user("usr_1", "ada@example.com")
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.id = "usr_2"  # type: ignore[misc]
    assert a == Actor.user("usr_1", "ada@example.com")
    assert len({a, Actor.user("usr_1", "ada@example.com"), Actor.api_key("usr_1")}) == 2
    assert not hasattr(a, "__dict__")  # slots


def test_exports():
    for name in ("Actor", "RequestContext", "audit_context", "current_context", "set_actor"):
        assert name in whodid.__all__


# -- audit_context ----------------------------------------------------------------------------


def test_audit_context_nesting_overrides_inherits_and_restores():
    job, admin = Actor.system("nightly"), Actor.user("usr_admin", "root@example.com")

    def run() -> None:
        with audit_context(
            actor=job, tenant_id="org_1", request_id="job-7", ip="10.0.0.5"
        ) as outer:
            assert current_context() is outer
            assert (outer.actor, outer.tenant_id, outer.request_id) == (job, "org_1", "job-7")
            assert outer.passkey is False and outer.user_agent is None

            with audit_context(actor=admin, passkey=True) as inner:
                assert current_context() is inner
                assert inner is not outer
                # overridden
                assert inner.actor == admin and inner.passkey is True
                # inherited
                assert (inner.tenant_id, inner.request_id, inner.ip) == (
                    "org_1",
                    "job-7",
                    "10.0.0.5",
                )

                with audit_context(tenant_id="org_2") as innermost:
                    assert (innermost.actor, innermost.tenant_id) == (admin, "org_2")
                    assert innermost.passkey is True
                assert current_context() is inner

            # restored, and the outer block's fields were never touched
            assert current_context() is outer
            assert (outer.actor, outer.passkey, outer.tenant_id) == (job, False, "org_1")
        assert current_context() is None

    isolated(run)


def test_audit_context_can_override_with_none():
    def run() -> None:
        with audit_context(actor=Actor.system("job"), tenant_id="org_1"):
            with audit_context(actor=None, tenant_id=None) as inner:
                assert inner.actor is None
                assert inner.tenant_id is None
            assert current_context().actor == Actor.system("job")  # type: ignore[union-attr]

    isolated(run)


def test_audit_context_restores_on_exceptions():
    def run() -> None:
        with audit_context(actor=Actor.system("outer")) as outer:
            with pytest.raises(KeyError), audit_context(actor=Actor.system("inner")):
                raise KeyError("x")
            assert current_context() is outer
        assert current_context() is None

    isolated(run)


def test_audit_context_rejects_a_non_actor():
    with pytest.raises(TypeError, match=r"Actor\.system"):  # noqa: SIM117
        with audit_context(actor="usr_1"):  # type: ignore[arg-type]
            pass
    assert current_context() is None


def test_set_actor_inside_a_block_changes_only_that_block():
    def run() -> None:
        with audit_context(actor=Actor.system("job")) as outer:
            with audit_context(tenant_id="org_1") as inner:
                set_actor(Actor.user("usr_1"), passkey=True)
                assert (inner.actor, inner.passkey) == (Actor.user("usr_1"), True)
            assert (outer.actor, outer.passkey) == (Actor.system("job"), False)
            # passkey=None (the default) leaves the passkey alone
            set_actor(Actor.user("usr_2"))
            assert (outer.actor, outer.passkey) == (Actor.user("usr_2"), False)
            set_actor(None)
            assert outer.actor is None

    isolated(run)


class CountingSource(ContextSource):
    def __init__(self) -> None:
        self.calls: dict[str, int] = {}

    def _count(self, name: str, value: Any) -> Any:
        self.calls[name] = self.calls.get(name, 0) + 1
        return value

    def actor(self) -> Actor | None:
        return self._count("actor", Actor.user("usr_lazy"))

    def tenant_id(self) -> str | None:
        return self._count("tenant_id", "org_lazy")

    def passkey(self) -> bool:
        return self._count("passkey", 1)  # type: ignore[no-any-return]

    def ip(self) -> str | None:
        return self._count("ip", "198.51.100.1")

    def user_agent(self) -> str | None:
        return self._count("user_agent", "curl/8")


def test_request_context_resolves_lazily_and_once():
    source = CountingSource()
    ctx = RequestContext(request_id="r1", source=source)
    assert source.calls == {}
    for _ in range(3):
        assert ctx.actor == Actor.user("usr_lazy")
        assert ctx.tenant_id == "org_lazy"
        assert ctx.passkey is True  # coerced to bool
        assert ctx.ip == "198.51.100.1"
        assert ctx.user_agent == "curl/8"
    assert source.calls == dict.fromkeys(("actor", "tenant_id", "passkey", "ip", "user_agent"), 1)
    assert "usr_lazy" in repr(ctx) and "r1" in repr(ctx)


def test_child_keeps_unresolved_fields_lazy():
    source = CountingSource()
    parent = RequestContext(request_id="r1", source=source)
    child = parent.child(actor=Actor.system("job"))
    assert source.calls == {}
    assert child.actor == Actor.system("job")
    assert child.tenant_id == "org_lazy"
    assert source.calls == {"tenant_id": 1}
    assert child.request_id == "r1"
    # Resolved through the parent, so the request resolves each field once,
    # however many nested blocks (or record() calls with overrides) ask.
    assert parent.tenant_id == "org_lazy"
    assert parent.child(passkey=True).tenant_id == "org_lazy"
    assert source.calls == {"tenant_id": 1}
    assert parent.actor == Actor.user("usr_lazy")  # the override stayed in the child


def test_explicit_values_win_over_the_source():
    source = CountingSource()
    ctx = RequestContext(actor=None, tenant_id="org_x", passkey=False, source=source)
    assert (ctx.actor, ctx.tenant_id, ctx.passkey) == (None, "org_x", False)
    assert source.calls == {}


# -- set_actor --------------------------------------------------------------------------------


def test_set_actor_outside_any_context_starts_one_for_the_current_task():
    def run() -> RequestContext | None:
        assert current_context() is None
        set_actor(Actor.system("migration-2026-03"), passkey=False)
        ctx = current_context()
        assert ctx is not None
        assert (ctx.actor, ctx.passkey, ctx.request_id) == (
            Actor.system("migration-2026-03"),
            False,
            None,
        )
        # A second call reuses it.
        set_actor(Actor.system("migration-2026-04"))
        assert current_context() is ctx
        assert ctx.actor == Actor.system("migration-2026-04")
        return ctx

    assert isolated(run) is not None
    assert current_context() is None  # only that task/thread got one


def test_set_actor_outside_a_context_in_asyncio_tasks_stays_per_task():
    async def task(name: str) -> Actor | None:
        set_actor(Actor.system(name))
        await asyncio.sleep(0)
        ctx = current_context()
        return ctx.actor if ctx else None

    async def main() -> list[Actor | None]:
        actors = await asyncio.gather(*(task(f"job-{i}") for i in range(20)))
        assert current_context() is None  # the tasks' contexts did not reach main
        return actors

    assert asyncio.run(main()) == [Actor.system(f"job-{i}") for i in range(20)]


@pytest.mark.parametrize(
    "bad", ["usr_1", {"type": "user", "id": "usr_1"}, ("user", "usr_1"), 42, Actor]
)
def test_set_actor_rejects_anything_but_an_actor(bad: Any):
    with pytest.raises(TypeError) as info:
        set_actor(bad)
    message = str(info.value)
    assert "set_actor() takes an Actor" in message
    assert type(bad).__name__ in message
    assert "Actor.user(...)" in message and "Actor.api_key(...)" in message
    assert current_context() is None  # and it did not start a context either


def test_set_actor_in_a_thread_with_a_copied_context_is_seen_by_the_caller():
    # What FastAPI/anyio do for sync dependencies: run them in a worker thread
    # under contextvars.copy_context(). A ContextVar.set there is lost, but
    # the RequestContext object is shared, so a mutation of it is not.
    marker: contextvars.ContextVar[str] = contextvars.ContextVar("marker", default="unset")

    def dependency() -> None:
        marker.set("set in thread")
        set_actor(Actor.api_key("key_1", "sk_live_ab"), passkey=True)

    def run() -> None:
        with audit_context(tenant_id="org_1") as ctx, ThreadPoolExecutor(max_workers=2) as pool:
            pool.submit(contextvars.copy_context().run, dependency).result()
            assert marker.get() == "unset"  # the copy's own set() stayed in the copy
            assert current_context() is ctx
            assert (ctx.actor, ctx.passkey, ctx.tenant_id) == (
                Actor.api_key("key_1", "sk_live_ab"),
                True,
                "org_1",
            )

    isolated(run)


def test_set_actor_via_anyio_and_starlette_thread_pools_is_seen_by_the_caller():
    async def main() -> None:
        with audit_context() as ctx:
            await anyio.to_thread.run_sync(set_actor, Actor.api_key("key_anyio"))
            assert ctx.actor == Actor.api_key("key_anyio")
            await run_in_threadpool(set_actor, Actor.user("usr_starlette"), passkey=True)
            assert (ctx.actor, ctx.passkey) == (Actor.user("usr_starlette"), True)

    asyncio.run(main())


def test_set_actor_in_a_copied_context_without_a_request_context_stays_there():
    # The limit of the design: with no context to share, the thread starts its
    # own, in its copy, which the caller never sees. The middleware (or an
    # audit_context block) is what makes thread-pool set_actor() work.
    def run() -> None:
        with ThreadPoolExecutor(max_workers=1) as pool:
            pool.submit(contextvars.copy_context().run, set_actor, Actor.user("usr_1")).result()
        assert current_context() is None

    isolated(run)


def test_threads_with_their_own_audit_context_do_not_interfere():
    n = 20
    barrier = threading.Barrier(n)
    results: dict[int, list[Any]] = {}
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        try:
            with audit_context(actor=Actor.user(f"usr_{i}"), tenant_id=f"org_{i}") as ctx:
                barrier.wait(timeout=10)  # everyone is inside a block now
                seen = [current_context() is ctx, ctx.actor, ctx.tenant_id]
                if i % 2:
                    set_actor(Actor.api_key(f"key_{i}"), passkey=True)
                barrier.wait(timeout=10)  # every set_actor has happened
                current = current_context()
                assert current is not None
                seen += [current is ctx, current.actor, current.passkey, current.tenant_id]
            seen.append(current_context())
            results[i] = seen
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not errors, errors
    for i in range(n):
        actor = Actor.api_key(f"key_{i}") if i % 2 else Actor.user(f"usr_{i}")
        assert results[i] == [
            True,
            Actor.user(f"usr_{i}"),
            f"org_{i}",
            True,
            actor,
            bool(i % 2),
            f"org_{i}",
            None,
        ]
