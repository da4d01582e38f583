"""One run, one broker, one table: wapipe's ingress and worker beside the usual Python service
and the raw librdkafka ceilings. Started by scripts/bench-compare.sh (which builds the release
binaries first); starts and stops everything it uses; bounded in time.

Stages (each on the same private Apache Kafka):
  1. wrk with shared/bench/signed_text.lua (64 pre-signed text webhooks, secret s3cret) against
     wapipe-ingress, the Python peer (FastAPI + confluent-kafka) in durable mode with 1 and 2
     uvicorn workers, and the peer in fire mode (not durable; for reference only).
  2. `wapipe bench ingress`: the raw rdkafka producer ceiling (same records, headers, acks and
     idempotence, the same number in flight) beside the ingress loaded by `wapipe send`.
  3. `wapipe send --rate` at half the ingress's wrk rate: p99 at half load, and the RSS.
  4. The worker benchmark: raw rdkafka consumer ceiling, worker with the log sink, the
     PostgreSQL sink (synchronous commit), the SQLite sink.

Prints figures only; asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"
SECRET = "s3cret"
CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, within: float = 60) -> None:
    import urllib.request

    deadline = time.time() + within
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status < 500:
                    return
        except Exception:
            pass
        time.sleep(0.2)
    raise SystemExit(f"bench: {url} never answered")


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except OSError:
            pass
    return total / CLK_TCK


def peak_rss_mib(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


def tree(pid: int) -> list[int]:
    """`pid` and its descendants (uvicorn's workers are children of its supervisor)."""
    out = [pid]
    for child in Path("/proc").iterdir():
        if child.name.isdigit():
            try:
                stat = (child / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(stat[1]) in out:
                out.append(int(child.name))
    return out


def wrk(url: str, seconds: int, connections: int) -> dict[str, float]:
    script = SHARED / "bench" / "signed_text.lua"
    result = subprocess.run(
        ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "-s", str(script), url],
        capture_output=True,
        text=True,
        timeout=seconds + 60,
    )
    match = re.search(r"RESULT rps=(\S+) p50_ms=(\S+) p99_ms=(\S+) non2xx=(\d+) errors=(\d+)", result.stdout)
    if not match:
        raise SystemExit(f"bench: wrk printed no RESULT line:\n{result.stdout}\n{result.stderr}")
    rps, p50, p99, non2xx, errors = match.groups()
    return {"rps": float(rps), "p50": float(p50), "p99": float(p99), "non2xx": int(non2xx), "errors": int(errors)}


class Service:
    """A process under test, with its CPU and memory read from /proc."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], cwd: Path, ready_url: str, log: Path):
        self.name = name
        self.log = open(log, "w")
        self.proc = subprocess.Popen(argv, env={**os.environ, **env}, cwd=cwd, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        wait_http(ready_url)
        time.sleep(1)

    def pids(self) -> list[int]:
        return tree(self.proc.pid)

    def stop(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=30)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.log.close()


def measure(service: Service, url: str, seconds: int, connections: int) -> dict[str, float]:
    pids = service.pids()
    before = cpu_seconds(pids)
    figures = wrk(url, seconds, connections)
    used = cpu_seconds(pids) - before
    figures["rss"] = peak_rss_mib(pids)
    requests = figures["rps"] * seconds
    figures["cpu_ms_per_req"] = 1000 * used / requests if requests else float("nan")
    figures["cores"] = used / seconds
    return figures


def run(cmd: list[str], env: dict[str, str] | None = None, timeout: int = 900) -> str:
    result = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=timeout)
    if result.returncode != 0:
        raise SystemExit(f"bench: {' '.join(cmd)} failed:\n{result.stdout}\n{result.stderr}")
    return result.stdout


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bin-dir", type=Path, required=True, help="release binaries (wapipe, wapipe-ingress, worker bench)")
    parser.add_argument("--seconds", type=int, default=15, help="duration of each wrk run")
    parser.add_argument("--connections", type=int, default=64, help="wrk connections")
    parser.add_argument("--worker-events", type=int, default=20000, help="events for the worker stage")
    parser.add_argument("--skip-worker", action="store_true")
    args = parser.parse_args()
    for tool in ("wrk", "java"):
        if not shutil.which(tool):
            raise SystemExit(f"bench: {tool} is not installed (apt-get install {tool}; scripts/install-kafka.sh)")
    try:
        import confluent_kafka, fastapi, uvicorn  # noqa: F401
    except ImportError as error:
        raise SystemExit(f"bench: the Python peer needs fastapi, uvicorn and confluent-kafka: pip install fastapi uvicorn confluent-kafka ({error})")

    state = Path(tempfile.mkdtemp(prefix="wapipe-bench-"))
    kafka_port = free_port()
    kafka_env = {"WAPIPE_STATE_DIR": str(state), "KAFKA_HEAP_OPTS": "-Xms512m -Xmx1g"}
    brokers = run(["bash", str(REPO / "scripts/kafka.sh"), "start", str(kafka_port)], env=kafka_env).strip()
    services: list[Service] = []
    rows: list[tuple[str, dict[str, float]]] = []
    try:
        topic = "bench_raw"
        run([str(args.bin_dir / "wapipe"), "topics", "create", "--kafka-brokers", brokers, "--topic", topic, "--partitions", "12"])

        port = free_port()
        ingress = Service(
            "wapipe-ingress",
            [str(args.bin_dir / "wapipe-ingress")],
            {"WAPIPE_LISTEN": f"127.0.0.1:{port}", "WAPIPE_APP_SECRET": SECRET, "WAPIPE_TOPIC": topic, "WAPIPE_KAFKA_BROKERS": brokers, "RUST_LOG": "warn"},
            REPO,
            f"http://127.0.0.1:{port}/readyz",
            state / "ingress.log",
        )
        services.append(ingress)
        ours = measure(ingress, f"http://127.0.0.1:{port}/webhook", args.seconds, args.connections)
        rows.append(("wapipe-ingress (durable: 200 after acks=all)", ours))

        # p99 at half the rate wrk reached, through `wapipe send` (its own payload mix).
        half = max(1, int(ours["rps"] / 2))
        sent = run([str(args.bin_dir / "wapipe"), "send", "--url", f"http://127.0.0.1:{port}/webhook", "--secret", SECRET, "--rate", str(half), "--requests", str(half * 10), "--concurrency", "64"])
        p99_half = re.search(r"latency p99\s+(\S+) ms", sent)
        p50_half = re.search(r"latency p50\s+(\S+) ms", sent)
        rss_half = peak_rss_mib(ingress.pids())
        ingress.stop()
        services.remove(ingress)

        peers = SHARED / "peers"
        for mode, workers in (("durable", 1), ("durable", 2), ("fire", 1)):
            port = free_port()
            peer = Service(
                f"python {mode} x{workers}",
                [sys.executable, "-m", "uvicorn", "python_ingress:app", "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers), "--log-level", "warning", "--no-access-log"],
                {"PEER_MODE": mode, "APP_SECRET": SECRET, "TOPIC": topic, "BOOTSTRAP": brokers},
                peers,
                f"http://127.0.0.1:{port}/docs",
                state / f"peer-{mode}-{workers}.log",
            )
            services.append(peer)
            label = f"Python FastAPI + confluent-kafka, {mode}, {workers} uvicorn worker{'s' if workers > 1 else ''}"
            if mode == "fire":
                label += " (NOT durable: 200 before Kafka has it)"
            rows.append((label, measure(peer, f"http://127.0.0.1:{port}/webhook", args.seconds, args.connections)))
            peer.stop()
            services.remove(peer)

        ceiling_out = run([str(args.bin_dir / "wapipe"), "bench", "ingress", "--brokers", brokers, "--requests", "20000", "--concurrency", str(args.connections)])

        worker_out = ""
        if not args.skip_worker:
            worker_out = run([str(args.bin_dir / "examples" / "bench"), str(args.worker_events), "12"], env={"WAPIPE_TEST_BROKERS": brokers}, timeout=1800)
    finally:
        for service in services:
            service.stop()
        subprocess.run(["bash", str(REPO / "scripts/kafka.sh"), "stop"], env={**os.environ, **kafka_env})
        shutil.rmtree(state, ignore_errors=True)

    durable = [r for name, r in rows if "durable, 1" in name][0]
    best_durable = max((r for name, r in rows if "durable" in name and "wapipe" not in name), key=lambda r: r["rps"])
    print()
    print(f"Apache Kafka 4.1 (one KRaft node), {os.cpu_count()} cores shared by broker, load generator and the program measured")
    print(f"wrk -t2 -c{args.connections} -d{args.seconds}s with signed_text.lua (1 event per POST, 697 bytes, 64 senders)")
    print()
    print("| service | requests/s | p50 | p99 | non-2xx | peak RSS | CPU per request | cores used |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, r in rows:
        print(f"| {name} | {r['rps']:.0f} | {r['p50']:.1f} ms | {r['p99']:.1f} ms | {r['non2xx'] + r['errors']} | {r['rss']:.1f} MiB | {r['cpu_ms_per_req']:.3f} ms | {r['cores']:.2f} |")
    print()
    print(f"wapipe-ingress ÷ Python durable (1 worker): {ours['rps'] / durable['rps']:.2f}×; ÷ best Python durable: {ours['rps'] / best_durable['rps']:.2f}×")
    if p99_half:
        print(f"wapipe-ingress at half its wrk rate ({half} req/s, wapipe send mix): p50 {p50_half.group(1) if p50_half else '?'} ms, p99 {p99_half.group(1)} ms, peak RSS {rss_half:.1f} MiB")
    print()
    print("wapipe bench ingress (raw producer ceiling beside the ingress, same broker):")
    print(ceiling_out.strip())
    awaited = re.search(r"(\d+) in flight, each awaited\s+([\d,.]+) records/s", ceiling_out)
    if awaited:
        raw_rate = float(awaited.group(2).replace(",", ""))
        print(
            f"wapipe-ingress under wrk ({args.connections} connections, so {args.connections} one-event POSTs in flight) "
            f"÷ raw producer with {awaited.group(1)} records in flight: {ours['rps']:.0f} ÷ {raw_rate:.0f} = {ours['rps'] / raw_rate:.2f}"
        )
    if worker_out:
        print()
        print("worker (one replica) beside the raw consumer ceiling:")
        print(worker_out.strip())
    return 0


if __name__ == "__main__":
    sys.exit(main())
