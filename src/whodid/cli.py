"""The ``whodid`` command line: set up, read, export and demo the audit log.

Errors a person can fix (bad URL, bad filter, unknown id) end with a message
and exit code 1 (2 for usage errors, from click), never a traceback.
"""

from __future__ import annotations

import getpass
import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import click
from sqlalchemy.exc import SQLAlchemyError

from whodid.auditor import Auditor
from whodid.context import Actor
from whodid.demo import DEFAULT_DB
from whodid.entry import iso
from whodid.errors import InvalidQuery
from whodid.query import ACTOR_TYPES, ANY_TENANT, Filters

db_option = click.option(
    "--db",
    "db_url",
    default=DEFAULT_DB,
    show_default=True,
    envvar="WHODID_DB",
    help="SQLAlchemy database URL of the audited app (env: WHODID_DB).",
)


@click.group()
@click.version_option(package_name="whodid")
def main() -> None:
    """whodid: who did what, when, from where."""


@main.command()
@db_option
def init(db_url: str) -> None:
    """Create the audit table, its indexes and append-only triggers."""
    try:
        Auditor(db_url).create_all()
    except Exception as exc:  # a person needs the cause, not a traceback
        raise click.ClickException(f"could not set up {db_url}: {exc}") from exc
    click.echo(f"whodid_entries ready in {db_url}")


def filter_options(fn: Any) -> Any:
    """The query filters, shared by list and export."""
    options = [
        click.option("--tenant", "tenant_id", help="Only this tenant's entries."),
        click.option("--action", multiple=True, help="Dotted action; repeat for several."),
        click.option("--feature"),
        click.option("--operation"),
        click.option("--actor-type", type=click.Choice(ACTOR_TYPES)),
        click.option("--actor-id"),
        click.option("--entity-type"),
        click.option("--entity-id", help="Resource id, e.g. pay_123."),
        click.option("--request-id"),
        click.option("--ip"),
        click.option("-q", "--search", "q", help="Free text over every detail field."),
        click.option("--since", "start", help="ISO 8601 start, e.g. 2026-03-01."),
        click.option("--until", "end", help="ISO 8601 end."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def _filters(given: dict[str, Any]) -> dict[str, Any]:
    filters = {k: v for k, v in given.items() if v not in (None, ())}
    if "tenant_id" not in filters:
        filters["tenant_id"] = ANY_TENANT
    return filters


def _auditor(db_url: str) -> Auditor:
    try:
        return Auditor(db_url)
    except Exception as exc:
        raise click.ClickException(f"cannot open {db_url}: {exc}") from exc


@contextmanager
def _friendly(db_url: str) -> Iterator[None]:
    try:
        yield
    except InvalidQuery as exc:
        raise click.ClickException(str(exc)) from exc
    except SQLAlchemyError as exc:
        raise click.ClickException(
            f"database error on {db_url}: {getattr(exc, 'orig', None) or exc}"
            ". Is it the right URL, and has `whodid init` run?"
        ) from exc


@main.command("list")
@db_option
@filter_options
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 200))
@click.option("--cursor", help="next_cursor of the previous page.")
@click.option("--json", "as_json", is_flag=True, help="Print the page as JSON.")
def list_(db_url: str, limit: int, cursor: str | None, as_json: bool, **given: Any) -> None:
    """List entries, newest first."""
    with _friendly(db_url):
        page = _auditor(db_url).list(limit=limit, cursor=cursor, **_filters(given))
    if as_json:
        data = {"data": [e.to_dict() for e in page.entries], "next_cursor": page.next_cursor}
        click.echo(json.dumps(data, indent=2, ensure_ascii=False))
        return
    if not page.entries:
        click.echo("No events yet." if not given_any(given) else "No entries match.")
        return
    rows = [
        (
            iso(e.occurred_at)[:19] + "Z",
            e.action,
            f"{e.actor_type}:{e.actor_label or e.actor_id or '-'}",
            f"{e.entity_type or '-'}/{e.entity_id or '-'}",
            e.ip or "-",
            e.id,
        )
        for e in page.entries
    ]
    header = ("WHEN (UTC)", "EVENT", "ACTOR", "AGGREGATE", "IP", "ID")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    if page.next_cursor:
        click.echo(f"\nmore: --cursor {page.next_cursor}")


def given_any(given: dict[str, Any]) -> bool:
    return any(v not in (None, ()) for v in given.values())


@main.command()
@db_option
@click.argument("entry_id")
@click.option("--tenant", "tenant_id", help="Refuse entries of other tenants.")
def show(db_url: str, entry_id: str, tenant_id: str | None) -> None:
    """Show one entry with its related entries, as JSON."""
    auditor = _auditor(db_url)
    tenant = ANY_TENANT if tenant_id is None else tenant_id
    with _friendly(db_url):
        entry = auditor.get(entry_id, tenant_id=tenant)
        if entry is None:
            raise click.ClickException(f"no entry {entry_id!r} in {db_url}")
        related = auditor.related(entry_id, tenant_id=tenant)
    data = {**entry.to_dict(), "related": [e.to_dict() for e in related]}
    click.echo(json.dumps(data, indent=2, ensure_ascii=False))


@main.command()
@db_option
@filter_options
@click.option(
    "--format", "fmt", type=click.Choice(["csv", "ndjson"]), default="csv", show_default=True
)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, writable=True),
    help="File to write (default: audit-log.<format>); - for stdout.",
)
def export(db_url: str, fmt: str, output: str | None, **given: Any) -> None:
    """Export every matching entry (no date limit), UTC timestamps."""
    auditor = _auditor(db_url)
    filters = _filters(given)
    path = output or f"audit-log.{fmt}"
    show_progress = path != "-" and sys.stderr.isatty()
    with _friendly(db_url):
        spec = Filters.build(**filters)  # refuse bad filters before creating the file
        total = auditor.count(**filters) if show_progress else None
        stream = click.get_binary_stream("stdout") if path == "-" else open(path, "wb")  # noqa: SIM115
        try:
            with click.progressbar(
                length=total or 0, label="exporting", file=sys.stderr, hidden=not show_progress
            ) as bar:
                count = auditor.export(stream, fmt, progress=bar.update, **filters)  # type: ignore[arg-type]
        finally:
            if path != "-":
                stream.close()
        # Taking a copy of the evidence is itself an action auditors ask about.
        auditor.record(
            "audit_log.export",
            actor=Actor.system("whodid-cli", label=getpass.getuser()),
            tenant_id=None if spec.tenant_id is ANY_TENANT else spec.tenant_id,
            metadata={"format": fmt, "filters": spec.as_dict(), "rows": count, "file": path},
        )
    if path != "-":
        click.echo(f"{count} entries written to {path}", err=True)


@main.command()
@db_option
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
def demo(db_url: str, host: str, port: int) -> None:
    """Run the example payments app with sample activity on embedded SQLite."""
    try:
        import uvicorn
    except ImportError:
        raise click.ClickException("the demo needs uvicorn: pip install 'whodid[demo]'") from None
    from whodid.demo import create_app

    click.echo(f"whodid demo on http://{host}:{port}/  (database: {db_url})")
    click.echo(f"recent entries: curl -b session=usr_ada http://{host}:{port}/audit/recent")
    uvicorn.run(create_app(db_url), host=host, port=port, log_level="warning")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
