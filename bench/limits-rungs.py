#!/usr/bin/env python3
"""Seconds each subscriber of a `bench/limits.sh` run spent on each rung, in the measured window.

    RUST_LOG=info,pylon_core::downlink=debug bench/limits.sh --runs 1
    bench/limits-rungs.py test-output/bench/limits-1-server.log [--identity sub-0-1] \
        [--warmup 20] [--duration 20]

Reads the server's `downlink grant` lines (debug level of `pylon_core::downlink`). A rung is
`layer * 3 + temporal layer` (0: the low layer at 7.5 fps ... 8: the top layer at 30 fps), as
`allocator::Rung` numbers them; `paused` while the video is paused. The window starts
`--warmup` seconds after the subscriber joined, as `pylon load-test --warmup` measures. Prints,
per subscriber, the seconds on each rung and every grant change inside the window with the
estimate (kbit/s) it was made at.
"""

import argparse
import datetime
import re

GRANT = re.compile(r"from=(\S+) to=(\S+) estimate=(\d+)")
JOINED = re.compile(r"participant joined .*participant=(\S+) identity=(\S+)")


def name(grant):
    """`UpTo(Rung(7))` -> 7, `Paused` -> "paused"."""
    m = re.fullmatch(r"UpTo\(Rung\((\d+)\)\)", grant)
    return int(m.group(1)) if m else grant.lower()


def seconds(line):
    return datetime.datetime.strptime(line[:26], "%Y-%m-%dT%H:%M:%S.%f").timestamp()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("log")
    ap.add_argument("--identity", help="one subscriber (default: every sub-*)")
    ap.add_argument("--warmup", type=float, default=20.0)
    ap.add_argument("--duration", type=float, default=20.0)
    args = ap.parse_args()
    lines = open(args.log, encoding="utf-8", errors="replace").read().splitlines()
    joined = {}
    for line in lines:
        m = JOINED.search(line)
        if m and m.group(2).startswith("sub-") and args.identity in (None, m.group(2)):
            joined.setdefault(m.group(1), (m.group(2), seconds(line)))
    for sid, (identity, at) in sorted(joined.items(), key=lambda kv: kv[1][0]):
        start, end = at + args.warmup, at + args.warmup + args.duration
        # Before the first grant a subscriber is granted everything (the top rung).
        rung, since, spent, changes = 8, at, {}, []
        for line in lines:
            if sid not in line or "downlink grant" not in line:
                continue
            m = GRANT.search(line)
            if not m:
                continue
            t = seconds(line)
            lo, hi = max(since, start), min(t, end)
            if hi > lo:
                spent[rung] = spent.get(rung, 0.0) + hi - lo
            came, went = (name(m.group(i)) for i in (1, 2))
            if start <= t <= end:
                changes.append(f"{came}->{went}@{int(m.group(3)) // 1000}")
            rung, since = went, t
        lo = max(since, start)
        if end > lo:
            spent[rung] = spent.get(rung, 0.0) + end - lo
        on = ", ".join(f"rung {r}: {s:.1f} s" for r, s in sorted(spent.items(), key=str))
        print(f"{identity}: {on}; changes: {' '.join(changes) or 'none'}")


if __name__ == "__main__":
    main()
