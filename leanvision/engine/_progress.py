"""Progress: rich bars on a terminal, one short plain line per epoch in a log, or nothing."""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sized
from types import TracebackType
from typing import TypeVar

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

T = TypeVar("T")


def epoch_summary(row: dict[str, float]) -> str:
    """``loss 0.4321 acc 0.876 val_loss 0.5012 val_acc 0.851 12.3s``: the metrics of one epoch, short."""
    parts = [f"loss {row['train_loss']:.4f}"]
    if not math.isnan(row.get("train_acc", math.nan)):
        parts.append(f"acc {row['train_acc']:.3f}")
    if "val_acc" in row:
        parts.append(f"val_loss {row['val_loss']:.4f} val_acc {row['val_acc']:.3f}")
    if "epoch_time_s" in row:
        parts.append(f"{row['epoch_time_s']:.1f}s")
    return " ".join(parts)


class TrainProgress:
    """Epoch and batch bars when stderr is a terminal; otherwise one plain line per epoch (fits 80 columns)."""

    def __init__(self, *, epochs: int, start_epoch: int, enabled: bool, console: Console | None = None) -> None:
        self.enabled = enabled
        self._epochs_total = epochs
        self._console = console or Console(stderr=True)
        # A live bar in a file or CI log is redrawn into a mess of cut-off lines: print lines there instead.
        self._live = enabled and self._console.is_terminal
        if not self._live:
            return
        self._bar = Progress(
            TextColumn("{task.description}"),
            BarColumn(bar_width=20),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[info]}"),
            console=self._console,
            transient=False,
        )
        self._epochs = self._bar.add_task("epoch", total=epochs, completed=start_epoch, info="")
        self._batches = self._bar.add_task("batch", total=None, info="", visible=False)

    def __enter__(self) -> TrainProgress:
        if self._live:
            self._bar.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._live:
            self._bar.stop()

    def start_epoch(self, epoch: int, total_batches: int | None) -> None:
        if self._live:
            self._bar.reset(self._batches, total=total_batches, visible=True, info="")
            self._bar.update(self._batches, description=f"epoch {epoch + 1} batch")

    def batch(self, info: str | None = None) -> None:
        if self._live:
            self._bar.advance(self._batches)
            if info is not None:
                self._bar.update(self._batches, info=info)

    def end_epoch(self, epoch: int, row: dict[str, float]) -> None:
        if not self.enabled:
            return
        info = epoch_summary(row)
        if self._live:
            self._bar.update(self._batches, visible=False)
            self._bar.update(self._epochs, advance=1, info=info)
        else:
            self._console.print(f"epoch {epoch + 1}/{self._epochs_total} {info}", soft_wrap=True, highlight=False)


def track(items: Iterable[T], *, description: str, enabled: bool, total: int | None = None) -> Iterator[T]:
    """``items`` with a bar on a terminal that disappears when done; nothing in a log or when not ``enabled``."""
    console = Console(stderr=True)
    if not (enabled and console.is_terminal):
        yield from items
        return
    if total is None and isinstance(items, Sized):
        total = len(items)
    bar = Progress(TextColumn("{task.description}"), BarColumn(bar_width=20), MofNCompleteColumn(),
                   TimeElapsedColumn(), TimeRemainingColumn(), console=console, transient=True)  # fmt: skip
    with bar:
        task = bar.add_task(description, total=total)
        for item in items:
            yield item
            bar.advance(task)
