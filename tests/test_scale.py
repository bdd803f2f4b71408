"""One more container costs the same with 50 around as with 1: the small
version of `scripts/bench scale`, counted rather than timed (a timed
assertion would flake on a loaded machine).

`run -d -p` and `rm -f` run under a Python audit hook that counts the state
files the command opens, the directories it lists and the processes it
starts; the counts of the last containers may be at most 1.3x those of the
first (before the name and host-port indexes, `run` read every container's
record and every endpoint: ~9 files per existing container). Neither may
read a whole firewall table (`iptables-save`, `nft list`) once other
containers exist: DEL and later ADDs take what they change from the
firewall's owner index (the cost of a read grows with every rule)."""
from __future__ import annotations

import json
import sys

import pytest

from harness import MINIDOCKER

COUNT = 50
RATIO = 1.3
EARLY = range(2, 6)          # the first container also makes the bridge and our chains
LATE = range(COUNT - 4, COUNT)

# Runs minidocker's console script with an audit hook; the counts are written
# to argv[1] by the command's own process (also when it leaves by os._exit,
# never by the shim it forks).
COUNTER = r"""
import json, os, sys
out, script = sys.argv[1], sys.argv[2]
sys.argv = sys.argv[2:]
counts = {"open": 0, "listdir": 0, "spawn": 0, "table_reads": 0}
def hook(event, args):
    if event == "open" and isinstance(args[0], str) and not args[0].endswith((".py", ".pyc", ".so")):
        counts["open"] += 1
    elif event in ("os.listdir", "os.scandir"):
        counts["listdir"] += 1
    elif event in ("subprocess.Popen", "os.posix_spawn", "os.exec"):
        counts["spawn"] += 1
        argv = [str(a) for a in args[1]] if isinstance(args[1], (list, tuple)) else []
        tool = os.path.basename(argv[0]) if argv else ""
        if tool in ("iptables-save", "ip6tables-save") or (tool == "nft" and "list" in argv):
            counts["table_reads"] += 1
me = os.getpid()
def dump():
    if os.getpid() == me:
        with open(out, "w") as fh:
            json.dump(counts, fh)
real_exit = os._exit
def leave(code):
    dump()
    real_exit(code)
os._exit = leave
sys.addaudithook(hook)
try:
    from minidocker.entry import main
    code = main()
finally:
    dump()
sys.exit(code)
"""


def counted(node, tmp_path, env, *args) -> tuple[dict, str]:
    """(counts, stdout) of one minidocker command."""
    out = tmp_path / "counts.json"
    proc = node.run([sys.executable, "-c", COUNTER, str(out), MINIDOCKER, *args], env=env, timeout=120)
    return json.loads(out.read_text()), proc.stdout.strip()


def total(samples: list[dict]) -> int:
    """The worst (largest) sum of counts among the samples."""
    return max(sum(s.values()) for s in samples)


@pytest.mark.parametrize("backend", ["iptables", "nftables"])
def test_run_and_rm_cost_flat_with_50_containers(node, tmp_path, backend):
    env = node.env(MINIDOCKER_FIREWALL=backend)
    node.md("run", "--rm", "--network", "none", "busybox", "true", env=env)  # builds the image
    ids, runs = [], {}
    try:
        for i in range(COUNT):
            args = ("run", "-d", "-p", f"{20000 + i}:80", "busybox", "sleep", "600")
            if i in EARLY or i in LATE:
                runs[i], cid = counted(node, tmp_path, env, *args)
                ids.append(cid)
            else:
                ids.append(node.md(*args, env=env).stdout.strip())
        removals = {}
        for n in range(COUNT, 0, -1):  # newest first: n containers exist when it goes
            cid = ids.pop()
            if n in (COUNT, COUNT - 1, COUNT - 2, 5, 4, 3):
                removals[n] = counted(node, tmp_path, env, "rm", "-f", cid)[0]
            else:
                node.md("rm", "-f", cid, env=env)
    finally:
        if ids:
            node.md("rm", "-f", *ids, env=env, check=False, timeout=300)
    early = total([runs[i] for i in EARLY])
    late = total([runs[i] for i in LATE])
    assert late <= RATIO * early, f"run -d -p: {runs}"
    few = total([removals[n] for n in (5, 4, 3)])
    many = total([removals[n] for n in (COUNT, COUNT - 1, COUNT - 2)])
    assert many <= RATIO * few, f"rm -f: {removals}"
    assert [c["table_reads"] for c in list(runs.values()) + list(removals.values())] == [0] * 14, (runs, removals)

