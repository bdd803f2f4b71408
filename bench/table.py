"""Timing and the one table format every suite prints."""
from __future__ import annotations

import argparse
import statistics
import subprocess
import time


def minidocker() -> str:
    """The minidocker of this interpreter's environment (.venv/bin), else PATH's."""
    import shutil
    import sys
    from pathlib import Path
    found = Path(sys.executable).parent / "minidocker"
    return str(found) if found.exists() else shutil.which("minidocker") or "minidocker"


def root_or_exit(suite: str) -> None:
    """Every suite makes namespaces, mounts or rules: root only."""
    import os
    import sys
    if os.geteuid() != 0:
        print(f"bench {suite}: must run as root", file=sys.stderr)
        sys.exit(1)


def time_cmd(argv, runs: int, *, env=None, timeout=60, setup=None, check=True) -> list[float]:
    """Wall-clock seconds of `runs` executions of argv (no shell)."""
    samples = []
    for _ in range(runs):
        if setup:
            setup()
        start = time.perf_counter()
        proc = subprocess.run(argv, env=env, capture_output=True, timeout=timeout)
        samples.append(time.perf_counter() - start)
        if check and proc.returncode != 0:
            raise RuntimeError(f"{argv!r} failed ({proc.returncode}): {proc.stderr.decode()[-400:]}")
    return samples


def median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000.0


def print_table(title: str, rows: list[tuple[str, float | None, str, float | None]]) -> None:
    """rows: (operation, minidocker ms, peer name, peer ms); None = not measured."""
    print(f"\n{title}")
    header = f"{'operation':44} {'minidocker':>11} {'peer':>22} {'peer ms':>9} {'ratio':>7}"
    print(header)
    print("-" * len(header))
    for op, ours, peer, theirs in rows:
        o = f"{ours:9.1f}ms" if ours is not None else "       n/a"
        t = f"{theirs:7.1f}ms" if theirs is not None else "      n/a"
        r = f"{ours / theirs:6.2f}x" if ours and theirs else "    n/a"
        print(f"{op:44} {o:>11} {peer:>22} {t:>9} {r:>7}")


def print_columns(title: str, header: list[str], rows: list[list[str]]) -> None:
    """A table of ready-made cells: the first column left-aligned, the rest right."""
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]

    def line(cells):
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                         for i, (c, w) in enumerate(zip(cells, widths))).rstrip()
    print(f"\n{title}")
    print(line(header))
    print("-" * len(line(header)))
    for row in rows:
        print(line(row))


class OneLineParser(argparse.ArgumentParser):
    """`scripts/bench SUITE`'s options; an error is one line, `bench SUITE:
    message` (argparse's own prints the usage first), exit status 2."""

    def __init__(self, suite: str, **kw):
        super().__init__(prog=f"scripts/bench {suite}", **kw)
        self.suite = suite

    def error(self, message):
        self.exit(2, f"bench {self.suite}: {message}\n")
