"""Plots `wapipe simulate --out-dir DIR` time series: lag and replicas over the day, wapipe's
policy and KEDA + HPA on the same trace, one PNG per trace.

    target/release/wapipe simulate --out-dir /tmp/sim && python3 scripts/plot_simulation.py /tmp/sim docs/simulation

Needs matplotlib (pip install matplotlib).
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path


def main() -> None:
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    source, out = Path(sys.argv[1]), Path(sys.argv[2])
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    for path in sorted(source.glob("*.csv")):
        rows = list(csv.DictReader(path.open()))
        # The spikes of every trace but the plain day fall between 08:30 and 11:00: show that.
        if path.stem != "diurnal":
            rows = [r for r in rows if 8.5 * 3600 <= int(r["t"]) <= 11 * 3600]
        hours = [int(r["t"]) / 3600 for r in rows]
        fig, (rate, lag, replicas) = plt.subplots(3, 1, figsize=(10, 7.5), sharex=True)
        rate.plot(hours, [float(r["arrival"]) for r in rows], color="tab:blue", linewidth=0.6)
        rate.set_ylabel("arrivals\n(events/s)")
        lag.plot(hours, [float(r["wapipe_lag"]) for r in rows], label="wapipe", color="tab:green", linewidth=0.9)
        lag.plot(hours, [float(r["keda_lag"]) for r in rows], label="KEDA + HPA", color="tab:orange", linewidth=0.9, linestyle="--")
        lag.set_ylabel("consumer lag\n(records)")
        lag.legend(loc="upper right")
        replicas.step(hours, [int(r["wapipe_desired"]) for r in rows], where="post", label="wapipe", color="tab:green")
        replicas.step(hours, [int(r["keda_desired"]) for r in rows], where="post", label="KEDA + HPA", color="tab:orange", linestyle="--")
        replicas.set_ylabel("worker replicas\n(asked for)")
        replicas.set_xlabel("hour of the day")
        replicas.legend(loc="upper right")
        for axis in (rate, lag, replicas):
            axis.grid(alpha=0.3)
        fig.suptitle(f"simulated day, trace {path.stem}: wapipe's scaling policy vs KEDA's Kafka scaler + HPA")
        fig.tight_layout()
        target = out / f"{path.stem}.png"
        fig.savefig(target, dpi=80)
        plt.close(fig)
        print(f"wrote {target}")


if __name__ == "__main__":
    main()
