"""Benchmark of the ASIC device side: emulator nonce search, end-to-end sessions, host verification.

``python -m benchmarks.bench_asic`` (quick, well under a minute) or ``--full``. Rows:

* the emulator's midstate search in-process, per backend (hashes/s: what one work item costs);
* a real session with the ``hasher-asic-emulator`` process over a pty: work items/s, nonces/s
  returned, and the wall time including the packet codec and the status barrier;
* host-side verification of returned nonces (hashlib double SHA-256 per nonce) and the kernel
  re-check of ``cross_validate``.

For scale: an Antminer S3 sweeps 441 GH/s and returns about 103 difficulty-1 nonces/s
(performance-anchors §3); the emulator searches a bounded window per work item instead.
"""

from __future__ import annotations

import argparse
import os
import struct
import time

import numpy as np

from benchmarks.results import record
from hasher_resources.asic import midstate
from hasher_resources.asic.device import AsicDevice
from hasher_resources.asic.validation import cross_validate
from hasher_resources.sha256.reference import header_hash_zero_bits


def _search_rate(backend: str, nonces: int) -> float:
    if backend == "numba":
        from hasher_resources.asic import midstate_jit

        midstate_jit.warm_up()
        fn = midstate_jit.hash_zero_bits_from_midstate
    else:
        fn = midstate.hash_zero_bits_from_midstate
    header = os.urandom(80)
    state = midstate.midstate_words(header)
    window = np.arange(nonces, dtype=np.uint32)
    t = time.perf_counter()
    fn(state, header[64:76], window)
    return nonces / (time.perf_counter() - t)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--full", action="store_true", help="larger sizes (minutes)")
    parser.add_argument("--no-record", action="store_true", help="print only, do not append to RESULTS.md")
    args = parser.parse_args(argv)
    search_n = 2_000_000 if args.full else 200_000
    headers_n = 256 if args.full else 48
    nonces_per_work = 65536 if args.full else 16384
    share_bits = 8

    rows: list[list[object]] = []
    for backend in ("numpy", "numba"):
        rate = _search_rate(backend, search_n)
        rows.append(
            [f"midstate search ({backend}), in-process", f"{search_n:,} nonces", f"{rate / 1e6:.3f} MH/s", ""]
        )

    headers = [os.urandom(80) for _ in range(headers_n)]
    for backend in ("numpy", "numba"):
        device = AsicDevice(
            share_bits=share_bits,
            emulator_nonces_per_work=nonces_per_work,
            emulator_backend=backend,
            timeout_s=2.0,
        )
        t0 = time.perf_counter()
        with device.session() as dev:
            started = time.perf_counter() - t0
            dev.configure()
            t = time.perf_counter()
            reports = dev.submit(headers)
            wall = time.perf_counter() - t
            report = cross_validate(dev, headers[:16])
        hashes = headers_n * nonces_per_work
        rows.append(
            [
                f"emulator process ({backend}) over a pty, share_bits={share_bits}",
                f"{headers_n} works × {nonces_per_work:,} nonces",
                f"{hashes / wall / 1e6:.3f} MH/s; {headers_n / wall:.1f} works/s; "
                f"{len(reports) / wall:,.0f} nonces/s",
                f"start {started:.2f} s; {len(reports)} nonces, all valid: {all(r.valid for r in reports)}; "
                f"cross-validation {report.consistency_rate:.0%}",
            ]
        )

    header = os.urandom(80)
    count = 20_000 if args.full else 5_000
    t = time.perf_counter()
    for n in range(count):
        header_hash_zero_bits(header[:76] + struct.pack("<I", n))
    verify_rate = count / (time.perf_counter() - t)
    rows.append(
        [
            "host verification (hashlib dsha per nonce)",
            f"{count:,} nonces",
            f"{verify_rate:,.0f} nonces/s",
            "",
        ]
    )
    rows.append(
        [
            "cross_validate kernel re-check (reference backend)",
            f"{report.nonces_returned} nonces",
            f"{report.nonces_returned / report.verify_s:,.0f} nonces/s" if report.verify_s else "-",
            "",
        ]
    )

    title = "ASIC emulator and host verification" + (" (full)" if args.full else " (quick)")
    notes = (
        "Emulator hashes from the midstate (two compressions per nonce) in one process; the S3 does "
        "441 GH/s and ~103 difficulty-1 nonces/s. Host verification is one hashlib double SHA-256 per "
        "returned nonce, far above any S3 nonce rate."
    )
    if args.no_record:
        from benchmarks.results import table

        print(table(["what", "size", "rate", "notes"], rows))
    else:
        record(title, ["what", "size", "rate", "notes"], rows, notes)


if __name__ == "__main__":
    main()
