"""Log stream throughput and lag, to a local HTTPS receiver (issue 22's targets).

- Throughput: a log of N committed entries shipped by one relay (batches of
  1,000, signed) to ``stream_sink.py`` in another process; entries/s from the
  relay's start to the receiver holding the last one. Target: >= 20,000/s.
- Lag: a writer process commits 1,000 entries/s (10 per transaction every
  10 ms) for ``--seconds`` while the relay runs in a thread; lag is each
  entry's arrival at the receiver minus its commit. Target: under 1 s.

PostgreSQL runs with durable commits (fsync, synchronous_commit on) unless
``--fsync-off``. Writes the "Log streams" section of benchmarks/RESULTS.md.

    python benchmarks/bench_stream.py [--entries 200000] [--seconds 20] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import sqlalchemy as sa

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from pgutil import create_database, start_throwaway  # noqa: E402
from seed import seed  # noqa: E402

from whodid import Auditor  # noqa: E402
from whodid.context import Actor, RequestContext  # noqa: E402
from whodid.testing import Change, entry_rows  # noqa: E402

SECRET = "bench-stream-secret-0123456789abcdef"
BEGIN, END = "<!-- stream benchmark: begin -->", "<!-- stream benchmark: end -->"


def certificates(directory: Path) -> tuple[str, str, str]:
    import trustme

    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    paths = [directory / n for n in ("ca.pem", "cert.pem", "key.pem")]
    ca.cert_pem.write_to_path(str(paths[0]))
    cert.cert_chain_pems[0].write_to_path(str(paths[1]))
    cert.private_key_pem.write_to_path(str(paths[2]))
    return str(paths[0]), str(paths[1]), str(paths[2])


class Sink:
    """stream_sink.py in its own process."""

    def __init__(self, port: int, ca: str, cert: str, key: str) -> None:
        self.url = f"https://127.0.0.1:{port}/ingest"
        self.context = ssl.create_default_context(cafile=ca)
        self.process = subprocess.Popen(
            [sys.executable, str(HERE / "stream_sink.py"), str(port), cert, key, SECRET],
            stdout=subprocess.PIPE,
        )
        assert self.process.stdout is not None
        assert self.process.stdout.readline().strip() == b"ready"

    def _call(self, method: str) -> bytes:
        request = urllib.request.Request(self.url, method=method)
        with urllib.request.urlopen(request, context=self.context) as answer:
            return bytes(answer.read())

    def stats(self) -> dict[str, object]:
        return json.loads(self._call("GET"))  # type: ignore[no-any-return]

    def clear(self) -> None:
        self._call("DELETE")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)


def throughput(url: str, sink: Sink, ca: str, entries: int, rounds: int) -> list[float]:
    auditor = Auditor(url)
    rates = []
    for r in range(rounds):
        sink.clear()
        relay = auditor.stream(sink.url, secrets=[SECRET], ca=ca, name=f"throughput-{r}")
        began = time.perf_counter()
        read = relay.drain()
        took = time.perf_counter() - began
        assert read == entries and sink.stats()["entries"] == entries, (read, entries)
        rates.append(entries / took)
    assert auditor.engine is not None
    auditor.engine.dispose()
    return rates


def _writer(url: str, seconds: float, out: str) -> None:
    """Commit 10 entries every 10 ms for ``seconds``; note each entry's commit time."""
    auditor = Auditor(url)
    assert auditor.engine is not None
    ctx = RequestContext(actor=Actor.user("usr_bench", "bench@example.com"), tenant_id="org_1")
    committed: dict[str, float] = {}
    start = time.time()
    tick = 0
    while time.time() - start < seconds:
        rows = entry_rows(auditor, [Change("payment", "create")] * 10, ctx)
        with auditor.engine.begin() as conn:
            auditor.writer.write(conn, rows)
        now = time.time()
        for row in rows:
            committed[row["id"]] = now
        tick += 1
        pause = start + tick * 0.01 - time.time()
        if pause > 0:
            time.sleep(pause)
    Path(out).write_text(json.dumps(committed))


def lag(url: str, sink: Sink, ca: str, seconds: float, name: str) -> dict[str, float]:
    auditor = Auditor(url)
    sink.clear()
    relay = auditor.stream(sink.url, secrets=[SECRET], ca=ca, name=name, start="now")
    relay.start()
    out = tempfile.mktemp(suffix=".json")
    writer = multiprocessing.get_context("spawn").Process(target=_writer, args=(url, seconds, out))
    writer.start()
    writer.join()
    committed: dict[str, float] = json.loads(Path(out).read_text())
    deadline = time.time() + 10
    while time.time() < deadline and int(sink.stats()["entries"]) < len(committed):  # type: ignore[call-overload]
        time.sleep(0.1)
    relay.stop()
    arrived: dict[str, float] = sink.stats()["arrived"]  # type: ignore[assignment]
    lags = sorted(arrived[i] - t for i, t in committed.items() if i in arrived)
    assert len(lags) == len(committed), f"{len(committed) - len(lags)} entries never arrived"
    assert auditor.engine is not None
    auditor.engine.dispose()
    return {
        "entries": len(committed),
        "rate": len(committed) / seconds,
        "p50": lags[len(lags) // 2],
        "p99": lags[int(len(lags) * 0.99)],
        "max": lags[-1],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=200_000)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--fsync-off", action="store_true")
    parser.add_argument("--pg-url", help="an existing server (allowed to CREATE DATABASE)")
    parser.add_argument("--out", default=str(HERE / "RESULTS.md"))
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="whodid-bench-stream-"))
    ca, cert, key = certificates(tmp)
    sys.path.insert(0, str(HERE.parent / "tests" / "support"))
    from pgserver import free_port

    sink = Sink(free_port(), ca, cert, key)
    server = None if args.pg_url else start_throwaway(durable=not args.fsync_off)
    pg_url = args.pg_url or (server.url() if server is not None else None)
    results = []
    try:
        targets = {"SQLite (WAL)": f"sqlite:///{tmp}/log.db"}
        if pg_url is not None:
            targets["PostgreSQL"] = create_database(pg_url, "bench_stream")
        for label, url in targets.items():
            seed(url, args.entries)
            if url.startswith("sqlite"):
                engine = sa.create_engine(url)
                with engine.begin() as conn:
                    conn.exec_driver_sql("PRAGMA journal_mode=WAL")
                engine.dispose()
            rates = throughput(url, sink, ca, args.entries, args.rounds)
            lags = lag(url, sink, ca, args.seconds, "lag")
            results.append((label, rates, lags))
            print(label, [f"{r:,.0f}" for r in rates], lags, flush=True)
    finally:
        sink.stop()
        if server is not None:
            server.stop()
    if not args.no_write:
        write_section(Path(args.out), results, args)


def write_section(path: Path, results: list, args: argparse.Namespace) -> None:
    durable = "fsync off" if args.fsync_off else "durable commits (fsync, synchronous_commit on)"
    lines = [
        BEGIN,
        "## Log streams (`python benchmarks/bench_stream.py`)",
        "",
        f"Run on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; PostgreSQL with {durable}. "
        f"Throughput: a log of {args.entries:,} entries shipped by one relay (batches of 1,000, "
        "HMAC-signed) to a local HTTPS receiver in another process that checks every signature; "
        f"median of {args.rounds} rounds. Lag: a writer process commits 1,000 entries/s "
        f"(10 per transaction every 10 ms) for {args.seconds:.0f} s while the relay runs "
        "(poll interval 0.2 s); lag is arrival at the receiver minus commit, over every entry.",
        "",
        "| workload | target | measured | status |",
        "| --- | --- | --- | --- |",
    ]
    for label, rates, lags in results:
        rate = statistics.median(rates)
        lines.append(
            f"| Stream to HTTPS: {label} / throughput | >= 20,000 entries/s | entries/s (median): "
            f"{rate:,.0f} ({min(rates):,.0f}-{max(rates):,.0f}) | "
            f"{'met' if rate >= 20_000 else 'MISSED'} |"
        )
        lines.append(
            f"| Stream to HTTPS: {label} / lag at {lags['rate']:,.0f} entries/s | < 1 s | "
            f"p50 {lags['p50']:.3f} s, p99 {lags['p99']:.3f} s, max {lags['max']:.3f} s "
            f"({lags['entries']:,} entries) | {'met' if lags['max'] < 1 else 'MISSED'} |"
        )
    lines.append(END)
    section = "\n".join(lines) + "\n"
    text = path.read_text() if path.exists() else ""
    if BEGIN in text:
        text = text[: text.index(BEGIN)] + section + text[text.index(END) + len(END) + 1 :]
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.write_text(text)


if __name__ == "__main__":
    main()
