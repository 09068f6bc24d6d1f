"""Progress of long management commands (reconcile, backfill), on stderr.

On a terminal: a progress bar per phase (rich). Otherwise (a log, a pipe, cron): one plain
line at most every `interval` seconds, and one when a phase ends, with done/total, the rate
and the time left. Never styled as an error: progress is not a failure.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TextIO


@dataclass
class _Phase:
    started: float
    first_done: int  # done when first seen (a resumed backfill starts above 0)
    last_line: float
    ended: bool = False


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def progress_line(
    phase: str, done: int, total: int, *, elapsed: float, counted: int, unit: str,
    approximate: bool = False,
) -> str:  # fmt: skip
    """`phase: done/total unit (pct), rate unit/s, ETA`; `counted` = done during `elapsed`."""
    shown_total = f"~{total:,}" if approximate else f"{total:,}"
    text = f"{phase}: {done:,}/{shown_total} {unit}" if total else f"{phase}: {done:,} {unit}"
    if total:
        text += f" ({100 * done / total:.0f}%)"
    rate = counted / elapsed if elapsed > 0 else 0.0
    text += f", {rate:,.0f} {unit}/s"
    if total and done >= total:
        text += f", done in {_duration(elapsed)}"
    elif total and rate > 0:
        text += f", ETA {_duration((total - done) / rate)}"
    return text


class Progress:
    """update(phase, done, total) as work advances; close() at the end (ends any bar)."""

    def __init__(
        self,
        stream: TextIO,
        *,
        enabled: bool = True,
        tty: bool | None = None,
        interval: float = 5.0,
        unit: str | dict[str, str] = "items",
        approximate: Callable[[str], bool] = lambda phase: False,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.stream = stream
        self.enabled = enabled
        self.tty = stream.isatty() if tty is None else tty
        self.interval = interval
        self.unit = unit
        self.approximate = approximate
        self.clock = clock
        self.phases: dict[str, _Phase] = {}
        self._bar = None
        self._tasks: dict[str, int] = {}

    def _unit(self, phase: str) -> str:
        return self.unit if isinstance(self.unit, str) else self.unit.get(phase, "items")

    def update(self, phase: str, done: int, total: int | None = None) -> None:
        if not self.enabled:
            return
        total = total or 0
        now = self.clock()
        state = self.phases.get(phase)
        if state is None:
            state = self.phases[phase] = _Phase(started=now, first_done=done, last_line=now)
        if self.tty:
            self._bar_update(phase, done, total)
            return
        if state.ended:
            return
        finished = bool(total) and done >= total
        if not finished and now - state.last_line < self.interval:
            return
        state.last_line = now
        state.ended = finished
        line = progress_line(
            phase, done, total, elapsed=now - state.started, counted=done - state.first_done,
            unit=self._unit(phase), approximate=self.approximate(phase),
        )  # fmt: skip
        self.stream.write(line + "\n")
        self.stream.flush()

    def _bar_update(self, phase: str, done: int, total: int) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            TaskProgressColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )
        from rich.progress import Progress as Bar

        if self._bar is None:
            self._bar = Bar(
                TextColumn("{task.description}"),
                BarColumn(complete_style="blue", finished_style="green"),  # never red
                MofNCompleteColumn(),
                TaskProgressColumn(),
                TextColumn("{task.fields[rate]}"),
                TimeElapsedColumn(),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                console=Console(file=self.stream, highlight=False),
            )
            self._bar.start()
        if phase not in self._tasks:
            self._tasks[phase] = self._bar.add_task(phase, total=total or None, rate="")
        state = self.phases[phase]
        elapsed = self.clock() - state.started
        rate = (done - state.first_done) / elapsed if elapsed > 0 else 0.0
        self._bar.update(
            self._tasks[phase], completed=done, total=total or None,
            rate=f"{rate:,.0f} {self._unit(phase)}/s",
        )  # fmt: skip

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
