"""Records a running `wapipe up` (its status.json, every half second) and plots what a person
would watch: events/s into the ingress, consumer lag, and workers running against desired.

    python3 scripts/plot_up.py --state-dir .wapipe --seconds 60 --out docs/wapipe-up-burst.png

Needs matplotlib (pip install matplotlib). Reads only; stops after --seconds.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--state-dir", type=Path, default=Path(".wapipe"))
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--title", default="wapipe up: bursts of signed webhooks on Apache Kafka")
    args = parser.parse_args()

    samples = []
    started = time.time()
    while time.time() - started < args.seconds:
        try:
            status = json.loads((args.state_dir / "status.json").read_text())
            samples.append((time.time() - started, status))
        except (OSError, ValueError):
            pass
        time.sleep(0.5)
    if not samples:
        raise SystemExit(f"no status.json in {args.state_dir}: is wapipe up running there?")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = [s for s, _ in samples]
    fig, (rate, lag, workers) = plt.subplots(3, 1, figsize=(9, 7.5), sharex=True)
    rate.plot(t, [st["events_per_sec"] for _, st in samples], color="tab:blue")
    rate.set_ylabel("events/s in\n(acknowledged)")
    lag.plot(t, [st["total_lag"] for _, st in samples], color="tab:red")
    lag.set_ylabel("consumer lag\n(records)")
    workers.step(t, [st["workers_current"] for _, st in samples], where="post", label="running", color="tab:green")
    workers.step(t, [st["workers_desired"] for _, st in samples], where="post", label="desired", color="black", linestyle="--")
    workers.set_ylabel("workers")
    workers.set_xlabel("seconds")
    workers.legend(loc="upper right")
    top = max(st["workers_max"] for _, st in samples)
    workers.set_ylim(0, top + 1)
    for axis in (rate, lag, workers):
        axis.grid(alpha=0.3)
    fig.suptitle(args.title)
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=100)
    print(f"wrote {args.out} ({len(samples)} samples)")


if __name__ == "__main__":
    main()
