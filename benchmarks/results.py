"""Appending benchmark figures to ``benchmarks/RESULTS.md`` with the machine, date and command.

Every benchmark prints its table and calls :func:`record`; the file is append-only so figures from
different machines and days stay side by side.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import sys
from collections.abc import Sequence
from pathlib import Path

RESULTS = Path(__file__).with_name("RESULTS.md")


#: CPU flags that change which SHA-256 path is fastest (SHA-NI) and how wide the SIMD kernel is.
FLAGS_OF_INTEREST = ("sha_ni", "avx2", "avx512f", "avx512vl")


def machine() -> str:
    """A one-line description of this machine: CPU model and the flags that matter, cores, memory, Python."""
    cpu = platform.processor() or platform.machine()
    flags: set[str] = set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and cpu == (platform.processor() or platform.machine()):
                cpu = line.split(":", 1)[1].strip()
            elif line.startswith("flags") and not flags:
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    if flags:
        cpu += " (" + " ".join(f if f in flags else f"no {f}" for f in FLAGS_OF_INTEREST) + ")"
    mem = ""
    try:
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f", {kb / 2**20:.0f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    return f"{cpu}, {os.cpu_count()} cores{mem}, Python {platform.python_version()}"


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A Markdown table."""
    out = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(out)


def command(argv: Sequence[str] | None = None) -> str:
    """The command line that ran this benchmark, as a user would retype it: a module of this package
    run with ``-m`` (``sys.argv[0]`` is then its file) reads ``python -m benchmarks.NAME ARGS``."""
    argv = list(sys.argv if argv is None else argv)
    if not argv:
        return "?"
    script = Path(argv[0])
    if script.parent == Path(__file__).parent and script.suffix == ".py":
        argv[0:1] = ["-m", f"benchmarks.{script.stem}"]
    return " ".join(["python", *argv])


def record(
    title: str,
    headers: Sequence[str],
    rows: Sequence[Sequence[object]],
    notes: str = "",
    *,
    append: bool = True,
) -> None:
    """Print the table and (unless ``append`` is False: a ``--no-record`` run) append it to RESULTS.md
    under a dated heading."""
    body = table(headers, rows)
    print(f"\n{title}\n{body}\n{notes}".rstrip())
    if not append:
        return
    stamp = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    with RESULTS.open("a", encoding="utf-8") as f:
        f.write(f"\n## {title}\n\n- date: {stamp}\n- machine: {machine()}\n- command: `{command()}`\n\n")
        f.write(body + "\n")
        if notes:
            f.write(f"\n{notes}\n")


def publish(
    title: str,
    headers: Sequence[str],
    rows: Sequence[Sequence[object]],
    notes: Sequence[str],
    figures: dict[str, float],
    *,
    json_path: Path | None,
    no_record: bool,
) -> None:
    """A benchmark's end: ``figures`` to ``json_path`` (when given), then the table and notes printed,
    and appended to RESULTS.md unless ``no_record``."""
    if json_path:
        json_path.write_text(json.dumps(figures, indent=2))
    if no_record:
        print(f"\n{title}\n{table(headers, rows)}\n" + "\n".join(notes))
    else:
        record(title, headers, rows, notes="\n".join(notes))
