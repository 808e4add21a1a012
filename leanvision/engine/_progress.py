"""A rich progress display over epochs and batches, or a silent stand-in with the same methods."""

from __future__ import annotations

from types import TracebackType

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


class TrainProgress:
    """Two bars: epochs, and batches of the current epoch, each with a free-text metrics field."""

    def __init__(self, *, epochs: int, start_epoch: int, enabled: bool) -> None:
        self.enabled = enabled
        if not enabled:
            return
        self._bar = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[info]}"),
            console=Console(stderr=True),
            transient=False,
        )
        self._epochs = self._bar.add_task("epoch", total=epochs, completed=start_epoch, info="")
        self._batches = self._bar.add_task("batch", total=None, info="", visible=False)

    def __enter__(self) -> TrainProgress:
        if self.enabled:
            self._bar.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.enabled:
            self._bar.stop()

    def start_epoch(self, epoch: int, total_batches: int | None) -> None:
        if self.enabled:
            self._bar.reset(self._batches, total=total_batches, visible=True, info="")
            self._bar.update(self._batches, description=f"epoch {epoch + 1} batch")

    def batch(self, info: str | None = None) -> None:
        if self.enabled:
            self._bar.advance(self._batches)
            if info is not None:
                self._bar.update(self._batches, info=info)

    def end_epoch(self, info: str) -> None:
        if self.enabled:
            self._bar.update(self._batches, visible=False)
            self._bar.update(self._epochs, advance=1, info=info)
