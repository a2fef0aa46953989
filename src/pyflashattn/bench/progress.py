"""A progress bar on stderr: tqdm where it is installed, else a one-line counter.

Shown only when stderr is a terminal, so logs and captured output stay clean.
"""
from __future__ import annotations

import sys
from typing import Optional, TextIO


class ProgressBar:
    """``start(total)``, ``step(label)`` before each cell, ``close()``."""

    def __init__(self, enabled: Optional[bool] = None, stream: Optional[TextIO] = None):
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self._bar = None
        self._done = 0
        self._total = 0

    def start(self, total: int) -> None:
        self._total, self._done = total, 0
        if not self.enabled:
            return
        try:
            from tqdm import tqdm
        except ImportError:
            return
        self._bar = tqdm(total=total, file=self.stream, unit="cell", leave=False, dynamic_ncols=True)

    def step(self, label: str) -> None:
        if not self.enabled:
            return
        if self._bar is not None:
            if self._done:
                self._bar.update(1)
            self._bar.set_description_str(label)
        else:
            self.stream.write(f"\r\033[K[{self._done + 1}/{self._total}] {label}")
            self.stream.flush()
        self._done += 1

    def close(self) -> None:
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.update(1 if self._done else 0)
            self._bar.close()
        else:
            self.stream.write("\r\033[K")
            self.stream.flush()
