"""THE progress display, for training and for streaming predict: rich's bar on a terminal, plain lines in a log.

    with Progress("training", total=1000, completed=0, live=sys.stdout.isatty(), stream=sys.stdout) as progress:
        progress.update(advance=1, status="loss 0.4121  lr 2.00e-05  96.3 samples/s")
        progress.say("eval step 100: accuracy 0.8812")       # above the bar, or a plain line in a log

A log gets no carriage returns: the caller decides when a plain line is worth printing (every N steps, every 30 s).
"""

from __future__ import annotations

import sys
from typing import TextIO


class Progress:
    def __init__(self, label: str, *, total: float | None = None, completed: float = 0.0, live: bool = False, stream: TextIO | None = None, keep: bool = False):
        """live: a bar (on a terminal); else `say` prints plain lines. keep: the bar stays on screen when done."""
        self.stream = stream if stream is not None else sys.stderr
        self.bar = None
        if live:
            from rich.console import Console
            from rich.progress import BarColumn, Progress as Bar, TaskProgressColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn

            sized = [BarColumn(), TaskProgressColumn()] if total else []
            columns = [TextColumn(label), *sized, TextColumn("{task.fields[status]}"), TimeElapsedColumn(), *([TimeRemainingColumn()] if total else [])]
            self.bar = Bar(*columns, console=Console(file=self.stream, highlight=False), transient=not keep)
            self.task = self.bar.add_task(label, total=total, completed=completed, status="")
            self.bar.start()

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def live(self) -> bool:
        return self.bar is not None

    def update(self, *, advance: float | None = None, completed: float | None = None, status: str = "") -> None:
        if self.bar is not None:
            self.bar.update(self.task, advance=advance, completed=completed, status=status)

    def say(self, text: str) -> None:
        if self.bar is not None:
            self.bar.console.print(text, markup=False, soft_wrap=True)
        else:
            print(text, file=self.stream, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None
