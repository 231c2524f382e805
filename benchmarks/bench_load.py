"""Workload 2: the same request under uvicorn on 127.0.0.1, with a bounded load generator.

One uvicorn process per contender (``apps.py``), all started up front on free
loopback ports; each round loads them in turn. The load generator is wrk when
installed (``apt-get install wrk``: fixed duration, one thread, 16 connections)
or else a small asyncio HTTP/1.1 keep-alive client in this file with a fixed
request count and a time cap. With ``--pin`` (and two or more CPUs) the
server is pinned to one CPU and the load generator to another; by default the
scheduler places them, which copes better with other load on a shared machine.
The figure is the time per request (1 / throughput) relative to bare.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from apps import CONTENDERS, available
from common import NO_TARGET, Section, fmt_num, fmt_ratio, interleave, median, paired_ratios, status

HERE = Path(__file__).resolve().parent
LOADED = (
    "bare",
    "whodid",
    "echo_floor",
    "minimal_context",
    "correlation_id",
    "starlette_context",
)
TARGET_RATIO = 1.05
CONNECTIONS = 16


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _cpus() -> list[int]:
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return []


def _pin(cpu: int | None) -> Any:
    if cpu is None:
        return None
    return lambda: os.sched_setaffinity(0, {cpu})


class Servers:
    """uvicorn processes, one per contender, stopped (by pid) on exit."""

    def __init__(self, names: list[str], pin: bool = False) -> None:
        self.names = names
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.ports: dict[str, int] = {}
        cpus = _cpus() if pin else []
        self.server_cpu = cpus[0] if len(cpus) >= 2 else None
        self.client_cpu = cpus[1] if len(cpus) >= 2 else None

    def __enter__(self) -> Servers:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), *sys.path[1:]])}
        try:
            for name in self.names:
                port = _free_port()
                cmd = [
                    sys.executable,
                    "-m",
                    "uvicorn",
                    "--factory",
                    f"apps:make_{name}",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(port),
                    "--log-level",
                    "warning",
                    "--no-access-log",
                ]
                self.procs[name] = subprocess.Popen(
                    cmd,
                    cwd=HERE,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE,
                    preexec_fn=_pin(self.server_cpu),
                )
                self.ports[name] = port
            deadline = time.monotonic() + 30
            for name, port in self.ports.items():
                while True:
                    proc = self.procs[name]
                    if proc.poll() is not None:
                        err = proc.stderr.read().decode() if proc.stderr else ""
                        raise RuntimeError(f"uvicorn for {name} exited: {err[-2000:]}")
                    try:
                        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                        break
                    except OSError:
                        if time.monotonic() > deadline:
                            raise RuntimeError(f"uvicorn for {name} did not start") from None
                        time.sleep(0.05)
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: Any) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.ports[name]}/"


# -- load generators ------------------------------------------------------------


def wrk_rps(wrk: str, url: str, seconds: int, cpu: int | None) -> float:
    out = subprocess.run(
        [wrk, "-t1", f"-c{CONNECTIONS}", f"-d{seconds}s", "--timeout", "2s", url],
        capture_output=True,
        text=True,
        timeout=seconds + 30,
        check=True,
        preexec_fn=_pin(cpu),
    ).stdout
    if "Non-2xx" in out or "Socket errors" in out:
        raise RuntimeError(f"wrk saw errors against {url}:\n{out}")
    match = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if not match:
        raise RuntimeError(f"no Requests/sec in wrk output:\n{out}")
    return float(match.group(1))


async def _client(port: int, count: int, deadline: float, done: list[int]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    request = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    try:
        for _ in range(count):
            if time.perf_counter() > deadline:
                break
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            if not head.startswith(b"HTTP/1.1 200"):
                raise RuntimeError(f"server answered {head[:40]!r}")
            length = int(re.search(rb"(?i)content-length:\s*(\d+)", head).group(1))  # type: ignore[union-attr]
            await reader.readexactly(length)
            done[0] += 1
    finally:
        writer.close()


def python_rps(port: int, count: int, seconds: float) -> float:
    """Requests/s of ``count`` keep-alive GETs over CONNECTIONS connections, capped in time."""

    async def main() -> float:
        done = [0]
        t = time.perf_counter()
        deadline = t + seconds
        per = max(1, count // CONNECTIONS)
        await asyncio.gather(*(_client(port, per, deadline, done) for _ in range(CONNECTIONS)))
        return done[0] / (time.perf_counter() - t)

    return asyncio.run(main())


def section(
    rounds: int, seconds: int, count: int, use_wrk: bool = True, pin: bool = False
) -> Section:
    names = [n for n in LOADED if available(n)]
    wrk = shutil.which("wrk") if use_wrk else None
    generator = (
        f"wrk -t1 -c{CONNECTIONS} -d{seconds}s"
        if wrk
        else f"asyncio keep-alive client, {CONNECTIONS} connections, {count:,} requests or "
        f"{seconds} s, whichever first"
    )
    sec = Section(
        "load",
        "Request that writes nothing: uvicorn on 127.0.0.1 under load",
        [
            "contender",
            "requests/s (median)",
            "µs / request",
            "ratio to bare (per request)",
            "ratio to the echo floor (per request)",
            "target",
            "status",
        ],
        intro=(
            f"One uvicorn worker per contender; load: {generator}; {rounds} interleaved "
            "rounds. Ratio: median of per-round (bare req/s / contender req/s); whodid's "
            "ratio to the echo floor pairs it with the floor's req/s the same way."
        ),
        label_cols=["contender"],
        figure_cols=[
            "ratio to bare (per request)",
            "ratio to the echo floor (per request)",
            "requests/s (median)",
        ],
    )
    with Servers(names, pin) as servers:
        client_cpu = servers.client_cpu

        def once(name: str, _round: int) -> float:
            if wrk:
                return wrk_rps(wrk, servers.url(name), seconds, client_cpu)
            return python_rps(servers.ports[name], count, seconds)

        for name in names:  # warm each server once, unmeasured
            if wrk:
                wrk_rps(wrk, servers.url(name), 1, client_cpu)
            else:
                python_rps(servers.ports[name], max(100, count // 10), seconds)
        results = interleave(names, rounds, once)
        pinned = servers.server_cpu is not None
    if pinned:
        sec.notes.append(
            f"servers pinned to CPU {servers.server_cpu}, load generator to CPU {client_cpu}"
        )
    base = results["bare"]
    for name in LOADED:
        label, _, module = CONTENDERS[name]
        if name not in results:
            sec.add(
                name,
                contender=label,
                **{
                    "requests/s (median)": "not installed",
                    "target": f"pip install {module}",
                    "status": NO_TARGET,
                },
            )
            continue
        rps = results[name]
        # per-request time ratio = bare throughput / contender throughput
        ratios = paired_ratios(base, rps)
        ok = median(ratios) <= TARGET_RATIO if name == "whodid" else None
        # whodid's time over the echo alone: what whodid adds to what any
        # middleware echoing the request id must cost.
        over_floor = (
            fmt_ratio(paired_ratios(results["echo_floor"], rps))
            if name == "whodid" and "echo_floor" in results
            else NO_TARGET
        )
        verdict = status(ok)
        if ok is False and "minimal_context" in results:
            # The least a context-capturing, id-echoing middleware costs: if
            # that is over the target too, no middleware keeping the contract
            # could have met it in this run.
            floor = median(paired_ratios(base, results["minimal_context"]))
            if floor > TARGET_RATIO:
                verdict += f": out of reach, the context floor alone is {floor:.2f}x"
        sec.add(
            name,
            contender=label,
            **{
                "requests/s (median)": fmt_num(median(rps), 0),
                "µs / request": fmt_num(1e6 / median(rps), 1),
                "ratio to bare (per request)": "1.00x" if name == "bare" else fmt_ratio(ratios),
                "ratio to the echo floor (per request)": over_floor,
                "target": f"<= {TARGET_RATIO:.2f}x" if name == "whodid" else NO_TARGET,
                "status": verdict,
            },
        )
    sec.generator = generator  # type: ignore[attr-defined]
    return sec
