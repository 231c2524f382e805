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
from pathlib import Path
from typing import Any

import click
import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from whodid.auditor import Auditor
from whodid.context import Actor
from whodid.demo import DEFAULT_DB
from whodid.entry.fields import iso
from whodid.errors import WhodidError
from whodid.store.query import ACTOR_TYPES, Filters
from whodid.store.schema import TABLE
from whodid.tenancy import ALL_TENANTS

db_option = click.option(
    "--db",
    "db_url",
    default=DEFAULT_DB,
    show_default=True,
    envvar="WHODID_DB",
    help="SQLAlchemy database URL of the audited app (env: WHODID_DB).",
)


key_option = click.option(
    "--key",
    "key",
    envvar="WHODID_SIGNING_KEY",
    help="Ed25519 private key: PEM file path or PEM text (env: WHODID_SIGNING_KEY).",
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


@main.command()
@db_option
def upgrade(db_url: str) -> None:
    """Bring a log made by an earlier whodid up to this version (keeps every entry)."""
    auditor = _auditor(db_url)
    with _friendly(db_url):
        done = auditor.upgrade()
    for line in done:
        click.echo(line)
    click.echo(f"{TABLE} is up to date in {db_url}; run `whodid verify` to check it")


tenant_options = [
    click.option("--tenant", "tenant_id", help="This tenant's entries."),
    click.option(
        "--all-tenants", "all_tenants", is_flag=True, help="Every tenant's entries (say it)."
    ),
]


def _with_tenant(fn: Any) -> Any:
    for option in reversed(tenant_options):
        fn = option(fn)
    return fn


def _tenant(given: dict[str, Any]) -> Any:
    """The tenant a command reads: --tenant T or --all-tenants, exactly one."""
    tenant_id, every = given.pop("tenant_id", None), given.pop("all_tenants", False)
    if (tenant_id is None) == (not every):
        raise click.UsageError("name whose entries: --tenant TENANT, or --all-tenants")
    return ALL_TENANTS if every else tenant_id


def filter_options(fn: Any) -> Any:
    """The query filters, shared by list and export."""
    options = [
        *tenant_options,
        click.option("--action", multiple=True, help="Dotted action; repeat for several."),
        click.option("--feature"),
        click.option("--operation"),
        click.option("--actor-type", type=click.Choice(ACTOR_TYPES)),
        click.option("--actor-id"),
        click.option("--entity-type"),
        click.option("--entity-id", help="Resource id, e.g. pay_123."),
        click.option("--request-id"),
        click.option("--ip"),
        click.option(
            "-q",
            "--search",
            "q",
            help="Free text over every detail field, before and after values included.",
        ),
        click.option("--since", "start", help="ISO 8601 start, e.g. 2026-03-01 (UTC)."),
        click.option(
            "--until",
            "end",
            help="ISO 8601 end; a date alone includes that whole UTC day, e.g. 2026-03-31.",
        ),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


# Filters field -> option, for error messages in the words of the command line.
_LABELS = {
    "tenant_id": "--tenant",
    "actor_type": "--actor-type",
    "actor_id": "--actor-id",
    "entity_type": "--entity-type",
    "entity_id": "--entity-id",
    "request_id": "--request-id",
    "action": "--action",
    "ip": "--ip",
    "q": "--search",
    "start": "--since",
    "end": "--until",
}


def _filters(given: dict[str, Any]) -> dict[str, Any]:
    tenant = _tenant(given)
    filters = {k: v for k, v in given.items() if v not in (None, ())}
    filters["tenant_id"] = tenant
    return filters


def _auditor(db_url: str, **options: Any) -> Auditor:
    """The Auditor of an audit log that exists at ``db_url``; never creates one.

    SQLite creates a missing file on connect, so a mistyped or relative path
    would otherwise become an empty database and an empty answer.
    """
    try:
        url = make_url(db_url)
    except ArgumentError:
        raise click.ClickException(
            f"--db {db_url!r} is not a database URL, e.g. sqlite:///app.db or "
            "postgresql+psycopg://app@localhost/app"
        ) from None
    init = f"`whodid init --db {db_url}` creates one"
    if url.get_backend_name() == "sqlite":
        database = url.database or ""
        path = database.removeprefix("file:").partition("?")[0]
        if not path or path == ":memory:" or url.query.get("mode") == "memory":
            raise click.ClickException(f"no audit log at {db_url}: it is an in-memory database")
        if not Path(path).is_file():
            raise click.ClickException(
                f"no audit log at {db_url}: {Path(path).resolve()} does not exist. Point --db "
                f"(or WHODID_DB) at the audited app's database; {init}"
            )
    auditor = _configured(db_url)
    assert auditor.engine is not None
    with _friendly(db_url), auditor.engine.connect() as conn:
        found = sa.inspect(conn).has_table(TABLE)
    if not found:
        raise click.ClickException(
            f"no audit log in {db_url}: the database has no {TABLE} table; {init}"
        )
    return _configured(db_url, **options) if options else auditor


def _configured(db_url: str, **options: Any) -> Auditor:
    try:
        return Auditor(db_url, **options)
    except WhodidError as exc:
        raise click.ClickException(str(exc)) from exc
    except Exception as exc:
        raise click.ClickException(f"cannot open {db_url}: {exc}") from exc


@contextmanager
def _friendly(db_url: str) -> Iterator[None]:
    try:
        yield
    except WhodidError as exc:
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
        auditor = _auditor(db_url)
        filters = _filters(given)
        page = auditor.list(limit=limit, cursor=cursor, labels=_LABELS, **filters)
    if as_json:
        data = {"data": [e.to_dict() for e in page.entries], "next_cursor": page.next_cursor}
        click.echo(json.dumps(data, indent=2, ensure_ascii=False))
        return
    if not page.entries:
        narrowed = any(v is not ALL_TENANTS for v in filters.values())
        click.echo("No entries match." if narrowed else "No events yet.")
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


@main.command()
@db_option
@click.argument("entry_id")
@_with_tenant
def show(db_url: str, entry_id: str, **given: Any) -> None:
    """Show one entry with its related entries, as JSON."""
    auditor = _auditor(db_url)
    tenant = _tenant(given)
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
@click.option(
    "--proof",
    is_flag=True,
    help="Also write OUTPUT.proof.json, which `whodid check-proof` verifies offline.",
)
@key_option
def export(
    db_url: str, fmt: str, output: str | None, proof: bool, key: str | None, **given: Any
) -> None:
    """Export every matching entry (no date limit), UTC timestamps."""
    auditor = _auditor(db_url, **({"signing_key": key} if key else {}))
    filters = _filters(given)
    path = output or f"audit-log.{fmt}"
    show_progress = path != "-" and sys.stderr.isatty()
    with _friendly(db_url):
        Filters.build(labels=_LABELS, **filters)  # refuse bad filters before the file
        total = auditor.count(**filters) if show_progress else None
        stream = sys.stdout.buffer if path == "-" else open(path, "wb")  # noqa: SIM115
        # Who took the copy: auditors ask; the export records its start and end.
        actor = Actor.system("whodid-cli", label=getpass.getuser())
        try:
            with (
                click.progressbar(
                    length=total or 0, label="exporting", file=sys.stderr, hidden=not show_progress
                ) as bar,
                _proof_file(path, proof) as bundle,
            ):
                count = auditor.export(
                    stream,
                    fmt,  # type: ignore[arg-type]
                    progress=bar.update,
                    actor=actor,
                    proof=bundle,
                    **filters,
                )
        finally:
            if path != "-":
                stream.close()
    if path != "-":
        click.echo(f"{count} entries written to {path}", err=True)


@contextmanager
def _proof_file(path: str, wanted: bool) -> Iterator[Any]:
    if not wanted:
        yield None
        return
    if path == "-":
        raise click.UsageError("--proof needs -o FILE: the bundle is written beside it")
    with open(f"{path}.proof.json", "w", encoding="utf-8") as bundle:
        yield bundle
    click.echo(f"proof bundle written to {path}.proof.json", err=True)


@main.command("check-proof")
@click.argument("bundle", type=click.Path(exists=True, dir_okay=False))
@click.argument("export_file", type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--public-key",
    "public_keys",
    multiple=True,
    required=True,
    help="Public key PEM file; repeat while keys rotate.",
)
def check_proof(bundle: str, export_file: str, public_keys: tuple[str, ...]) -> None:
    """Check an export against its proof bundle, offline, with the public key(s) alone."""
    from whodid.integrity import bundle as bundles
    from whodid.integrity.keys import key_ring, load_public_key

    try:
        keys = key_ring([load_public_key(k) for k in public_keys])
        data = json.loads(Path(bundle).read_text(encoding="utf-8"))
    except (WhodidError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    problems = bundles.check(data, Path(export_file).read_bytes(), keys)
    for problem in problems:
        click.echo(f"PROBLEM  {problem}")
    proven = sum(1 for e in data.get("entries", []) if e.get("proof"))
    unproven = len(data.get("entries", [])) - proven
    state = "OK" if not problems else f"{len(problems)} PROBLEM(S)"
    click.echo(f"{state}: {proven} rows proven in the signed log, {unproven} not sealed yet")
    sys.exit(1 if problems else 0)


@main.command()
@click.argument("path", type=click.Path(dir_okay=False))
def keygen(path: str) -> None:
    """Create an Ed25519 key pair: PATH (private, mode 600) and PATH.pub."""
    from whodid.integrity.verify import generate_key_pair

    try:
        private, public = generate_key_pair(path)
    except FileExistsError:
        raise click.ClickException(f"{path} exists; refusing to overwrite a key") from None
    click.echo(f"private key: {private} (keep it outside the database)\npublic key:  {public}")


@main.command()
@db_option
@key_option
@click.option(
    "--head",
    "head_path",
    type=click.Path(dir_okay=False),
    help="Write the signed head here (keep it outside the database).",
)
def seal(db_url: str, key: str | None, head_path: str | None) -> None:
    """Sign a checkpoint over the entries not sealed yet."""
    if not key:
        raise click.ClickException("seal needs --key or WHODID_SIGNING_KEY (see whodid keygen)")
    with _friendly(db_url):
        auditor = _auditor(db_url, signing_key=key)
        checkpoint = auditor.seal()
    if checkpoint is None:
        click.echo("nothing new to seal")
        return
    if head_path:
        with open(head_path, "w") as f:
            json.dump(checkpoint.head(), f, indent=2)
    click.echo(
        f"checkpoint {checkpoint.number}: {checkpoint.count} entries, root {checkpoint.root[:16]}…"
    )


@main.command()
@db_option
def index(db_url: str) -> None:
    """Move newly written entries into the search index (PostgreSQL; run from cron)."""
    with _friendly(db_url):
        count = _auditor(db_url).index_search()
    click.echo(f"indexed {count} new entries" if count else "search index up to date")


@main.command()
@db_option
@key_option
@click.option(
    "--public-key",
    "public_keys",
    multiple=True,
    help="Public key PEM file (default: the half of --key); repeat while keys rotate.",
)
@click.option(
    "--head",
    "head_path",
    type=click.Path(exists=True, dir_okay=False),
    help="A signed head written by `whodid seal --head`.",
)
@click.option("--json", "as_json", is_flag=True, help="Print a machine-readable report.")
def verify(
    db_url: str,
    key: str | None,
    public_keys: tuple[str, ...],
    head_path: str | None,
    as_json: bool,
) -> None:
    """Check every entry and checkpoint; exit 0 only if nothing was tampered with."""
    if not (key or public_keys):
        raise click.ClickException("verify needs --public-key (or --key)")
    head = json.loads(Path(head_path).read_text()) if head_path else None
    with _friendly(db_url):
        auditor = _auditor(db_url, signing_key=key)
        shown = sys.stderr.isatty() and not as_json
        total = auditor.count(tenant_id=ALL_TENANTS) if shown else 0
        with click.progressbar(
            length=total, label="verifying", file=sys.stderr, hidden=not total
        ) as bar:
            keys = list(public_keys) or None
            report = auditor.verify(keys, head=head, progress=bar.update)
    if as_json:
        click.echo(json.dumps(report.as_dict(), indent=2))
    else:
        for problem in report.problems:
            click.echo(f"{problem.kind.upper():18} {problem.message}")
        for purge in report.purged_ranges:
            who = purge.get("tenant_id") or "all tenants"
            click.echo(f"purged: {purge['count']} entries of {who} before {purge['before']}")
        state = "OK" if report.ok else f"{len(report.problems)} PROBLEM(S)"
        click.echo(
            f"{state}: {report.entries} entries, {report.sealed} sealed, "
            f"{report.unsealed} not sealed yet, {report.checkpoints} checkpoints"
        )
    sys.exit(0 if report.ok else 1)


@main.command()
@db_option
@key_option
@click.option(
    "--older-than", "older_than", required=True, help="Age past which entries go, e.g. 365d, 3y."
)
@_with_tenant
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def purge(db_url: str, key: str | None, older_than: str, yes: bool, **given: Any) -> None:
    """Delete entries past retention (signed and recorded as audit_log.purge)."""
    from datetime import UTC, datetime

    from whodid.integrity.retention import parse_duration

    with _friendly(db_url):
        try:
            age = parse_duration(older_than)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--older-than") from None
        if age is None:
            raise click.BadParameter("needs a finite age", param_hint="--older-than")
        before = datetime.now(UTC) - age
        auditor = _auditor(db_url, signing_key=key)
        tenant_id = _tenant(given)
        n = auditor.count(end=before, tenant_id=tenant_id)
        if not n:
            click.echo("nothing to purge")
            return
        tenants = len(auditor.tenants(end=before, tenant_id=tenant_id))
        if not yes:
            click.confirm(
                f"delete {n} entries of {tenants} tenant{'s' if tenants != 1 else ''} "
                f"older than {iso(before)}? This cannot be undone",
                abort=True,
            )
        results = auditor.purge(before, tenant_id=tenant_id)
    click.echo(
        f"purged {sum(r.rows for r in results)} entries older than {iso(before)}"
        + ("" if key else " (no --key: the purge is not signed)")
    )


@main.command()
@db_option
@click.option("--tenant", "tenant_id", required=True, help="The workspace whose log is served.")
@click.option(
    "--role",
    default="owner",
    show_default=True,
    type=click.Choice(["owner", "admin", "member"]),
    help="The role the tools read as.",
)
@click.option("--http", "over_http", is_flag=True, help="Streamable HTTP at /mcp, not stdio.")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8765, show_default=True, type=int)
@click.option(
    "--token",
    envvar="WHODID_MCP_TOKEN",
    help="Bearer token HTTP clients must send (env: WHODID_MCP_TOKEN); it maps to "
    "--tenant and --role.",
)
def mcp(
    db_url: str,
    tenant_id: str,
    role: str,
    over_http: bool,
    host: str,
    port: int,
    token: str | None,
) -> None:
    """Serve the log to agents over the Model Context Protocol (stdio, or --http)."""
    try:
        from whodid.mcp_server import Reader, bearer_app, build
    except ImportError as exc:
        raise click.ClickException(str(exc)) from exc
    auditor = _auditor(db_url)
    transport = "http" if over_http else "stdio"
    reader = Reader(tenant_id, role, Actor.system("whodid-mcp", label=transport))
    if not over_http:
        build(auditor, default=reader).run("stdio")
        return
    if not token:
        raise click.UsageError("--http needs --token (or WHODID_MCP_TOKEN)")
    try:
        import uvicorn
    except ImportError:
        raise click.ClickException("--http needs uvicorn: pip install 'whodid[mcp]'") from None
    app = bearer_app(build(auditor).streamable_http_app(host=host), token, reader)
    click.echo(
        f"whodid MCP on http://{host}:{port}/mcp (tenant {tenant_id}, role {role})", err=True
    )
    uvicorn.run(app, host=host, port=port, log_level="warning")


@main.command()
@db_option
@click.option(
    "--to",
    "to",
    required=True,
    help="https://host/path (signed NDJSON batches), syslog+tls://host:6514, "
    "syslog+tcp://host:601, a file path, or - for stdout.",
)
@click.option("--name", help="The stream's name, under which its position is kept [default: --to].")
@click.option(
    "--secret",
    "secrets",
    multiple=True,
    envvar="WHODID_STREAM_SECRET",
    help="HMAC secret of an HTTPS destination; twice while rotating "
    "(env: WHODID_STREAM_SECRET, space-separated; keeps it out of `ps`).",
)
@click.option(
    "--ca", type=click.Path(exists=True, dir_okay=False), help="CA bundle (PEM) to trust."
)
@click.option("--tenant", "tenants", multiple=True, help="Ship only this tenant's entries.")
@click.option("--action-prefix", "action_prefixes", multiple=True, help="e.g. payment.")
@click.option("--actor-type", "actor_types", multiple=True, type=click.Choice(sorted(ACTOR_TYPES)))
@click.option(
    "--start",
    type=click.Choice(["beginning", "now"]),
    default="beginning",
    show_default=True,
    help="Where a stream never run before begins.",
)
@click.option("--batch-size", default=1000, show_default=True, type=click.IntRange(1, 100_000))
@click.option("--interval", default=0.2, show_default=True, type=click.FloatRange(0.01))
@click.option("--max-attempts", default=10, show_default=True, type=click.IntRange(1))
@click.option(
    "--dead-letter",
    type=click.Path(dir_okay=False),
    help="File for batches that failed --max-attempts times (default: retry until delivered).",
)
@click.option(
    "--max-bytes", default=0, type=click.IntRange(0), help="Rotate a file past this size."
)
@click.option("--backups", default=5, show_default=True, type=click.IntRange(0))
@click.option("--once", is_flag=True, help="Ship what is committed now, then exit.")
def stream(
    db_url: str,
    to: str,
    secrets: tuple[str, ...],
    once: bool,
    batch_size: int,
    interval: float,
    max_attempts: int,
    dead_letter: str | None,
    **options: Any,
) -> None:
    """Ship every committed entry to a SIEM, a collector or a file, resuming where it stopped.

    Runs until interrupted (SIGINT or SIGTERM end it after the batch in hand).
    """
    import signal

    auditor = _auditor(db_url)
    # WHODID_STREAM_SECRET="new old" arrives as one value: split it.
    secrets = tuple(part for secret in secrets for part in secret.split())
    with _friendly(db_url):
        relay = auditor.stream(
            to,
            secrets=secrets,
            batch_size=batch_size,
            interval=interval,
            max_attempts=max_attempts,
            dead_letter=dead_letter,
            **options,
        )
        if once:
            try:
                count = relay.drain()
            finally:
                relay.close()
            click.echo(f"read {count} entries, delivered {relay.delivered}", err=True)
            return
        for number in (signal.SIGINT, signal.SIGTERM):
            signal.signal(number, lambda *_: relay.stop(timeout=0))
        shown = make_url(db_url).render_as_string(hide_password=True)
        click.echo(f"streaming {shown} to {relay.destination.name} as {relay.name!r}", err=True)
        relay.run()


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
    click.echo(f"dashboard: http://{host}:{port}/signin/usr_ada (owner of org_acme)")
    click.echo(f"JSON: curl -b session=usr_ada http://{host}:{port}/audit/audit-logs")
    uvicorn.run(create_app(db_url), host=host, port=port, log_level="warning")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
