"""The ``whodid`` command line: set up the table and run the demo."""

from __future__ import annotations

import sys

import click

from whodid.demo import DEFAULT_DB

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
    from whodid.auditor import Auditor

    try:
        Auditor(db_url).create_all()
    except Exception as exc:  # a person needs the cause, not a traceback
        raise click.ClickException(f"could not set up {db_url}: {exc}") from exc
    click.echo(f"whodid_entries ready in {db_url}")


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
