#!/usr/bin/env python3
"""A subscriber's link narrows under it: how long does its queue stay full?

    bench/narrowed-link.py --bin PATH [--bin PATH ...] [--runs N] [--out DIR]

Runs `tests/e2e/test_quality.py`'s 400 kbit/s test (a subscriber watching a noisy 720p
simulcast publisher has its downlink cut from unlimited to 400 kbit/s with a 25 kB queue) N
times per binary, alternating binaries, and samples the 400 kbit/s HTB class's queue (`tc -s
qdisc` in the test's namespace, every 100 ms) meanwhile. Per run it reports:
  - full for: from the first packet the queue dropped to the last sample with 20 kB or more
    queued (0.4 s of the link), in seconds: how long the link ran with its queue full;
  - dropped: packets the queue dropped in the whole run;
  - the test's own line: where the subscriber's video settled, its longest freeze in the
    measured window (the test fails at 1 s), and whether the test passed.
The table goes to stdout and <out>/narrowed-link.md. Needs root (network namespaces), the
Python venv (scripts/setup-python.sh) and debug or release binaries.
"""

import argparse
import os
import re
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NETNS = "pylt-bwe"
FULL_BYTES = 20_000


def sample(stop: threading.Event, rows: list) -> None:
    """(time, dropped, backlog bytes) of the test's bfifo every 100 ms while it exists."""
    while not stop.is_set():
        r = subprocess.run(
            ["ip", "netns", "exec", NETNS, "tc", "-s", "qdisc", "show"], capture_output=True, text=True
        )
        m = re.search(r"qdisc bfifo 20:.*?\(dropped (\d+),.*?backlog (\d+)b", r.stdout, re.S)
        if m:
            rows.append((time.monotonic(), int(m.group(1)), int(m.group(2))))
        time.sleep(0.1)


def one_run(binary: str) -> dict:
    rows: list = []
    stop = threading.Event()
    t = threading.Thread(target=sample, args=(stop, rows), daemon=True)
    t.start()
    env = {**os.environ, "PYLON_BIN": binary}
    env.pop("RUST_LOG", None)
    r = subprocess.run(
        [
            str(ROOT / ".venv/bin/python"), "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", "-s",
            "test_quality.py", "-k", "400_kbits",
        ],
        cwd=ROOT / "tests/e2e", env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    stop.set()
    t.join()
    line = next((l for l in r.stdout.splitlines() if l.startswith("BWE_400")), "")
    size = re.search(r"size=\((\d+), (\d+)\)", line)
    frozen = re.search(r"frozen=([\d.]+)", line)
    first_drop = next((ts for ts, d, _ in rows if d > 0), None)
    full = [ts for ts, _, b in rows if b >= FULL_BYTES]
    full_for = (max(full) - first_drop) if first_drop is not None and full else 0.0
    return {
        "passed": r.returncode == 0,
        "size": f"{size.group(1)}x{size.group(2)}" if size else "?",
        "frozen": float(frozen.group(1)) if frozen else None,
        "full_for": max(full_for, 0.0),
        "dropped": max((d for _, d, _ in rows), default=0),
    }


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", action="append", required=True)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--out", default=str(ROOT / "bench/results/narrowed-link"))
    a = ap.parse_args()
    results: dict = {b: [] for b in a.bin}
    for i in range(a.runs):
        for b in a.bin:
            res = one_run(b)
            results[b].append(res)
            print(f"run {i + 1} {b}: {res}", file=sys.stderr, flush=True)
    lines = [
        "| binary | run | full for (s) | dropped | settled on | longest freeze (s) | test |",
        "|---|---:|---:|---:|---|---:|---|",
    ]
    for b, rs in results.items():
        for i, res in enumerate(rs):
            fz = "?" if res["frozen"] is None else f"{res['frozen']:.2f}"
            ok = "passed" if res["passed"] else "FAILED"
            lines.append(f"| {b} | {i + 1} | {res['full_for']:.1f} | {res['dropped']} | {res['size']} | {fz} | {ok} |")
    lines += ["", "| binary | runs | full for, median (s) | max (s) | dropped, median | failed |", "|---|---:|---:|---:|---:|---:|"]
    for b, rs in results.items():
        ff = [r["full_for"] for r in rs]
        dr = [r["dropped"] for r in rs]
        failed = sum(1 for r in rs if not r["passed"])
        lines.append(f"| {b} | {len(rs)} | {statistics.median(ff):.1f} | {max(ff):.1f} | {statistics.median(dr):.0f} | {failed} |")
    table = "\n".join(lines)
    print(table)
    Path(a.out).mkdir(parents=True, exist_ok=True)
    (Path(a.out) / "narrowed-link.md").write_text(table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
