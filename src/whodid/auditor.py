"""The :class:`Auditor`: one object that owns the tracked models and the log."""

from __future__ import annotations

import builtins
import datetime as dt
import json
import os
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from typing import IO, TYPE_CHECKING, Any, TypeVar, cast, overload

from sqlalchemy import create_engine
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from whodid.capture.orm import OrmCapture, make_spec
from whodid.context import Actor, RequestContext, current_context
from whodid.entry.fields import Entry
from whodid.entry.values import DEFAULT_REDACT_PATTERNS, Redactor, to_json
from whodid.errors import ConfigurationError
from whodid.store import schema
from whodid.store.engines import is_async, sync_twin
from whodid.store.enrich import Enricher
from whodid.store.writer import Change, Writer
from whodid.tenancy import ALL_TENANTS, TENANT_REQUIRED, require_tenant

# Reading, exporting, retention and integrity load on first use: an app that
# only writes entries never pays for importing them.
if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

    from whodid.export import formats as _export
    from whodid.export.runs import ExportRun
    from whodid.integrity import verify as integrity
    from whodid.integrity.retention import Purged, Retention
    from whodid.store.query import Page
    from whodid.stream import Destination, Relay

M = TypeVar("M", bound=type[Any])


class Auditor:
    """Records who changed what in the application's own database.

    ``engine`` is the app's Engine (or a database URL); entries live in that
    database, in the ``whodid_entries`` table. With an async app, pass the
    AsyncEngine: the ORM hooks work through the async session itself, and the
    read side (list, export, seal, verify, record without a session) opens a
    sync engine on the same database (asyncpg and psycopg async become
    psycopg, aiosqlite becomes sqlite3).

    A change to a row whose tenant column (``track(tenant=...)``) names another
    tenant than the context's is filed under the row's tenant, with
    ``acting_tenant_id`` in its metadata; ``cross_tenant="refuse"`` fails such a
    flush instead.

    ``fast_paths=False`` writes every entry through SQLAlchemy Core's INSERT,
    the reference each faster way of writing is tested against byte for byte.
    """

    def __init__(
        self,
        engine: Engine | AsyncEngine | str | None = None,
        *,
        redact_patterns: Iterable[str] = DEFAULT_REDACT_PATTERNS,
        geoip_db: str | os.PathLike[str] | None = None,
        signing_key: Any = None,
        retention: Retention | None = None,
        seal_grace: dt.timedelta | None = None,
        fast_paths: bool = True,
        cross_tenant: str = "file",
    ) -> None:
        if isinstance(engine, str):
            engine = create_engine(engine)
        if is_async(engine, "AsyncEngine"):
            engine = sync_twin(cast("AsyncEngine", engine))
        if engine is not None and not isinstance(engine, Engine):
            raise ConfigurationError(
                f"Auditor() takes an SQLAlchemy Engine or a database URL, got {engine!r}"
            )
        self.engine: Engine | None = engine
        if engine is not None:
            schema.guard_sqlite(engine)
        self.redactor = Redactor(redact_patterns)
        self.enricher = Enricher(geoip_db) if geoip_db is not None else None
        self.signing_key = None
        if signing_key is not None:
            from whodid.integrity.keys import load_private_key

            self.signing_key = load_private_key(signing_key)
        self.retention = retention
        # None: integrity.DEFAULT_GRACE, looked up when sealing (cryptography loads late).
        self.seal_grace = seal_grace
        self.writer = Writer(self.enricher, fast_paths=fast_paths, cross_tenant=cross_tenant)
        self.capture = OrmCapture(self.writer)

    # -- set-up ---------------------------------------------------------------

    def _bind(self, bind: Engine | Connection | None = None) -> Engine | Connection:
        bind = bind or self.engine
        if bind is None:
            raise ConfigurationError(
                "this Auditor has no database; create it as Auditor(engine) or pass bind="
            )
        return bind

    def create_all(
        self,
        bind: Engine | Connection | None = None,
        *,
        partitioned: bool = False,
        app_role: str | None = None,
        stream_role: str | None = None,
    ) -> None:
        """Create the audit table, its indexes and append-only triggers (idempotent).

        Args:
            bind: where to create them (default: the Auditor's engine).
            partitioned: (PostgreSQL) partition the table by month, so that
                retention drops whole months; see :mod:`whodid.store.partitions`.
            app_role: (PostgreSQL) run this as the tables' owner and name the
                application's role: it gets only what writing entries needs
                (SELECT, INSERT, the sequence, the insert procedure), so no
                UPDATE, DELETE, TRUNCATE or DDL of it can touch the log.
            stream_role: (PostgreSQL) the role log stream relays connect as: it
                may read entries and keep the streams' positions, nothing more.

        Example:
            ``Auditor("postgresql+psycopg://owner@db/app").create_all(app_role="app")``
        """
        target = self._bind(bind)
        from whodid.store import partitions

        if not partitioned:
            schema.create_all(target, app_role, stream_role)
            return
        with schema.begin(target) as conn:
            partitions.create_partitioned(conn)
            if app_role is not None:
                schema.grant_writer(conn, app_role)
            if stream_role is not None:
                schema.grant_streamer(conn, stream_role)

    def upgrade(self, bind: Engine | Connection | None = None) -> builtins.list[str]:
        """Bring a log made by an earlier whodid up to this version's schema.

        Every entry keeps its seq and digest (``verify`` stays clean). Returns
        what was done; idempotent. Run it as the tables' owner.
        """
        with schema.begin(self._bind(bind)) as conn:
            return schema.upgrade(conn)

    def instrument(self, target: Any) -> Any:
        """Install the ORM hooks on a sessionmaker, scoped_session, Session class or instance
        (or an async_sessionmaker / AsyncSession). Returns ``target``."""
        return self.capture.instrument(target)

    @overload
    def track(
        self,
        model: None = None,
        *,
        feature: str | None = ...,
        entity_type: str | None = ...,
        exclude: Iterable[str] = ...,
        redact: Iterable[str] = ...,
        tenant: str | None = ...,
    ) -> Callable[[M], M]: ...

    @overload
    def track(
        self,
        model: M,
        *,
        feature: str | None = ...,
        entity_type: str | None = ...,
        exclude: Iterable[str] = ...,
        redact: Iterable[str] = ...,
        tenant: str | None = ...,
    ) -> M: ...

    def track(
        self,
        model: M | None = None,
        *,
        feature: str | None = None,
        entity_type: str | None = None,
        exclude: Iterable[str] = (),
        redact: Iterable[str] = (),
        tenant: str | None = None,
    ) -> M | Callable[[M], M]:
        """Audit every insert, update and delete of ``model``.

        Use as ``@auditor.track(feature="customer")`` above the class or as
        ``auditor.track(Customer)``. ``feature`` and ``entity_type`` default to
        the table name; ``exclude`` lists attributes never recorded (and whose
        changes alone write no entry); ``redact`` lists attributes recorded
        only as ``"[REDACTED]"``, on top of the secret-looking names redacted by
        default; ``tenant`` names a column holding the row's tenant, used when
        the request context has none (e.g. in jobs).
        """

        def register(cls: M) -> M:
            spec = make_spec(
                cls,
                feature=feature,
                entity_type=entity_type,
                exclude=exclude,
                redact=redact,
                tenant=tenant,
                redactor=self.redactor,
            )
            self.capture.add(spec)
            return cls

        return register if model is None else register(model)

    # -- manual events --------------------------------------------------------

    def record(
        self,
        action: str,
        *,
        entity: tuple[str, Any] | None = None,
        metadata: Mapping[str, Any] | None = None,
        session: Session | Connection | None = None,
        actor: Actor | None = None,
        tenant_id: str | None = None,
        feature: str | None = None,
        operation: str | None = None,
        before: Mapping[str, Any] | None = None,
        after: Mapping[str, Any] | None = None,
    ) -> None:
        """Record an event the ORM cannot see: a failed sign-in, a refund, an export.

        ``action`` is a dotted name (``auth.signin.failed``); its first part is the
        feature and the rest the operation unless given. With ``session`` the
        entry joins that session's transaction (and is lost if it rolls back);
        without, it is committed on its own through the Auditor's engine.
        ``actor`` and ``tenant_id`` override the current context.
        """
        if is_async(session, "AsyncSession"):
            raise ConfigurationError(
                "record() is sync; with an AsyncSession use "
                "await session.run_sync(lambda s: auditor.record(..., session=s))"
            )
        if not action or not isinstance(action, str):
            raise ValueError("record() needs a dotted action name, e.g. 'auth.signin.failed'")
        head, _, rest = action.partition(".")
        entity_type, entity_id = (None, None) if entity is None else entity
        change = Change(
            feature=feature or head,
            operation=operation or rest or head,
            action=action,
            entity_type=None if entity_type is None else str(entity_type),
            entity_id=None if entity_id is None else str(entity_id),
            metadata=self.redactor.scrub(to_json(dict(metadata))) if metadata else {},
            before=None if before is None else self.redactor.scrub(to_json(dict(before))),
            after=None if after is None else self.redactor.scrub(to_json(dict(after))),
        )
        overrides: dict[str, Any] = {}
        if actor is not None:
            overrides["actor"] = actor
        if tenant_id is not None:
            overrides["tenant_id"] = tenant_id
        ctx = current_context()
        if overrides:
            ctx = RequestContext(parent=ctx, **overrides)
        rows = self.writer.rows([change], ctx)
        if isinstance(session, Session):
            self.writer.write(session.connection(), rows)
        elif isinstance(session, Connection):
            self.writer.write(session, rows)
        elif session is None:
            bind = self._bind()
            assert isinstance(bind, Engine)
            with bind.begin() as conn:
                self.writer.write(conn, rows)
        else:
            raise ConfigurationError(
                f"record(session=...) takes a Session or Connection, got {session!r}"
            )

    # -- reading --------------------------------------------------------------

    def list(
        self,
        *,
        limit: int = 50,
        cursor: str | None = None,
        tenant_id: Any = TENANT_REQUIRED,
        labels: Mapping[str, str] | None = None,
        **filters: Any,
    ) -> Page:
        """One page of entries matching every filter given, newest first.

        Filters: action (one or several), feature, operation, actor_type,
        actor_id, user_id, api_key_id, entity_type, entity_id, request_id, ip,
        q (free text over every detail field, before and after values
        included), start, end (datetimes, dates or ISO 8601 strings; a date
        alone as ``end`` includes that whole UTC day; at most 366 days apart,
        the last 366 days by default). ``labels`` names the filters as the
        caller's users know them, for error messages (``{"start": "start_date"}``).
        Pass ``page.next_cursor`` back as ``cursor`` for the next page.
        ``tenant_id`` is required: a tenant's id, None for entries written with
        no tenant, or ``whodid.ALL_TENANTS`` (trusted code reading every tenant).
        """
        from whodid.store import query as _query
        from whodid.store.query import Filters

        spec = Filters.build(tenant_id=require_tenant("list", tenant_id), labels=labels, **filters)
        with _query.connect(self._bind()) as conn:
            return _query.list_page(conn, spec, limit=limit, cursor=cursor)

    def count(self, *, tenant_id: Any = TENANT_REQUIRED, **filters: Any) -> int:
        """How many entries match (no date limit), e.g. for an export's progress bar."""
        from whodid.store import query as _query
        from whodid.store.query import Filters

        spec = Filters.build(tenant_id=require_tenant("count", tenant_id), **filters)
        with _query.connect(self._bind()) as conn:
            return _query.count_entries(conn, spec)

    def get(self, entry_id: str, *, tenant_id: Any = TENANT_REQUIRED) -> Entry | None:
        """The entry with this id, or None (also when it belongs to another tenant)."""
        from whodid.store import query as _query

        tenant_id = require_tenant("get", tenant_id)
        with _query.connect(self._bind()) as conn:
            return _query.get_entry(conn, entry_id, tenant_id)

    def related(self, entry_id: str, *, tenant_id: Any = TENANT_REQUIRED) -> builtins.list[Entry]:
        """Entries of the same request or chain as ``entry_id``, oldest first."""
        from whodid.store import query as _query

        tenant_id = require_tenant("related", tenant_id)
        with _query.connect(self._bind()) as conn:
            entry = _query.get_entry(conn, entry_id, tenant_id)
            return [] if entry is None else _query.related_entries(conn, entry, tenant_id)

    def actions(self, *, tenant_id: Any = TENANT_REQUIRED) -> builtins.list[str]:
        """Every action name in the log (of ``tenant_id``), sorted: the choices of a filter."""
        from whodid.store import query as _query

        tenant_id = require_tenant("actions", tenant_id)
        with _query.connect(self._bind()) as conn:
            return _query.distinct_actions(conn, tenant_id)

    def export(
        self,
        fileobj: IO[str] | IO[bytes],
        format: _export.Format = "csv",
        *,
        tenant_id: Any = TENANT_REQUIRED,
        progress: Callable[[int], None] | None = None,
        actor: Actor | None = None,
        proof: IO[str] | None = None,
        **filters: Any,
    ) -> int:
        """Write every matching entry (no span limit) as CSV or NDJSON; returns the count.

        Recorded as ``audit_log.export`` entries when it starts and when it ends
        (see :mod:`whodid.export.runs`); ``actor`` names who exported (default:
        the current context's actor). With ``proof``, a proof bundle (JSON, see
        :mod:`whodid.integrity.bundle`) is written there too: it lets anyone
        with the public key check the export offline. The log is sealed first
        when a signing key is configured, so every entry is proven; without a
        key (or for entries committed after that seal) the bundle lists them
        as unproven, with why, and still proves each row equals its entry.
        """
        if proof is not None and self.signing_key is not None:
            self.seal()
        from whodid.export.hashing import hashing

        run = self._export_run("export", format, tenant_id, actor, filters)
        sink = hashing(fileobj) if proof is not None else fileobj
        count = run.write(sink, progress, fast_paths=self.writer.fast_paths)
        if proof is not None:
            from whodid.integrity import bundle
            from whodid.integrity.checkpoints import all_checkpoints
            from whodid.store import query as _query

            name = getattr(fileobj, "name", None)
            meta = {
                "file": name if isinstance(name, str) else None,
                "format": format,
                "sha256": sink.hexdigest(),  # type: ignore[union-attr]
            }
            with _query.connect(self._bind()) as conn:
                rows = _query.export_entry_rows(conn, run.spec)
                made = bundle.make(rows, all_checkpoints(conn), meta, self._why_unsealed())
            json.dump(made, proof, indent=1, ensure_ascii=False)
        return count

    def iter_export(
        self,
        format: _export.Format = "csv",
        *,
        tenant_id: Any = TENANT_REQUIRED,
        actor: Actor | None = None,
        lines_per_chunk: int = 500,
        **filters: Any,
    ) -> Iterator[str]:
        """Every matching entry as chunks of CSV or NDJSON text, for streaming.

        Filters are checked and the start recorded now, so a bad filter fails
        before anything is sent; the end is recorded when the iterator ends
        (``completed``, ``abandoned`` if closed early, ``failed``).
        """
        run = self._export_run("iter_export", format, tenant_id, actor, filters)
        return run.chunks(lines_per_chunk)

    def _export_run(
        self, method: str, format: Any, tenant_id: Any, actor: Actor | None, filters: Any
    ) -> ExportRun:
        from whodid.export.runs import ExportRun
        from whodid.store import query as _query
        from whodid.store.query import Filters

        spec = Filters.build(tenant_id=require_tenant(method, tenant_id), **filters)
        return ExportRun(lambda: _query.connect(self._bind()), self.record, spec, format, actor)

    # -- integrity and retention ------------------------------------------------

    def _private_key(self) -> Any:
        if self.signing_key is None:
            raise ConfigurationError(
                "sealing needs a signing key: Auditor(engine, signing_key='audit-ed25519.pem') "
                "(create one with `whodid keygen audit-ed25519.pem`)"
            )
        return self.signing_key

    def seal(self) -> integrity.Checkpoint | None:
        """Write a signed checkpoint over the entries not sealed yet (None if none).

        Also brings the search index up to date (:meth:`index_search`), so one
        periodic job (``seal_every``) keeps both current.
        """
        from whodid.integrity import verify as integrity

        key = self._private_key()
        engine = self._engine()
        grace = integrity.DEFAULT_GRACE if self.seal_grace is None else self.seal_grace
        checkpoint = None
        for attempt in range(5):
            try:
                with engine.begin() as conn:
                    checkpoint = integrity.seal(conn, key, grace)
                break
            except IntegrityError:
                # Another process sealed the same checkpoint number first.
                if attempt == 4:
                    raise
        self.index_search()
        return checkpoint

    def index_search(self) -> int:
        """Move newly written entries into the search index; how many it took.

        PostgreSQL only (0 elsewhere). ``q`` finds new entries before this runs
        too, by scanning them; run it now and then (``seal()`` does, or
        ``whodid index`` from cron) so that scan stays short.
        """
        from whodid.store import search as _search

        engine = self._engine()
        total = 0
        while True:
            with engine.begin() as conn:
                done = _search.index_pending(conn)
            total += done
            if not done:
                return total

    def seal_every(self, seconds: float) -> integrity.Sealer:
        """Seal in a background thread every ``seconds``; call ``.stop()`` to end it."""
        from whodid.integrity import verify as integrity

        return integrity.Sealer(self.seal, seconds).start()

    def verify(
        self,
        public_key: Any = None,
        *,
        head: Mapping[str, Any] | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> integrity.Report:
        """Check every entry against the signed checkpoints; see ``report.problems``.

        ``public_key`` defaults to the signing key's public half; a list of keys
        (paths, PEM or key objects) while keys rotate: each checkpoint names
        the key it was signed with. ``head`` is a signed head kept outside the
        database (``checkpoint.head()``), which lets verify see checkpoints
        removed from the end.
        """
        from whodid.integrity import verify as integrity

        with self._engine().connect() as conn:
            return integrity.verify(
                conn, self._public_keys(public_key), dict(head) if head else None, progress
            )

    def _public_keys(self, public_key: Any) -> builtins.list[Any]:
        from whodid.integrity.keys import load_public_key

        if public_key is None:
            return [self._private_key().public_key()]
        many = isinstance(public_key, builtins.list | tuple)
        return [load_public_key(k) for k in (public_key if many else [public_key])]

    def prove(self, entry_id: str, *, tenant_id: Any = TENANT_REQUIRED) -> dict[str, Any] | None:
        """One entry's proof that it is in the signed log, checkable offline.

        Returns None for an unknown entry (or another tenant's); else a proof
        bundle of that one entry (see :mod:`whodid.integrity.bundle`), whose
        ``entries[0].proof`` is None while no seal covers it yet.
        """
        from whodid.integrity import bundle
        from whodid.integrity.checkpoints import all_checkpoints
        from whodid.store import query as _query

        tenant_id = require_tenant("prove", tenant_id)
        with _query.connect(self._bind()) as conn:
            row = _query.entry_row(conn, entry_id, tenant_id)
            if row is None:
                return None
            found = bundle.make([row], all_checkpoints(conn), {}, self._why_unsealed())
        return found

    def _why_unsealed(self) -> str:
        if self.signing_key is None:
            return "not sealed yet: this Auditor has no signing key (whodid seal seals the log)"
        return "not sealed yet: committed after the seal this export began with"

    def purge(
        self, before: dt.datetime | None = None, *, tenant_id: Any = TENANT_REQUIRED
    ) -> builtins.list[Purged]:
        """Delete entries past their retention; the one way rows leave the log.

        Args:
            before: delete entries older than this (never a future time),
                refusing to cut into a configured retention period. Without
                it, ``Auditor(retention=...)`` says how old per tenant.
            tenant_id: whose entries: a tenant's id, None for entries written
                with no tenant, or ``whodid.ALL_TENANTS``.

        Returns:
            One :class:`~whodid.retention.Purged` per tenant horizon applied.

        Each purge is signed when a signing key is configured (without one,
        ``verify`` cannot tell it from a deletion past the last checkpoint) and
        recorded as an ``audit_log.purge`` entry by the system actor.
        """
        from whodid.integrity.retention import plan_purge, purge_rows
        from whodid.store import search as _search

        tenant_id = require_tenant("purge", tenant_id)
        plan = plan_purge(
            self.retention, before, tenant_id, lambda: self.tenants(tenant_id=ALL_TENANTS)
        )
        done = []
        for tenant, horizon in plan:
            if self.signing_key is not None:
                self.seal()
            with self._engine().begin() as conn:
                result = purge_rows(conn, horizon, tenant, self.signing_key)
                if result.rows:
                    _search.forget(conn)
                    who = RequestContext(
                        actor=Actor.system("whodid-retention"), tenant_id=result.tenant_id
                    )
                    self.writer.write(conn, self.writer.rows([result.change()], who))
            done.append(result)
        return done

    def stream(
        self,
        to: str | Destination,
        *,
        secrets: builtins.list[str] | tuple[str, ...] = (),
        ca: str | None = None,
        name: str | None = None,
        tenants: Collection[str | None] = (),
        action_prefixes: Collection[str] = (),
        actor_types: Collection[str] = (),
        start: str = "beginning",
        max_bytes: int = 0,
        backups: int = 5,
        headers: Mapping[str, str] | None = None,
        **relay_options: Any,
    ) -> Relay:
        """A relay shipping every committed entry to ``to``; ``.start()`` or ``.run()`` it.

        Args:
            to: ``https://...`` (signed NDJSON batches), ``syslog+tls://host:6514``,
                ``syslog+tcp://host:601``, a file path, ``-`` (stdout), or a
                :class:`~whodid.stream.Destination`.
            secrets: the HMAC secret of an HTTPS destination, or two while rotating.
            ca: a CA bundle (PEM) trusted for HTTPS or syslog over TLS.
            name: the stream's name, under which its position is stored.
            tenants, action_prefixes, actor_types: ship only the entries matching.
            start: ``"beginning"`` or ``"now"``, for a stream never run before.
            max_bytes, backups: rotation of a file destination.
            headers: extra headers of an HTTPS destination.
            relay_options: ``batch_size``, ``interval``, ``max_attempts``,
                ``dead_letter``, ``backoff`` (see :class:`~whodid.stream.Relay`).

        Returns:
            The :class:`~whodid.stream.Relay`, not yet running.

        Example:
            >>> auditor.stream("https://siem.example/whodid", secrets=[SECRET]).start()
        """
        from whodid.stream import Relay, StreamFilter, destination_for

        destination = (
            destination_for(
                to, secrets=secrets, ca=ca, max_bytes=max_bytes, backups=backups, headers=headers
            )
            if isinstance(to, str)
            else to
        )
        only = StreamFilter(tenants, action_prefixes, actor_types)
        return Relay(
            self._engine(), destination, name=name, filter=only, start=start, **relay_options
        )

    def tenants(
        self, *, tenant_id: Any = TENANT_REQUIRED, **filters: Any
    ) -> builtins.list[str | None]:
        """The tenants with entries matching the filters (None: entries with no tenant)."""
        from whodid.store import query as _query
        from whodid.store.query import Filters

        spec = Filters.build(tenant_id=require_tenant("tenants", tenant_id), **filters)
        with _query.connect(self._bind()) as conn:
            return _query.distinct_tenants(conn, spec)

    def _engine(self) -> Engine:
        bind = self._bind()
        if isinstance(bind, Connection):
            return bind.engine
        return bind
