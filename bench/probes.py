"""What the data-path suites (`bench cluster`, `bench datapath`) send and
how they read it: iperf3's TCP throughput, and 64-byte request/response
round trips on one TCP connection against a socat echo server.

The latency client is a Python socket in a thread that entered the client's
network namespace (bench.netns.in_netns): no process starts inside the
timed loop, and the same client serves every path (a container, the host,
the outside), so the paths differ only in the network between the ends.
"""
from __future__ import annotations

import json
import socket
import statistics
import time

from bench.netns import in_netns

IPERF3 = "/usr/bin/iperf3"
IPERF_PORT = 5201
ECHO_PORT = 7
#: socat's PIPE address echoes what it reads (one forked socat per
#: connection, no further process per request).
ECHO_SERVER = ["socat", f"TCP-LISTEN:{ECHO_PORT},fork,reuseaddr", "PIPE"]
IPERF_SERVER = ["iperf3", "-s", "-p", str(IPERF_PORT)]
MESSAGE = 64
WARMUP = 50


def iperf3_client(host: str, port: int, seconds: float) -> list[str]:
    """argv of one iperf3 TCP test towards host:port, its report as JSON."""
    return ["iperf3", "-c", host, "-p", str(port), "-t", f"{seconds:g}", "-J"]


def gbps(report: str) -> float:
    """Gbit/s the receiver counted, from `iperf3 -J`'s report; a failed
    test's own error is raised."""
    try:
        data = json.loads(report)
    except ValueError:
        raise RuntimeError(f"iperf3 gave no report: {report.strip()[-200:]!r}") from None
    if data.get("error"):
        raise RuntimeError(f"iperf3: {data['error']}")
    return data["end"]["sum_received"]["bits_per_second"] / 1e9


def round_trips(netns: str, host: str, port: int = ECHO_PORT, rounds: int = 2000,
                timeout: float = 5.0) -> list[float]:
    """Seconds of each of `rounds` 64-byte request/response exchanges on one
    TCP connection (after WARMUP untimed ones), from the namespace at netns."""
    def client() -> list[float]:
        msg, rtts = b"x" * MESSAGE, []
        with socket.create_connection((host, port), timeout=timeout) as s:
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            for i in range(WARMUP + rounds):
                start = time.perf_counter()
                s.sendall(msg)
                got = 0
                while got < MESSAGE:
                    chunk = s.recv(MESSAGE - got)
                    if not chunk:
                        raise RuntimeError(f"echo server at {host}:{port} closed the connection")
                    got += len(chunk)
                if i >= WARMUP:
                    rtts.append(time.perf_counter() - start)
        return rtts
    return in_netns(netns, client)


def percentile(samples: list[float], q: float) -> float:
    """The q-th percentile (0-100) of samples, nearest rank."""
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]


def median_us(samples: list[float]) -> float:
    return statistics.median(samples) * 1e6
