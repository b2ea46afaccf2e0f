"""Table and plot of server CPU per forwarded packet against meeting size, from
bench/results/meeting-N.json (written by bench/run.sh)."""

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

results = Path(__file__).parent / "results"
sizes = [int(a) for a in sys.argv[1:]] or [2, 4, 6, 8]
rows = []
print("| participants | subscribed tracks | packets received | server CPU µs / packet | RSS growth KiB / participant | latency p50 / p99 ms | loss % |")
print("|---:|---:|---:|---:|---:|---:|---:|")
for n in sizes:
    r = json.loads((results / f"meeting-{n}.json").read_text())
    us = r.get("server_cpu_us_per_packet", 0.0)
    rss = r.get("server_rss_growth_kb", 0) / max(r["joined"], 1)
    rows.append((n, us))
    print(
        f"| {n} | {r['tracks']} | {r['packets']} | {us:.2f} | {rss:.0f} | "
        f"{r['latency_ms_p50']:.2f} / {r['latency_ms_p99']:.2f} | {r['loss_pct']:.2f} |"
    )
fig, ax = plt.subplots(figsize=(6, 3.5), dpi=120)
ax.plot([n for n, _ in rows], [us for _, us in rows], marker="o", label="Pylon (release, 1 pinned core)")
ax.axhline(5.0, color="grey", linestyle="--", linewidth=1, label="target 5 µs")
ax.axhline(2.0, color="grey", linestyle=":", linewidth=1, label="GSO floor ~2 µs")
ax.set_xlabel("participants in the meeting (all publish and subscribe)")
ax.set_ylabel("server CPU µs per forwarded packet")
ax.set_ylim(bottom=0)
ax.legend(fontsize=8)
ax.grid(alpha=0.3)
fig.tight_layout()
out = results / "cpu-per-packet.png"
fig.savefig(out)
print(f"\nplot: {out}")
