"""One export, seal or verify in a fresh process, so its peak memory is its own.

    python benchmarks/bench_proc.py export URL '{"start": "..."}'
    python benchmarks/bench_proc.py seal   URL KEY.pem
    python benchmarks/bench_proc.py verify URL KEY.pem

Prints one JSON object: rows, seconds, peak RSS (MiB) and the RSS before the
work started (after imports and a first connection).
"""

from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path
from typing import Any


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _current_mib() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return _peak_mib()


def main(argv: list[str]) -> dict[str, Any]:
    import sqlalchemy as sa
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    from whodid import ALL_TENANTS, Auditor

    command, url = argv[0], argv[1]
    key = None
    if command in ("seal", "verify"):
        key = load_pem_private_key(Path(argv[2]).read_bytes(), password=None)
    auditor = Auditor(url, signing_key=key)
    assert auditor.engine is not None
    with auditor.engine.connect() as conn:  # connect and load the dialect before the clock
        conn.execute(sa.text("SELECT 1"))
    extra: dict[str, Any] = {}
    if command == "export":
        # What the export must write: the log as it is when it begins (its own
        # audit_log.export entries come after). Counted before the clock starts.
        filters = json.loads(argv[2]) if len(argv) > 2 else {}
        extra["expected"] = auditor.count(tenant_id=ALL_TENANTS, **filters)
    before = _current_mib()
    t = time.perf_counter()
    if command == "export":
        with open("/dev/null", "wb") as out:
            rows = auditor.export(out, "csv", tenant_id=ALL_TENANTS, **filters)
    elif command == "seal":
        checkpoint = auditor.seal()
        rows = checkpoint.count if checkpoint else 0
    elif command == "verify":
        report = auditor.verify()
        rows = report.entries
        extra = {
            "ok": report.ok,
            "sealed": report.sealed,
            "unsealed": report.unsealed,
            "problems": [p.message for p in report.problems[:5]],
        }
    else:
        raise SystemExit(f"unknown command {command!r}")
    seconds = time.perf_counter() - t
    return {
        "rows": rows,
        "seconds": seconds,
        "peak_mib": _peak_mib(),
        "before_mib": before,
        **extra,
    }


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1:])))
