"""Progress of a long stage: done / total, rate and ETA. A tqdm bar on a terminal; in a log (not
a TTY) a plain line at most every `every_s` seconds and at the end, so logs stay readable."""
from __future__ import annotations

import sys
import time


class Progress:
    def __init__(self, total: int, *, desc: str, unit: str, done: int = 0, every_s: float = 30.0, stream=None):
        self.total, self.done, self.desc, self.unit = total, done, desc, unit
        self.stream = stream or sys.stderr
        self.start = self.last = time.monotonic()
        self.new, self.every_s = 0, every_s
        self.bar = None
        if self.stream.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=done, desc=desc, unit=unit, file=self.stream, dynamic_ncols=True)

    def update(self, n: int = 1, note: str = "", *, new: bool = True) -> None:
        """`n` more done; `new=False` for work found already done (a resume), kept out of the rate."""
        self.done += n
        self.new += n if new else 0
        if self.bar is not None:
            self.bar.set_postfix_str(note, refresh=False)
            self.bar.update(n)
            return
        now = time.monotonic()
        if now - self.last >= self.every_s or self.done >= self.total:
            self.last = now
            self.write(self.line() + (f" | {note}" if note else ""))

    def write(self, msg: str) -> None:
        """A message that does not break the bar."""
        if self.bar is not None:
            self.bar.write(msg, file=self.stream)
        else:
            print(msg, file=self.stream, flush=True)

    def rate_per_hour(self) -> float:
        return self.new / max(time.monotonic() - self.start, 1e-9) * 3600

    def line(self) -> str:
        rate = self.rate_per_hour()
        eta = (self.total - self.done) / rate * 3600 if rate else float("inf")
        pct = 100 * self.done / self.total if self.total else 100.0
        return (f"{self.desc}: [{self.done}/{self.total} {pct:5.1f}%] {rate:.0f} {self.unit}/h, "
                f"ETA {fmt_seconds(eta)}")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def fmt_seconds(seconds: float) -> str:
    if seconds == float("inf"):
        return "?"
    h, rem = divmod(int(seconds), 3600)
    return f"{h}h{rem // 60:02d}m" if h else f"{rem // 60}m{rem % 60:02d}s"
