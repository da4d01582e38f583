"""Asks a Kafka broker for its metadata (Metadata v4, no topics) and exits 0 once it answers
with at least one broker: that is what "ready" means for scripts/kafka.sh.

    python3 probe.py HOST PORT [TIMEOUT_SECONDS]
"""
import socket
import struct
import sys


def metadata_answered(host: str, port: int, timeout: float) -> bool:
    client_id = b"wapipe-probe"
    # Request header v1 (api key 3 = Metadata, version 4, correlation id 1, client id), then the
    # v4 body: an empty topic array (brokers only) and allow_auto_topic_creation = false.
    body = struct.pack(">hhih", 3, 4, 1, len(client_id)) + client_id + struct.pack(">ib", 0, 0)
    with socket.create_connection((host, port), timeout=timeout) as conn:
        conn.settimeout(timeout)
        conn.sendall(struct.pack(">i", len(body)) + body)
        header = b""
        while len(header) < 16:
            chunk = conn.recv(16 - len(header))
            if not chunk:
                return False
            header += chunk
    # size, correlation id, throttle time, then the broker array's length.
    _size, correlation, _throttle, brokers = struct.unpack(">iiii", header)
    return correlation == 1 and brokers > 0


def main() -> int:
    host, port = sys.argv[1], int(sys.argv[2])
    timeout = float(sys.argv[3]) if len(sys.argv) > 3 else 2.0
    try:
        return 0 if metadata_answered(host, port, timeout) else 1
    except OSError:
        return 1


if __name__ == "__main__":
    sys.exit(main())
