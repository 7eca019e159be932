"""Progress on the terminal: a bar per item, or a line per change of state when it is not a terminal."""

from __future__ import annotations

from rich.markup import escape
from rich.progress import BarColumn, TaskID, TextColumn, TimeElapsedColumn
from rich.progress import Progress as ProgressBars

from wallwhale_client.aio import Progress
from wallwhale_client.cli.output import Output, size_text
from wallwhale_client.errors import WallWhaleError


class ProgressView:
    """One bar per item on a terminal; elsewhere (a log, a pipe) one line per change of state."""

    def __init__(self, output: Output):
        self.console = output.err
        self.live = not output.json and self.console.is_terminal
        self.quiet = output.json
        self.bars = ProgressBars(
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.percentage:>3.0f}%"),
            TextColumn("{task.fields[state]}"),
            TextColumn("{task.fields[amount]}"),
            TimeElapsedColumn(),
            console=self.console,
            disable=not self.live,
        )
        self._last: dict[TaskID, str] = {}
        self._names: dict[TaskID, str] = {}

    def add(self, item: str) -> TaskID:
        task = self.bars.add_task(item, total=100, state="CREATING", amount="")
        self._names[task] = item
        return task

    def update(self, task: TaskID, update: Progress) -> None:
        download = update.download
        stage = update.state
        p = download.progress
        if update.archive_bytes:
            stage = "FETCHING" if update.fetched_bytes < update.archive_bytes else "SAVED"
            percent, done, total = (
                100 * update.fetched_bytes / update.archive_bytes,
                update.fetched_bytes,
                update.archive_bytes,
            )
        else:
            percent, done, total = p.percent, p.bytes_downloaded, p.bytes_total
        amount = f"{size_text(done)} of {size_text(total)}" if total else ""
        self.bars.update(task, completed=percent, state=stage, amount=amount)
        if not self.live and not self.quiet and self._last.get(task) != stage:
            self._last[task] = stage
            self.console.print(f"{self._names[task]} {download.id} {stage} {percent:.0f}%", markup=False)

    def fail(self, task: TaskID, error: WallWhaleError) -> None:
        self.bars.update(task, state=f"[red]{escape(error.reason or 'FAILED')}[/red]")
        if not self.live and not self.quiet:
            self.console.print(f"{self._names[task]} FAILED {error}", markup=False)
