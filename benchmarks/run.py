"""whodid benchmark suite: whodid against its peers, in one run, on this machine.

    python benchmarks/run.py                 # everything (~15 min), writes benchmarks/RESULTS.md
    python benchmarks/run.py --smoke         # tiny counts, a few seconds; for the test suite
    python benchmarks/run.py --pg-url URL    # use that PostgreSQL server instead of a throwaway one
    python benchmarks/run.py --only asgi,orm # some workloads only

See benchmarks/README.md for what each workload measures and how.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.metadata
import json
import os
import platform
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from common import Section  # noqa: E402

WORKLOADS = ("asgi", "load", "orm", "query")
PACKAGES = (
    "whodid",
    "SQLAlchemy",
    "starlette",
    "uvicorn",
    "uvloop",
    "httptools",
    "psycopg",
    "psycopg-binary",
    "SQLAlchemy-Continuum",
    "SQLAlchemy-Utils",
    "PostgreSQL-Audit",
    "asgi-correlation-id",
    "starlette-context",
    "cryptography",
)


class Sizes:
    def __init__(self, smoke: bool, entries: int | None) -> None:
        self.smoke = smoke
        if smoke:
            self.asgi_rounds, self.asgi_requests = 2, 200
            self.load_rounds, self.load_seconds, self.load_count = 1, 1, 300
            self.crud_rounds, self.crud_cycles = 1, 3
            self.bulk_rounds, self.bulk_rows = 1, 100
            self.entries = entries or 2_000
            self.list_rounds, self.search_rounds = 2, 2
            self.export_rounds, self.verify_rounds = 1, 1
        else:
            self.asgi_rounds, self.asgi_requests = 21, 5_000
            self.load_rounds, self.load_seconds, self.load_count = 12, 2, 40_000
            self.crud_rounds, self.crud_cycles = 9, 100
            self.bulk_rounds, self.bulk_rows = 5, 10_000
            self.entries = entries or 1_000_000
            self.list_rounds, self.search_rounds = 15, 9
            self.export_rounds, self.verify_rounds = 3, 3


# -- facts about the run ------------------------------------------------------------


def machine() -> dict[str, str]:
    facts = {"platform": platform.platform(), "python": sys.version.split()[0]}
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
        models = [
            line.split(":", 1)[1].strip()
            for line in cpuinfo.splitlines()
            if line.startswith("model name")
        ]
        if models:
            facts["cpu"] = models[0]
        mem = next(
            line
            for line in Path("/proc/meminfo").read_text().splitlines()
            if line.startswith("MemTotal")
        )
        facts["memory"] = f"{int(mem.split()[1]) / 1024 / 1024:.1f} GiB"
    except (OSError, StopIteration):
        pass
    facts["cpus"] = str(
        len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    )
    return facts


def versions() -> dict[str, str]:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "not installed"
    out["SQLite (library)"] = sqlite3.sqlite_version
    wrk = shutil.which("wrk")
    if wrk:
        text = subprocess.run([wrk, "-v"], capture_output=True, text=True).stdout
        out["wrk"] = text.split()[1] if len(text.split()) > 1 else "installed"
    else:
        out["wrk"] = "not installed"
    return out


def source_digest() -> str:
    """Which whodid code ran: SHA-256 over src/whodid (no VCS needed), and its newest file."""
    import hashlib

    src = HERE.parent / "src" / "whodid"
    files = sorted(p for p in src.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
    if not files:
        return "n/a"
    h = hashlib.sha256()
    for p in files:
        h.update(str(p.relative_to(src)).encode() + b"\0" + p.read_bytes() + b"\0")
    newest = max(files, key=lambda p: p.stat().st_mtime)
    when = dt.datetime.fromtimestamp(newest.stat().st_mtime, dt.UTC)
    return f"{h.hexdigest()[:12]} (newest file: {newest.name}, {when:%Y-%m-%d %H:%M:%S} UTC)"


def loadavg() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


# -- the run ------------------------------------------------------------------------


class Run:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.sizes = Sizes(args.smoke, args.entries)
        self.sections: list[Section] = []
        self.errors: list[str] = []
        self.timings: dict[str, float] = {}
        self.pg_server: Any = None
        self.pg_base: str | None = None
        self.pg_facts: dict[str, str] = {}
        self.tmp = Path(tempfile.mkdtemp(prefix="whodid-bench-"))
        self.seeded: dict[str, float] = {}

    def postgres(self) -> str:
        """The maintenance-database URL of the PostgreSQL server, started on first use."""
        if self.pg_base is None:
            import pgutil

            if self.args.pg_url:
                self.pg_base = self.args.pg_url
            else:
                self.pg_server = pgutil.start_throwaway(durable=not self.args.fsync_off)
                if self.pg_server is None:
                    raise SystemExit(
                        "PostgreSQL server binaries not found: apt-get install -y postgresql, "
                        "or pass --pg-url, or --no-postgres"
                    )
                self.pg_base = self.pg_server.url()
            self.pg_facts = pgutil.server_facts(self.pg_base)
        return self.pg_base

    def dbs(self) -> list[str]:
        return ["sqlite"] + ([] if self.args.no_postgres else ["postgresql"])

    def database(self, name: str, db: str) -> str:
        if db == "sqlite":
            return f"sqlite:///{self.tmp / name}.db"
        import pgutil

        return pgutil.create_database(self.postgres(), name)

    def step(self, key: str, build: Callable[[], list[Section]]) -> None:
        print(f"[bench] {key} ...", file=sys.stderr, flush=True)
        t = time.perf_counter()
        try:
            self.sections += build()
        except Exception:
            text = traceback.format_exc()
            print(text, file=sys.stderr)
            self.errors.append(f"{key}:\n{text}")
        self.timings[key] = time.perf_counter() - t
        print(f"[bench] {key} done in {self.timings[key]:.0f} s", file=sys.stderr, flush=True)

    def run(self) -> int:
        started = dt.datetime.now(dt.UTC)
        load_before = loadavg()
        self.source_before = source_digest()
        only = set(self.args.only.split(",")) if self.args.only else set(WORKLOADS)
        z = self.sizes
        try:
            if "asgi" in only:
                import bench_asgi

                self.step("asgi", lambda: [bench_asgi.section(z.asgi_rounds, z.asgi_requests)])
            if "load" in only:
                import bench_load

                self.step(
                    "load",
                    lambda: [
                        bench_load.section(
                            z.load_rounds,
                            z.load_seconds,
                            z.load_count,
                            use_wrk=not z.smoke and not self.args.no_wrk,
                            pin=self.args.pin,
                        )
                    ],
                )
            if "orm" in only:
                import bench_orm

                def orm() -> list[Section]:
                    def urls_for(name: str) -> dict[str, str]:
                        return {db: self.database(f"bench_orm_{name}", db) for db in self.dbs()}

                    return bench_orm.sections(
                        self.dbs(),
                        urls_for,
                        z.crud_rounds,
                        z.crud_cycles,
                        z.bulk_rounds,
                        z.bulk_rows,
                    )

                self.step("orm", orm)
            if "query" in only:
                self.query()
        finally:
            if self.pg_server is not None:
                self.pg_server.stop()
            shutil.rmtree(self.tmp, ignore_errors=True)
        finished = dt.datetime.now(dt.UTC)
        self.write(started, finished, load_before, loadavg())
        return 1 if self.errors else 0

    def query(self) -> None:
        import bench_query

        z = self.sizes
        urls: dict[str, str] = {}

        def seed() -> list[Section]:
            for db in self.dbs():
                urls[db] = self.database("bench_log", db)
            took = bench_query.seed_all(urls, z.entries)
            self.seeded = took
            return []

        self.step("seed", seed)
        if len(urls) != len(self.dbs()):
            return
        self.step(
            "list+search",
            lambda: bench_query.read_sections(
                urls, z.entries, z.list_rounds, z.search_rounds, z.smoke
            ),
        )
        self.step("export", lambda: [bench_query.export_section(urls, z.entries, z.export_rounds)])
        self.step("verify", lambda: [bench_query.verify_section(urls, z.entries, z.verify_rounds)])

    # -- output -------------------------------------------------------------------

    def write(
        self, started: dt.datetime, finished: dt.datetime, load_before: str, load_after: str
    ) -> None:
        out = Path(self.args.out)
        command = "python benchmarks/run.py" + (" --smoke" if self.args.smoke else "")
        lines = [
            "# whodid benchmark results",
            "",
            f"Produced by `{command}` on {started:%Y-%m-%d %H:%M} UTC in "
            f"{(finished - started).total_seconds() / 60:.1f} min"
            + (" (**smoke run: tiny counts, figures meaningless**)" if self.args.smoke else "")
            + ". Every figure is a median over interleaved rounds (contenders in turn, the "
            "order rotated each round); ratios are to the unaudited baseline of the same run, "
            "paired round by round. See `benchmarks/README.md` for the method.",
            "",
        ]
        if source_digest() != self.source_before:
            lines += [
                f"**Warning: the whodid source changed during this run** (from "
                f"{self.source_before} to {source_digest()}): sections mix code versions. "
                "Run again on a quiet tree.",
                "",
            ]
        rows = [
            (what, target, measured, st)
            for s in self.sections
            for (what, target, measured, st) in s.targets()
        ]
        if rows:
            lines += [
                "## Targets",
                "",
                "| workload | target | measured | status |",
                "| --- | --- | --- | --- |",
            ]
            for what, target, measured, st in rows:
                cells = [what, target, measured, st]
                lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
            lines.append("")
        lines += ["## Machine and versions", "", "| what | value |", "| --- | --- |"]
        facts = machine()
        for key, value in facts.items():
            lines.append(f"| {key} | {value} |")
        lines.append(f"| load average (1/5/15 min) before / after | {load_before} / {load_after} |")
        for key, value in versions().items():
            lines.append(f"| {key} | {value} |")
        source_after = source_digest()
        lines.append(f"| whodid source (sha256 of src/whodid) | {source_after} |")
        if self.pg_facts:
            pg = self.pg_facts
            lines.append(
                f"| PostgreSQL server | {pg.get('version')} on 127.0.0.1"
                f"{' (throwaway, tests/pgserver.py)' if self.pg_server else ''} |"
            )
            lines.append(
                "| PostgreSQL settings | "
                + ", ".join(f"{k}={v}" for k, v in pg.items() if k != "version")
                + " |"
            )
        lines.append(
            "| SQLite settings | file database, journal_mode=WAL, synchronous=NORMAL, "
            "foreign_keys=ON (seeding: synchronous=OFF) |"
        )
        lines.append("")
        for section in self.sections:
            lines.append(section.markdown())
        if self.timings:
            lines += [
                "## Time taken",
                "",
                ", ".join(f"{k} {v:.0f} s" for k, v in self.timings.items()),
                "",
            ]
            if self.seeded:
                lines += [
                    "Seeding: " + ", ".join(f"{k} {v:.0f} s" for k, v in self.seeded.items()),
                    "",
                ]
        if self.errors:
            lines += ["## Errors", ""]
            for err in self.errors:
                lines += ["```", err.strip(), "```", ""]
        out.parent.mkdir(parents=True, exist_ok=True)
        # bench_stream.py writes its own section; a full run keeps it.
        kept = out.read_text() if out.exists() else ""
        begin, end = "<!-- stream benchmark: begin -->", "<!-- stream benchmark: end -->"
        if begin in kept and end in kept:
            lines += ["", kept[kept.index(begin) : kept.index(end) + len(end)], ""]
        out.write_text("\n".join(lines))
        data = {
            "smoke": self.args.smoke,
            "started": started.isoformat(),
            "finished": finished.isoformat(),
            "machine": facts,
            "versions": versions(),
            "postgresql": self.pg_facts,
            "source": source_digest(),
            "sections": [s.as_json() for s in self.sections],
            "errors": self.errors,
        }
        Path(self.args.json or out.with_suffix(".json")).write_text(
            json.dumps(data, indent=1, default=str)
        )
        print(f"[bench] wrote {out}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="tiny counts, one or two rounds: checks the suite runs, not speed",
    )
    parser.add_argument(
        "--pg-url",
        default=os.environ.get("WHODID_BENCH_PG_URL"),
        help="PostgreSQL server to use (a URL whose user may CREATE DATABASE); "
        "default: start a throwaway one like the tests do",
    )
    parser.add_argument("--no-postgres", action="store_true", help="SQLite only")
    parser.add_argument(
        "--fsync-off",
        action="store_true",
        help="throwaway PostgreSQL without fsync and synchronous commits "
        "(default: durable commits, as production runs)",
    )
    parser.add_argument("--only", help=f"comma-separated subset of {','.join(WORKLOADS)}")
    parser.add_argument("--entries", type=int, help="size of the seeded log (default 1,000,000)")
    parser.add_argument(
        "--no-wrk",
        action="store_true",
        help="use the built-in asyncio load client even if wrk is installed",
    )
    parser.add_argument(
        "--pin", action="store_true", help="pin uvicorn and the load generator to separate CPUs"
    )
    parser.add_argument("--out", default=str(HERE / "RESULTS.md"))
    parser.add_argument(
        "--json", help="where to write the figures as JSON (default: next to --out, .json)"
    )
    args = parser.parse_args(argv)
    return Run(args).run()


if __name__ == "__main__":
    sys.exit(main())
