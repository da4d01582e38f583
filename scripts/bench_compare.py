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
  4. The worker, on --worker-events events produced through the ingress by `wapipe send` (10
     events per POST, 1000 users, 12 partitions), each consumer drained from the start with its
     own group (and schema): the raw rdkafka consumer ceiling, the worker with the log sink, the
     PostgreSQL sink (default settings, synchronous commit) beside the usual Python worker
     (../shared/peers/python_worker.py) and the database's own ceiling for the same rows (COPY
     from one client), the SQLite sink.
  5. End to end, one ingress and one worker (PostgreSQL): `wapipe send` at half and at a quarter
     of the worker's PostgreSQL rate, p50/p99 from the ingress receiving an event to its row
     being committed, beside the same to a plain consumer having the record (the ingress's,
     the producer's and Kafka's part), each for the first and the last fifth of the run.
  6. Peak RSS of a worker (log sink) draining a backlog of --rss-events records: with the
     default buffer (and the librdkafka prefetch the worker sizes from it), a smaller buffer,
     and the default buffer with librdkafka's own prefetch defaults (the drain rate printed
     beside each).
  7. Instructions per event (callgrind, when valgrind is installed; --skip-callgrind to skip):
     the worker with the log sink and the raw consumer, each on 20,000 and 60,000 of the
     bench's own text messages; the difference of the two runs over 40,000 events, so start-up
     and group join cancel.

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
    parser.add_argument("--worker-events", type=int, default=120000, help="events for the worker comparison (through the ingress)")
    parser.add_argument("--rss-events", type=int, default=1000000, help="backlog for the worker's peak RSS (0 = skip)")
    parser.add_argument("--steady-events", type=int, default=1000000, help="events (through the ingress, the same mix) for the raw consumer and the log sink draining a long backlog (0 = skip)")
    parser.add_argument("--skip-worker", action="store_true")
    parser.add_argument("--skip-callgrind", action="store_true", help="skip the instructions-per-event stage (valgrind)")
    parser.add_argument("--kafka-port", type=int, default=0, help="port of the private broker (its controller uses port + 1; default: a free one)")
    parser.add_argument(
        "--database-url",
        default=os.environ.get("WAPIPE_BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/test"),
        help="PostgreSQL for the worker stages (default $WAPIPE_BENCH_DATABASE_URL, else 127.0.0.1:5432)",
    )
    parser.add_argument("--state-dir", type=Path, default=None, help="where the broker's temporary state dir is made (default: the system's temporary dir)")
    args = parser.parse_args()
    for tool in ("wrk", "java"):
        if not shutil.which(tool):
            raise SystemExit(f"bench: {tool} is not installed (apt-get install {tool}; scripts/install-kafka.sh)")
    try:
        import confluent_kafka, fastapi, psycopg2, uvicorn  # noqa: F401
    except ImportError as error:
        raise SystemExit(f"bench: the Python peers need fastapi, uvicorn, confluent-kafka and psycopg2: pip install fastapi uvicorn confluent-kafka psycopg2-binary ({error})")

    if args.state_dir:
        args.state_dir.mkdir(parents=True, exist_ok=True)
    state = Path(tempfile.mkdtemp(prefix="wapipe-bench-", dir=args.state_dir))
    kafka_port = args.kafka_port or free_port()
    kafka_env = {"WAPIPE_STATE_DIR": str(state), "KAFKA_HEAP_OPTS": "-Xms512m -Xmx1g"}
    brokers = run(["bash", str(REPO / "scripts/kafka.sh"), "start", str(kafka_port)], env=kafka_env).strip()
    services: list[Service] = []
    rows: list[tuple[str, dict[str, float]]] = []
    try:
        topic = "bench_raw"
        run([str(args.bin_dir / "wapipe"), "topics", "create", "--kafka-brokers", brokers, "--topic", topic, "--partitions", "12"])

        port, admin_port = free_port(), free_port()
        ingress = Service(
            "wapipe-ingress",
            [str(args.bin_dir / "wapipe-ingress")],
            {"WAPIPE_LISTEN": f"127.0.0.1:{port}", "WAPIPE_ADMIN_LISTEN": f"127.0.0.1:{admin_port}", "WAPIPE_APP_SECRET": SECRET, "WAPIPE_TOPIC": topic, "WAPIPE_KAFKA_BROKERS": brokers, "RUST_LOG": "warn"},
            REPO,
            f"http://127.0.0.1:{admin_port}/readyz",
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

        worker = None
        if not args.skip_worker:
            worker = worker_stages(args, brokers, state, services)
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
    if worker:
        print_worker(worker)
    return 0


def figure(pattern: str, text: str) -> float | None:
    match = re.search(pattern, text)
    return float(match.group(1).replace(",", "")) if match else None


def start_ingress(args: argparse.Namespace, brokers: str, topic: str, state: Path, services: list[Service]) -> tuple[Service, str]:
    port, admin_port = free_port(), free_port()
    ingress = Service(
        f"wapipe-ingress ({topic})",
        [str(args.bin_dir / "wapipe-ingress")],
        {"WAPIPE_LISTEN": f"127.0.0.1:{port}", "WAPIPE_ADMIN_LISTEN": f"127.0.0.1:{admin_port}", "WAPIPE_APP_SECRET": SECRET, "WAPIPE_TOPIC": topic, "WAPIPE_KAFKA_BROKERS": brokers, "RUST_LOG": "warn"},
        REPO,
        f"http://127.0.0.1:{admin_port}/readyz",
        state / f"ingress-{topic}.log",
    )
    services.append(ingress)
    return ingress, f"http://127.0.0.1:{port}/webhook"


def send(args: argparse.Namespace, url: str, requests: int, rate: float | None = None) -> str:
    argv = [str(args.bin_dir / "wapipe"), "send", "--url", url, "--secret", SECRET, "--requests", str(requests), "--batch", "10", "--users", "1000", "--concurrency", "64"]
    if rate:
        argv += ["--rate", f"{rate:.0f}"]
    return run(argv)


def fill_through_ingress(args: argparse.Namespace, brokers: str, topic: str, state: Path, services: list[Service], events: int) -> int:
    """Creates `topic` and sends about `events` events (10 a POST) through an ingress of its own;
    returns how many were acknowledged."""
    run([str(args.bin_dir / "wapipe"), "topics", "create", "--kafka-brokers", brokers, "--topic", topic, "--partitions", "12"])
    ingress, url = start_ingress(args, brokers, topic, state, services)
    sent = send(args, url, max(1, events // 10))
    ingress.stop()
    services.remove(ingress)
    acknowledged = int(figure(r"events\s+(\d+) acknowledged", sent) or 0)
    if acknowledged == 0:
        raise SystemExit(f"bench: no event reached {topic}:\n{sent}")
    return acknowledged


def worker_stages(args: argparse.Namespace, brokers: str, state: Path, services: list[Service]) -> dict[str, object]:
    """Stages 4-6. Each consumer drains the same topic from the start in a group of its own."""
    bench = str(args.bin_dir / "examples" / "bench")
    wapipe = str(args.bin_dir / "wapipe")
    out: dict[str, object] = {}
    topic = "bench_worker"
    events = fill_through_ingress(args, brokers, topic, state, services, args.worker_events)
    out["events"] = events
    env = {"WAPIPE_TEST_BROKERS": brokers, "WAPIPE_BENCH_TOPIC": topic, "WAPIPE_BENCH_DATABASE_URL": args.database_url}
    out["bench"] = run([bench, str(events), "12"], env={**env, "WAPIPE_BENCH_STAGES": "raw,log,postgres,sqlite"}, timeout=1200)

    schema = f"py_peer_{os.getpid()}"
    peer = run(
        [sys.executable, str(SHARED / "peers" / "python_worker.py")],
        env={"BOOTSTRAP": brokers, "TOPIC": topic, "GROUP": f"py-peer-{os.getpid()}", "DATABASE_URL": args.database_url.replace("postgres://", "postgresql://", 1), "SCHEMA": schema, "EXIT_AFTER": str(events)},
        timeout=1200,
    )
    out["python"] = peer

    # The raw consumer drains the table's backlog in a fraction of a second, so its figure
    # there is mostly how fast it starts; the same two on a backlog long enough for a steady rate.
    if args.steady_events:
        steady_topic = "bench_steady"
        steady = fill_through_ingress(args, brokers, steady_topic, state, services, args.steady_events)
        steady_env = {"WAPIPE_TEST_BROKERS": brokers, "WAPIPE_BENCH_TOPIC": steady_topic}
        out["steady"] = (steady, run([bench, str(steady), "12"], env={**steady_env, "WAPIPE_BENCH_STAGES": "raw,log"}, timeout=1200))

    # End to end at half (and a quarter of) the worker's PostgreSQL rate, one ingress and one
    # worker, each on a topic of its own.
    pg_rate = figure(r"worker, postgres sink \(synchronous commit\):\s+([\d.]+)", str(out["bench"])) or 1000.0
    out["e2e"] = [end_to_end(args, brokers, state, services, f"bench_e2e_{share}", pg_rate / share) for share in (2, 4)]

    if args.rss_events:
        rss_topic = "bench_rss"
        run([wapipe, "topics", "create", "--kafka-brokers", brokers, "--topic", rss_topic, "--partitions", "12"])
        rss_env = {"WAPIPE_TEST_BROKERS": brokers, "WAPIPE_BENCH_TOPIC": rss_topic}
        run([bench, str(args.rss_events), "12"], env={**rss_env, "WAPIPE_BENCH_STAGES": "produce"}, timeout=1200)
        out["rss"] = [
            (label, run([bench, str(args.rss_events), "12"], env={**rss_env, **extra, "WAPIPE_BENCH_STAGES": "log"}, timeout=1200))
            for label, extra in RSS_SETTINGS
        ]
        out["rss_events"] = args.rss_events

    if not args.skip_callgrind and shutil.which("valgrind"):
        out["callgrind"] = instructions_per_event(bench, wapipe, brokers, state)
    return out


# The buffer settings the backlog's peak RSS is measured with: (label, bench environment).
RSS_SETTINGS = [
    ("--max-buffered 4000 (the log and postgres sinks' default; the prefetch it sets: 10,000 messages a partition, 16,000 KiB)", {"WAPIPE_BENCH_MAX_BUFFERED": "4000"}),
    ("--max-buffered 1000 (prefetch 2,500 messages a partition, 4,096 KiB)", {"WAPIPE_BENCH_MAX_BUFFERED": "1000"}),
    (
        "--max-buffered 4000 with librdkafka's own prefetch defaults (100,000 messages a partition, 64 MiB)",
        {"WAPIPE_BENCH_MAX_BUFFERED": "4000", "WAPIPE_BENCH_KAFKA_OPTIONS": "queued.max.messages.kbytes=65536,queued.min.messages=100000"},
    ),
]


def end_to_end(args: argparse.Namespace, brokers: str, state: Path, services: list[Service], topic: str, events_per_s: float) -> dict[str, object]:
    """`wapipe send` at `events_per_s` for about ten seconds through one ingress into one worker."""
    bench = str(args.bin_dir / "examples" / "bench")
    rate = max(1.0, events_per_s / 10)
    requests = max(1, int(rate * 10))
    run([str(args.bin_dir / "wapipe"), "topics", "create", "--kafka-brokers", brokers, "--topic", topic, "--partitions", "12"])
    ingress, url = start_ingress(args, brokers, topic, state, services)
    probe = subprocess.Popen([bench, str(requests * 10), "12"], env={**os.environ, "WAPIPE_TEST_BROKERS": brokers, "WAPIPE_BENCH_TOPIC": topic, "WAPIPE_BENCH_STAGES": "e2e", "WAPIPE_BENCH_DATABASE_URL": args.database_url}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert probe.stdout is not None
    lines = []
    for line in probe.stdout:
        lines.append(line)
        if "e2e: ready" in line:
            break
    sent = send(args, url, requests, rate)
    rest, _ = probe.communicate(timeout=600)
    ingress.stop()
    services.remove(ingress)
    return {"out": "".join(lines) + rest, "rate": rate * 10, "send": sent}


def callgrind_instructions(bench: str, brokers: str, topic: str, events: int, stage: str, out: Path) -> int:
    """Instructions the whole bench process ran (every thread) for one stage on `events` records."""
    run(
        ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", bench, str(events), "12"],
        env={"WAPIPE_TEST_BROKERS": brokers, "WAPIPE_BENCH_TOPIC": topic, "WAPIPE_BENCH_STAGES": stage},
        timeout=1800,
    )
    for line in out.read_text().splitlines():
        if line.startswith(("totals:", "summary:")):
            return int(line.split()[1])
    raise SystemExit(f"bench: no totals in {out}")


def instructions_per_event(bench: str, wapipe: str, brokers: str, state: Path) -> dict[str, float]:
    """Instructions per event of the log sink and the raw consumer: the difference of a
    60,000- and a 20,000-event run of the bench's own text messages, over 40,000."""
    wapipe_topics = {}
    for events in (20000, 60000):
        topic = f"bench_callgrind_{events}"
        run([wapipe, "topics", "create", "--kafka-brokers", brokers, "--topic", topic, "--partitions", "12"])
        run([bench, str(events), "12"], env={"WAPIPE_TEST_BROKERS": brokers, "WAPIPE_BENCH_TOPIC": topic, "WAPIPE_BENCH_STAGES": "produce"}, timeout=600)
        wapipe_topics[events] = topic
    per_event = {}
    for stage in ("log", "raw"):
        totals = {events: callgrind_instructions(bench, brokers, topic, events, stage, state / f"callgrind.{stage}.{events}") for events, topic in wapipe_topics.items()}
        per_event[stage] = (totals[60000] - totals[20000]) / 40000
    return per_event


def print_worker(w: dict[str, object]) -> None:
    bench, peer = str(w["bench"]), str(w["python"])
    raw = figure(r"raw rdkafka consumer:\s+([\d.]+)", bench)
    log = figure(r"worker, log sink:\s+([\d.]+)", bench)
    pg = figure(r"worker, postgres sink \(synchronous commit\):\s+([\d.]+)", bench)
    copy = figure(r"ceiling: the same rows by COPY[^:]*:\s+([\d.]+)", bench)
    lite = figure(r"worker, sqlite sink:\s+([\d.]+)", bench)
    py = figure(r"records_per_s=([\d.]+)", peer)
    ratio = lambda a, b: f"{a / b:.2f}" if a and b else "?"
    fmt = lambda v: f"{v:,.0f}" if v else "?"
    print()
    print(f"Worker (one replica, default settings), {w['events']:,} events produced through the ingress by `wapipe send` (10 per POST, 1000 users, 12 partitions); each consumer drains them from the start in a group of its own:")
    print()
    print("| consumer | events/s | ratio |")
    print("| --- | --- | --- |")
    print(f"| ceiling: raw rdkafka consumer, same topic | {fmt(raw)} | |")
    print(f"| wapipe-worker, log sink | {fmt(log)} | {ratio(log, raw)} of the raw consumer |")
    print(f"| wapipe-worker, PostgreSQL sink (synchronous commit, idempotent upserts) | {fmt(pg)} | **{ratio(pg, py)}×** the Python worker; {ratio(pg, copy)} of COPY |")
    print(f"| Python worker (confluent-kafka + psycopg2, 500 rows per transaction, idempotent upserts) | {fmt(py)} | 1 |")
    print(f"| ceiling: the same rows by COPY, one client, one transaction | {fmt(copy)} | |")
    print(f"| wapipe-worker, SQLite sink | {fmt(lite)} | |")
    if "steady" in w:
        steady, text = w["steady"]
        steady_raw = figure(r"raw rdkafka consumer:\s+([\d.]+)", str(text))
        steady_log = figure(r"worker, log sink:\s+([\d.]+)", str(text))
        print()
        print(f"The same two on a longer backlog, {steady:,} events of the same mix (the raw consumer drains the table's in about {w['events'] / raw:.2f} s, so that figure is mostly how fast it starts): raw rdkafka consumer {fmt(steady_raw)} events/s, log sink {fmt(steady_log)} events/s, **{ratio(steady_log, steady_raw)}** of the raw consumer" if raw else "")
    if "callgrind" in w:
        cg = w["callgrind"]
        print()
        print(f"Instructions per event (callgrind, every thread of the process, (60,000-event run - 20,000-event run) / 40,000, the bench's text messages): wapipe-worker with the log sink {cg['log']:,.0f} (target 15,000); ceiling: the raw rdkafka consumer {cg['raw']:,.0f}")
    for run_e2e in w["e2e"]:
        out_e2e = str(run_e2e["out"])
        sent = str(run_e2e["send"])
        achieved = figure(r"events/s\s+([\d.]+)", sent)
        post_p99 = figure(r"latency p99\s+([\d.]+) ms", sent)
        committed = re.search(r"row committed\), (\d+) events: (.*)", out_e2e)
        readable = re.search(r"a plain consumer has it\), (\d+) events: (.*)", out_e2e)
        trend_rows = re.search(r"e2e trend \(row committed\): (.*)", out_e2e)
        trend_readable = re.search(r"e2e trend \(consumer has it\): (.*)", out_e2e)
        print()
        print(f"End to end, one ingress and one worker (PostgreSQL), `wapipe send` asked for {float(run_e2e['rate']):,.0f} events/s ({float(run_e2e['rate']) / pg:.2f} of the worker's PostgreSQL rate above) and got {fmt(achieved)} acknowledged (POST p99 {post_p99} ms):" if pg else "End to end:")
        print(f"- ingress received -> row committed: {committed.group(2) if committed else '?'}")
        print(f"- ingress received -> a plain consumer has the record (ingress, producer, Kafka; before the worker): {readable.group(2) if readable else '?'}")
        if trend_rows and trend_readable:
            print(f"- row committed, {trend_rows.group(1)}")
            print(f"- consumer has it, {trend_readable.group(1)}")
    if "rss" in w:
        print()
        print(f"Peak RSS of the worker process draining a {int(w['rss_events']):,}-record backlog (log sink):")
        for label, text in w["rss"]:
            rss = figure(r"peak RSS: ([\d.]+) MiB", text)
            drained = figure(r"worker, log sink:\s+([\d.]+)", text)
            print(f"- {label}: {rss} MiB (drained at {fmt(drained)} events/s)")


if __name__ == "__main__":
    sys.exit(main())
