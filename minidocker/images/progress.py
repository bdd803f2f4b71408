"""Docker's pull progress: one line per layer, redrawn in place with a bar on
a terminal, one plain line per state change otherwise."""
from __future__ import annotations

import threading
import time


class Progress:
    """Docker's display: one line per layer. On a terminal the lines are
    redrawn in place with a bar; otherwise each state change is one line."""

    def __init__(self, out):
        self.out = out
        self.tty = hasattr(out, "isatty") and out.isatty()
        self.rows: list[str] = []
        self.text: dict[str, str] = {}
        self.lock = threading.Lock()
        self.drawn = 0
        self.last = 0.0

    def add(self, key: str, text: str) -> None:
        with self.lock:
            self.rows.append(key)
            self._set(key, text)

    def set(self, key: str, text: str, force: bool = True) -> None:
        with self.lock:
            self._set(key, text, force)

    def _set(self, key, text, force=True):
        self.text[key] = text
        if not self.tty:
            if force:
                print(f"{key}: {text}", file=self.out, flush=True)
            return
        now = time.monotonic()
        if not force and now - self.last < 0.1:
            return
        self.last = now
        if self.drawn:
            self.out.write(f"\x1b[{self.drawn}A")
        for k in self.rows:
            self.out.write(f"\x1b[2K{k}: {self.text[k]}\n")
        self.drawn = len(self.rows)
        self.out.flush()

    def bytes(self, key: str, done: int, total: int) -> None:
        if not self.tty:
            return
        width = 50
        filled = int(width * done / total) if total else 0
        bar = "=" * max(0, filled - 1) + (">" if filled else "") + " " * (width - filled)
        first = not self.text.get(key, "").startswith("Downloading")
        self.set(key, f"Downloading [{bar}] {_human(done)}/{_human(total)}", force=first)


def _human(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.3g}{unit}"
        n /= 1000
    return str(n)


class Counting:
    """A reader that reports how many bytes went through it."""

    def __init__(self, raw, tick):
        self.raw, self.tick, self.n = raw, tick, 0

    def read(self, n=-1):
        data = self.raw.read(n)
        self.n += len(data)
        self.tick(self.n)
        return data
