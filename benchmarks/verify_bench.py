"""Seal and verify speed on a seeded log (see seed.py).

python benchmarks/verify_bench.py URL
"""

from __future__ import annotations

import sys
import time

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from whodid import Auditor


def main(url: str) -> None:
    auditor = Auditor(url, signing_key=Ed25519PrivateKey.generate())
    t = time.perf_counter()
    checkpoint = auditor.seal()
    sealed = checkpoint.count if checkpoint else 0
    seal_s = time.perf_counter() - t
    print(f"seal:   {sealed:,} entries in {seal_s:.1f} s = {sealed / seal_s:,.0f} entries/s")
    t = time.perf_counter()
    report = auditor.verify()
    verify_s = time.perf_counter() - t
    print(
        f"verify: {report.entries:,} entries in {verify_s:.1f} s = "
        f"{report.entries / verify_s:,.0f} entries/s, ok={report.ok}"
    )


if __name__ == "__main__":
    main(sys.argv[1])
