"""SQLAlchemy session hooks: every insert, update and delete of a tracked model.

Registered with ``event.listen`` on the user's session factory:

- ``before_flush`` loads the unloaded columns of objects about to be deleted
  (the last moment the row can still be read);
- ``after_flush`` reads the flush's own unit of work (cascaded deletes and
  new primary keys included) and inserts the entries on the flush's
  connection, with Core, never through the ORM;
- ``do_orm_execute`` captures ORM-enabled bulk ``update()``/``delete()``
  statements one entry per affected row, by reading the rows before and
  after the statement.
"""

from __future__ import annotations

import sys
import weakref
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Column, event, inspect, select, tuple_
from sqlalchemy.exc import NoInspectionAvailable
from sqlalchemy.orm import (
    InstanceState,
    Mapper,
    ORMExecuteState,
    Session,
    UOWTransaction,
    scoped_session,
    sessionmaker,
)
from sqlalchemy.orm.base import PASSIVE_NO_INITIALIZE

from whodid.capture.diff import _MISSING, nested_change
from whodid.entry.values import REDACTED, REDACTED_CHANGED, Redactor, to_json
from whodid.errors import ConfigurationError
from whodid.store.engines import is_async
from whodid.store.writer import Change, Writer

_INTERNAL = "whodid_internal"
# session.info keys: the session is running commit()'s own flush; the
# connection whose COMMIT carries this commit's entries.
_COMMITTING = "whodid_committing"
_HELD_ON = "whodid_held_on"


@dataclass(frozen=True, slots=True)
class TrackSpec:
    """How one tracked model becomes entries."""

    mapper: Mapper[Any]
    feature: str
    entity_type: str
    columns: tuple[tuple[str, str], ...]  # (attribute key, column name), tracked only
    pk_keys: tuple[str, ...]
    redacted: frozenset[str]  # attribute keys whose values are never stored
    tenant_key: str | None
    redactor: Redactor  # secret-named keys inside JSON values, at any depth

    def values(self, state: InstanceState[Any]) -> dict[str, Any]:
        """Every loaded tracked column of ``state``, JSON-safe and redacted."""
        data = state.dict
        scrub = self.redactor.scrub
        return {
            key: REDACTED if key in self.redacted else scrub(to_json(data[key]))
            for key, _ in self.columns
            if key in data
        }

    def entity_id(self, values: dict[str, Any]) -> str | None:
        parts = [values.get(k) for k in self.pk_keys]
        if any(p is None for p in parts):
            return None
        texts = [str(to_json(p)) for p in parts]
        if self.redacted.intersection(self.pk_keys):
            # A secret as a key (an API token's own table): never stored in clear.
            texts = [
                self.redactor.entity_id(text) if key in self.redacted else text
                for key, text in zip(self.pk_keys, texts, strict=True)
            ]
        return ":".join(texts)

    def tenant(self, data: dict[str, Any]) -> str | None:
        if self.tenant_key is None:
            return None
        value = data.get(self.tenant_key)
        return None if value is None else str(value)

    def updated(
        self, state_dict: dict[str, Any], pairs: Iterable[tuple[str, Any, Any]]
    ) -> Change | None:
        """An update change from ``(key, old, new)`` pairs, or None if nothing changed.

        ``old`` is ``_MISSING`` when the old value was never loaded.
        """
        before: dict[str, Any] = {}
        after: dict[str, Any] = {}
        for key, old_value, new_value in pairs:
            old = old_value if old_value is _MISSING else to_json(old_value)
            new = to_json(new_value)
            if old == new:
                continue
            if key in self.redacted:
                old, new = REDACTED, REDACTED_CHANGED
            else:
                old, new = nested_change(*self.redactor.scrub_pair(old, new))
            if old is not _MISSING:
                before[key] = old
            if new is not _MISSING:
                after[key] = new
        if not before and not after:
            return None
        return self.change("update", state_dict, before=before, after=after)

    def change(self, operation: str, state_dict: dict[str, Any], **sides: Any) -> Change:
        return Change(
            feature=self.feature,
            operation=operation,
            entity_type=self.entity_type,
            entity_id=self.entity_id(state_dict),
            tenant_id=self.tenant(state_dict),
            **sides,
        )


def _noop(*args: Any) -> None:
    pass


def _keep_old_values(attribute: Any) -> None:
    """Turn on active history for ``attribute``, as
    ``event.listen(attribute, "set", fn, active_history=True)`` does, but
    without a listener: one would run on every assignment to a tracked
    column, in the app's own code too (cost: benchmarks/PROFILES.md)."""
    dispatch = attribute.dispatch
    if isinstance(getattr(dispatch, "_active_history", None), bool):
        dispatch._active_history = True  # what the event API sets
    else:  # a SQLAlchemy that keeps the flag elsewhere
        event.listen(attribute, "set", _noop, active_history=True)


def make_spec(
    model: type[Any],
    *,
    feature: str | None,
    entity_type: str | None,
    exclude: Iterable[str],
    redact: Iterable[str],
    tenant: str | None,
    redactor: Redactor,
) -> TrackSpec:
    try:
        mapper: Mapper[Any] = inspect(model)
    except NoInspectionAvailable:
        raise ConfigurationError(
            f"auditor.track() needs a mapped SQLAlchemy class, got {model!r}; "
            "decorate the declarative model class itself (class Customer(Base): ...)"
        ) from None
    if not isinstance(mapper, Mapper):
        raise ConfigurationError(f"auditor.track() needs a mapped class, got {model!r}")
    if not mapper.primary_key:
        raise ConfigurationError(
            f"{model.__name__} has no primary key, so its entries could not name the "
            "row they are about; give the table a primary key"
        )
    # mapper.columns, unlike column_attrs, does not configure the mappers, so
    # @track works on a model whose relationships name classes defined later.
    column_attrs = {key: col for key, col in mapper.columns.items() if isinstance(col, Column)}
    exclude, redact = set(exclude), set(redact)
    for name in (*exclude, *redact, *([tenant] if tenant else [])):
        if name not in column_attrs:
            raise ConfigurationError(
                f"{model.__name__} has no column attribute {name!r}; "
                f"known columns: {', '.join(sorted(column_attrs))}"
            )
    columns = tuple((key, col.name) for key, col in column_attrs.items() if key not in exclude)
    redacted = frozenset(
        key for key, column in columns if key in redact or redactor(key) or redactor(column)
    )
    pk_keys = tuple(mapper.get_property_by_column(c).key for c in mapper.primary_key)
    # Without active history an attribute that was expired (e.g. after a
    # commit) and then assigned has no old value; with it, SQLAlchemy loads
    # the old value first, so the entry can show both sides.
    for key, _ in columns:
        _keep_old_values(getattr(model, key))
    # Plain str: a table name is SQLAlchemy's quoted_name, a str subclass that
    # would send every entry down the writer's slow encoding path.
    table_name = str(getattr(mapper.local_table, "name", None) or model.__name__.lower())
    return TrackSpec(
        mapper=mapper,
        feature=feature or table_name,
        entity_type=entity_type or table_name,
        columns=columns,
        pk_keys=pk_keys,
        redacted=redacted,
        tenant_key=tenant,
        redactor=redactor,
    )


class OrmCapture:
    """The tracked models of one Auditor and the session hooks that watch them."""

    def __init__(self, writer: Writer) -> None:
        self.writer = writer
        self.specs: dict[type[Any], TrackSpec] = {}
        self._lookup: dict[type[Any], TrackSpec | None] = {}
        self._instrumented: weakref.WeakSet[Any] = weakref.WeakSet()

    def add(self, spec: TrackSpec) -> None:
        self.specs[spec.mapper.class_] = spec
        self._lookup.clear()

    def spec_for(self, cls: type[Any]) -> TrackSpec | None:
        try:
            return self._lookup[cls]
        except KeyError:
            found = next((self.specs[c] for c in cls.__mro__ if c in self.specs), None)
            self._lookup[cls] = found
            return found

    # -- installation -------------------------------------------------------

    def instrument(self, target: Any) -> Any:
        """Install the hooks on a session factory, class or instance; returns ``target``."""
        listen_on = self._listen_target(target)
        # Our own record, not event.contains(): SQLAlchemy keys that on id(),
        # which a new class can reuse once an old one is garbage-collected.
        if listen_on in self._instrumented:
            return target
        for name, fn in (
            ("before_flush", self.before_flush),
            ("after_flush", self.after_flush),
            ("do_orm_execute", self.do_orm_execute),
            ("before_commit", self.before_commit),
            ("after_commit", self.after_commit),
            ("after_soft_rollback", self.after_soft_rollback),
            ("after_transaction_end", self.after_transaction_end),
        ):
            event.listen(listen_on, name, fn)
        self._instrumented.add(listen_on)
        return target

    @staticmethod
    def _listen_target(target: Any) -> Any:
        if is_async(target, "AsyncSession"):
            return target.sync_session
        if is_async(target, "async_sessionmaker"):
            # Give this factory its own sync Session subclass so the hooks
            # watch its sessions only, not every Session in the process.
            base = target.kw.get("sync_session_class", Session)
            if getattr(base, "_whodid_audited", False):
                return base
            audited = type(f"Audited{base.__name__}", (base,), {"_whodid_audited": True})
            target.kw["sync_session_class"] = audited
            return audited
        asyncio = sys.modules.get("sqlalchemy.ext.asyncio")
        if asyncio and isinstance(target, type) and issubclass(target, asyncio.AsyncSession):
            raise ConfigurationError(
                "instrument() cannot watch the AsyncSession class itself; pass your "
                "async_sessionmaker(...) or an AsyncSession instance"
            )
        if isinstance(target, sessionmaker | scoped_session | Session) or (
            isinstance(target, type) and issubclass(target, Session)
        ):
            return target
        raise ConfigurationError(
            f"instrument() takes a sessionmaker, scoped_session, Session class or "
            f"instance, or their async versions; got {target!r}"
        )

    # -- hooks --------------------------------------------------------------

    def before_flush(self, session: Session, flush_context: UOWTransaction, _: Any) -> None:
        for obj in session.deleted:
            spec = self.spec_for(type(obj))
            if spec is None:
                continue
            # Not state.unloaded: that set spans every attribute of the class.
            data = inspect(obj).dict
            for key, _ in spec.columns:
                if key not in data:
                    # Loads it (and every other expired column, in one SELECT);
                    # the row is gone after the flush.
                    getattr(obj, key)

    def after_flush(self, session: Session, flush_context: UOWTransaction) -> None:
        changes = self.changes(flush_context)
        if not changes:
            return
        connection = session.connection()
        rows = self.writer.rows(changes)
        if session.info.get(_COMMITTING):
            if self.writer.write_with_commit(connection, rows):
                session.info[_HELD_ON] = connection
        else:
            self.writer.write(connection, rows)

    def changes(self, flush_context: UOWTransaction) -> list[Change]:
        """The changes of tracked objects that ``flush_context`` has just written."""
        changes: list[Change] = []
        for state, (isdelete, listonly) in list(flush_context.states.items()):
            if listonly:
                continue
            spec = self.spec_for(state.class_)
            if spec is None:
                continue
            if isdelete:
                before = spec.values(state)
                changes.append(spec.change("delete", state.dict, before=before))
            elif state.key is None:
                after = spec.values(state)
                changes.append(spec.change("create", state.dict, after=after))
            else:
                change = self._update(spec, state)
                if change is not None:
                    changes.append(change)
        return changes

    # The flush inside commit() is the last statement before the COMMIT: its
    # entries can travel with the COMMIT itself (drivers/send_with_commit.py).

    def before_commit(self, session: Session) -> None:
        if not session.in_nested_transaction():
            session.info[_COMMITTING] = True

    def after_commit(self, session: Session) -> None:
        session.info.pop(_COMMITTING, None)
        connection = session.info.pop(_HELD_ON, None)
        if connection is not None:
            # Normally the COMMIT took the rows already (a no-op here). Still
            # held: the session is joined to an outer transaction, which the
            # entries now join too.
            self.writer.write_held(connection)

    def after_soft_rollback(self, session: Session, previous_transaction: Any) -> None:
        self._forget(session)

    def after_transaction_end(self, session: Session, transaction: Any) -> None:
        if transaction.parent is None:
            self._forget(session)

    def _forget(self, session: Session) -> None:
        session.info.pop(_COMMITTING, None)
        connection = session.info.pop(_HELD_ON, None)
        if connection is not None:
            self.writer.drop_held(connection)

    def _update(self, spec: TrackSpec, state: InstanceState[Any]) -> Change | None:
        modified = state.committed_state
        if not modified:
            return None
        pairs = []
        for key, _ in spec.columns:
            if key not in modified:
                continue
            history = state.get_history(key, PASSIVE_NO_INITIALIZE)
            if history.added or history.deleted:
                old = history.deleted[0] if history.deleted else _MISSING
                pairs.append((key, old, history.added[0] if history.added else None))
        return spec.updated(state.dict, pairs)

    def do_orm_execute(self, orm_state: ORMExecuteState) -> Any:
        # Runs for every ORM statement, the session's own SELECTs included:
        # the statement's own flags, which ORMExecuteState.is_update and
        # is_delete each re-read behind a property.
        statement = orm_state.statement
        if not (statement.is_dml and (statement.is_update or statement.is_delete)):
            return None
        if orm_state.execution_options.get(_INTERNAL):
            return None
        mapper = orm_state.bind_mapper
        spec = self.spec_for(mapper.class_) if mapper is not None else None
        if spec is None:
            return None
        return _BulkCapture(self, spec, orm_state).run()


class _BulkCapture:
    """One ORM-enabled UPDATE or DELETE statement, one entry per affected row."""

    def __init__(self, capture: OrmCapture, spec: TrackSpec, orm_state: ORMExecuteState):
        self.capture = capture
        self.spec = spec
        self.orm_state = orm_state
        # select(Model).from_statement(update(...)) wraps the DML it runs.
        statement = orm_state.statement
        self.dml: Any = getattr(statement, "element", statement)
        self.session = orm_state.session
        model = spec.mapper.class_
        self.attrs = [getattr(model, key) for key, _ in spec.columns]
        self.pk_attrs = [getattr(model, key) for key in spec.pk_keys]

    def run(self) -> Any:
        before = self._rows(self._affected_filter())
        result = self.orm_state.invoke_statement()
        if not before:
            return result
        spec = self.spec
        changes: list[Change] = []
        if self.orm_state.is_delete:
            for row in before.values():
                changes.append(spec.change("delete", row, before=self._json(row)))
        else:
            after = self._rows(self._pk_filter(list(before)))
            for pk, old_row in before.items():
                new_row = after.get(pk)
                if new_row is None:
                    continue
                change = self._diff(old_row, new_row)
                if change is not None:
                    changes.append(change)
        if changes:
            writer = self.capture.writer
            writer.write(self.session.connection(), writer.rows(changes))
        return result

    def _affected_filter(self) -> Any:
        params = self.orm_state.parameters
        if self.orm_state.is_executemany and isinstance(params, Sequence):
            # ORM bulk UPDATE by primary key: each parameter dict names a row.
            keys = [tuple(p[k] for k in self.spec.pk_keys) for p in params]
            return self._pk_filter(keys)
        return self.dml.whereclause

    def _pk_filter(self, keys: list[tuple[Any, ...]]) -> Any:
        if len(self.pk_attrs) == 1:
            return self.pk_attrs[0].in_([k[0] for k in keys])
        return tuple_(*self.pk_attrs).in_(keys)

    def _rows(self, where: Any) -> dict[tuple[Any, ...], dict[str, Any]]:
        stmt = select(*self.attrs)
        if where is not None:
            stmt = stmt.where(where)
        result = self.session.execute(
            stmt, execution_options={_INTERNAL: True, "populate_existing": False}
        )
        rows = {}
        for row in result.mappings():
            data = dict(row)
            rows[tuple(data[k] for k in self.spec.pk_keys)] = data
        return rows

    def _json(self, row: dict[str, Any]) -> dict[str, Any]:
        return {
            key: REDACTED if key in self.spec.redacted else self.spec.redactor.scrub(to_json(value))
            for key, value in row.items()
        }

    def _diff(self, old_row: dict[str, Any], new_row: dict[str, Any]) -> Change | None:
        pairs = [(key, old_row[key], new_row[key]) for key, _ in self.spec.columns]
        return self.spec.updated(new_row, pairs)
