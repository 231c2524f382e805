"""Profile one whodid workload of the suite, to see what dominates a missed target.

    python benchmarks/profile_target.py asgi
    python benchmarks/profile_target.py crud   --url postgresql+psycopg://...   (or sqlite:///x.db)
    python benchmarks/profile_target.py crud   --url ... --cprofile --sort cumulative --match whodid
    python benchmarks/profile_target.py bulk   --url ...
    python benchmarks/profile_target.py list   --url URL-OF-A-SEEDED-LOG  (see seed.py)
    python benchmarks/profile_target.py search --url ...
    python benchmarks/profile_target.py export --url ...
    python benchmarks/profile_target.py verify --url ...

pyinstrument (statistical, low overhead; `pip install pyinstrument`) prints the
call tree; ``--cprofile`` prints cProfile's top functions by own time instead,
which suits the microsecond-scale ASGI path better. The URL's database is
modified by crud/bulk (tables created) and by verify (a seal is written).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import pstats
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from whodid import ALL_TENANTS

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))


def _asgi(args: argparse.Namespace) -> Callable[[], Any]:
    import apps
    import bench_asgi

    app = apps.make_whodid()
    n = args.n or 50_000
    asyncio.run(bench_asgi._run(app, 1000))
    return lambda: asyncio.run(bench_asgi._run(app, n))


def _orm(args: argparse.Namespace, kind: str) -> Callable[[], Any]:
    import bench_orm
    import sqlalchemy as sa

    db = sa.make_url(args.url).get_backend_name()
    setup = bench_orm.Setup("whodid", {db: args.url})
    setup.crud(db, 5)
    if kind == "crud":
        return lambda: setup.crud(db, args.n or 300)
    return lambda: setup.bulk(db, args.n or 10_000)


def _read(args: argparse.Namespace, kind: str) -> Callable[[], Any]:
    from whodid import Auditor

    auditor = Auditor(args.url)
    if kind == "list":
        import bench_query

        cursor = bench_query.cursor_at(auditor, args.n or 100_000, tenant_id="org_big")

        def pages() -> None:
            for _ in range(20):
                auditor.list(tenant_id="org_big")
                auditor.list(tenant_id="org_big", cursor=cursor)

        return pages
    if kind == "search":
        import bench_query

        rare, common = bench_query._search_terms(auditor, auditor.count(tenant_id=ALL_TENANTS))

        def search() -> None:
            for _ in range(3):
                auditor.list(tenant_id="org_big", q=rare)
                auditor.list(tenant_id="org_big", q=common)

        return search
    if kind == "export":

        def export() -> None:
            with open("/dev/null", "wb") as out:
                auditor.export(out, "csv", tenant_id=ALL_TENANTS)

        return export
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = args.key or Ed25519PrivateKey.generate()  # --key: the PEM the log was sealed with
    auditor = Auditor(args.url, signing_key=key)
    auditor.seal()
    return auditor.verify


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "workload", choices=["asgi", "crud", "bulk", "list", "search", "export", "verify"]
    )
    parser.add_argument("--url", help="database URL (all workloads but asgi)")
    parser.add_argument("-n", type=int, help="requests / cycles / rows / page depth")
    parser.add_argument("--key", help="verify: PEM private key the log was sealed with")
    parser.add_argument("--cprofile", action="store_true")
    parser.add_argument("--limit", type=int, default=30, help="cProfile: rows to print")
    parser.add_argument("--sort", default="tottime", help="cProfile: pstats sort key")
    parser.add_argument("--match", help="cProfile: only functions whose path matches")
    args = parser.parse_args()
    if args.workload != "asgi" and not args.url:
        parser.error("--url is required")
    if args.workload == "asgi":
        work = _asgi(args)
    elif args.workload in ("crud", "bulk"):
        work = _orm(args, args.workload)
    else:
        work = _read(args, args.workload)

    if args.cprofile:
        prof = cProfile.Profile()
        prof.runcall(work)
        out = io.StringIO()
        restrict = [args.match] if args.match else []
        pstats.Stats(prof, stream=out).sort_stats(args.sort).print_stats(*restrict, args.limit)
        print(out.getvalue())
        return
    from pyinstrument import Profiler

    profiler = Profiler(interval=0.0005)
    profiler.start()
    work()
    profiler.stop()
    print(profiler.output_text(unicode=True, color=False, show_all=False))


if __name__ == "__main__":
    main()
