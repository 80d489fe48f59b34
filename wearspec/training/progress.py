"""Progress of a training loop: a tqdm bar on a terminal, a plain line every ``runtime.progress_s`` elsewhere.

Under ``torchrun``, in CI or with stderr sent to a file, a bar's carriage returns make an unreadable log and
print nothing useful for minutes; there rank 0 prints ``<stage>: step s/total (p%), windows/s, elapsed, ETA``
at least every ``interval_s`` seconds (and once at the end). Other ranks stay quiet.
"""

from __future__ import annotations

import sys
import time
from typing import Callable, TextIO

from tqdm import tqdm


def format_duration(seconds: float) -> str:
    """``3725.0`` → ``"1h02m05s"``, ``65`` → ``"1m05s"``, ``9.4`` → ``"9s"``."""
    s = int(round(max(seconds, 0.0)))
    h, rem = divmod(s, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s" if m else f"{s}s"


class Progress:
    """``update(step)`` after each step, ``close()`` at the end. ``stream`` (default stderr) decides the form:
    a terminal gets a tqdm bar, anything else progress lines; ``clock`` (seconds, monotonic) is for tests."""

    def __init__(self, name: str, total: int, start: int, windows_per_step: int, is_main: bool,
                 interval_s: float = 30.0, stream: TextIO | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.name, self.total, self.start, self.step = name, int(total), int(start), int(start)
        self.windows_per_step, self.interval_s, self.clock = int(windows_per_step), float(interval_s), clock
        self.stream = stream if stream is not None else sys.stderr
        tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.bar = (tqdm(total=total, initial=min(start, total), desc=name, unit="step", file=self.stream)
                    if is_main and tty else None)
        self.lines = is_main and not tty
        self.t0 = self.last = clock()

    def line(self) -> str:
        """``teacher: step 120/400 (30%), 850.2 windows/s, elapsed 2m05s, ETA 4m52s``."""
        done = self.step - self.start
        elapsed = self.clock() - self.t0
        rate = done / elapsed if elapsed > 0 else 0.0  # steps per second in this process
        eta = (self.total - self.step) / rate if rate > 0 else float("nan")
        pct = 100.0 * self.step / self.total if self.total else 100.0
        return (f"{self.name}: step {self.step}/{self.total} ({pct:.0f}%), {rate * self.windows_per_step:.1f} "
                f"windows/s, elapsed {format_duration(elapsed)}, ETA "
                + (format_duration(eta) if eta == eta else "?"))

    def set_total(self, total: int) -> None:
        """A new total (a time budget fixed the run's length)."""
        self.total = int(total)
        if self.bar is not None:
            self.bar.total = self.total
            self.bar.refresh()

    def update(self, step: int) -> None:
        self.step = int(step)
        if self.bar is not None:
            self.bar.update(1)
        elif self.lines and self.clock() - self.last >= self.interval_s:
            self.last = self.clock()
            print(self.line(), file=self.stream, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        elif self.lines and self.step > self.start:
            print(self.line(), file=self.stream, flush=True)
