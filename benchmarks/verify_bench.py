"""Seal and verify speed on a seeded log (see seed.py).

python benchmarks/verify_bench.py URL [--key PATH] [--repeat N] [--workers N]

Without --key a fresh key seals the log, so run it once per seeded database.
With --key the key is read from PATH (created there on the first run), the seal
only covers entries not sealed yet, and verify can be repeated on the same log.
--workers passes ``workers`` to ``integrity.verify`` (default: its own choice).
"""

from __future__ import annotations

import argparse
import os
import resource
import time
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from whodid import Auditor
from whodid.integrity import verify as integrity


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("--key", type=Path)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--workers", type=int)
    args = parser.parse_args()
    if args.key is None:
        key = Ed25519PrivateKey.generate()
    else:
        if not args.key.exists():
            integrity.generate_key_pair(args.key)
        key = integrity.load_private_key(args.key)
    # integrity.seal/verify directly: Auditor.seal() does more than sealing.
    auditor = Auditor(args.url)
    assert auditor.engine is not None
    t = time.perf_counter()
    with auditor.engine.begin() as conn:
        checkpoint = integrity.seal(conn, key)
    sealed = checkpoint.count if checkpoint else 0
    seal_s = time.perf_counter() - t
    if sealed:
        print(f"seal:   {sealed:,} entries in {seal_s:.1f} s = {sealed / seal_s:,.0f} entries/s")
    options = {} if args.workers is None else {"workers": args.workers}
    for _ in range(args.repeat):
        t = time.perf_counter()
        with auditor.engine.connect() as conn:
            report = integrity.verify(conn, key.public_key(), **options)
        verify_s = time.perf_counter() - t
        print(
            f"verify: {report.entries:,} entries in {verify_s:.2f} s = "
            f"{report.entries / verify_s:,.0f} entries/s, ok={report.ok}",
            flush=True,
        )
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS of this process: {peak:,.0f} MiB (pid {os.getpid()})")


if __name__ == "__main__":
    main()
