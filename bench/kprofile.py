"""Where the CPU of a data-path test goes: `perf record -a` (the software
cpu-clock event, so it works in a VM without hardware counters) while the
test runs, then the samples of the test's own processes, by the function
each sample was taken in (self time), sorted into the families a container
network adds to a plain routed path: the bridge, br_netfilter (bridged
frames sent through the IP hooks), conntrack, the netfilter hook core and
rule evaluation (nf_tables, which iptables-nft also runs). Softirq work done
in the test's own context (most of a veth path's receive side) counts; work
in ksoftirqd does not, so the figures are a floor.
"""
from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import tempfile
import time
from collections import Counter

PERF = "perf"
FREQUENCY = 999             # samples per second per CPU: one sample ~ 1 ms of CPU
#: family -> the kernel functions (by name prefix) it holds; first match wins.
FAMILIES = (
    ("br_netfilter", re.compile(r"(br_nf_|brnf_|nf_bridge_|setup_pre_routing)")),
    ("bridge", re.compile(r"_*br_")),
    ("conntrack", re.compile(r"_*(nf_conntrack|nf_ct_|tcp_in_window|hash_conntrack|nf_nat)")),
    ("rules", re.compile(r"_*(nft_|nf_tables|ipt_|xt_|ip6t_|ebt_)")),
    ("nf hooks", re.compile(r"_*nf_")),
)
START_TIMEOUT = 5.0
STOP_TIMEOUT = 30


class PerfMissing(RuntimeError):
    pass


def family(symbol: str) -> str | None:
    """The family of the kernel function `symbol`, None for anything else."""
    for name, pattern in FAMILIES:
        if pattern.match(symbol):
            return name
    return None


def tally(script: str, comm: str) -> tuple[int, Counter]:
    """(samples of processes named comm, samples per family) from the text
    of `perf script -F comm,ip,sym` (one sample a line: comm, address, symbol)."""
    total, families = 0, Counter()
    for line in script.splitlines():
        fields = line.split()
        if not fields or fields[0] != comm:
            continue
        total += 1
        name = family(fields[-1]) if len(fields) > 1 else None
        if name:
            families[name] += 1
    return total, families


class Profile:
    """One recorded test: its samples and what it moved."""

    def __init__(self, samples: int, families: Counter, gigabytes: float):
        self.samples, self.families, self.gigabytes = samples, families, gigabytes

    def cpu_ms_per_gb(self) -> float | None:
        return self.samples * 1000 / FREQUENCY / self.gigabytes if self.gigabytes > 0 else None


@contextlib.contextmanager
def recording(comm: str):
    """Record the whole machine while the body runs; yields a list that gets
    (samples of comm, per family) when the body ends. perf is stopped (and
    its data removed) also on an error or Ctrl-C."""
    result: list = []
    with tempfile.TemporaryDirectory(prefix="mdbench-perf-") as tmp:
        data = os.path.join(tmp, "perf.data")
        try:
            proc = subprocess.Popen([PERF, "record", "-a", "-q", "-F", str(FREQUENCY), "-o", data],
                                    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.PIPE, text=True)
        except FileNotFoundError:
            raise PerfMissing("perf is missing (Debian package linux-perf; scripts/bootstrap "
                              "installs it)") from None
        try:
            _wait_started(proc, data)
            yield result
        finally:
            proc.send_signal(signal.SIGINT)
            try:
                _, err = proc.communicate(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.communicate()
                raise RuntimeError("perf record did not stop") from None
        if proc.returncode not in (0, -signal.SIGINT, 130):
            raise RuntimeError(f"perf record: {err.strip()[-200:] or proc.returncode}")
        script = subprocess.run([PERF, "script", "-i", data, "-F", "comm,ip,sym"],
                                capture_output=True, text=True, timeout=STOP_TIMEOUT * 4)
        if script.returncode:
            raise RuntimeError(f"perf script: {script.stderr.strip()[-200:]}")
        result.extend(tally(script.stdout, comm))


def _wait_started(proc: subprocess.Popen, data: str) -> None:
    """Until perf has written its file's header (it records from then on)."""
    deadline = time.monotonic() + START_TIMEOUT
    while not (os.path.exists(data) and os.path.getsize(data) > 0):
        if proc.poll() is not None:
            raise RuntimeError(f"perf record: {proc.stderr.read().strip()[-200:] or proc.returncode}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"perf record wrote nothing in {START_TIMEOUT:g}s")
        time.sleep(0.02)
