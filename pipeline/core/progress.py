"""Driver-side progress bar (rich): shards and samples, with an error count."""

from __future__ import annotations

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


class BuildProgress:
    def __init__(self, shards: int, samples: int, enabled: bool = True):
        self.enabled = enabled
        self.errors = 0
        self._progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[note]}"), TimeElapsedColumn(), TimeRemainingColumn(),
            disable=not enabled, transient=False)
        self._shards = self._progress.add_task("shards ", total=shards, note="")
        self._samples = self._progress.add_task("samples", total=samples, note="")

    def __enter__(self) -> BuildProgress:
        self._progress.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._progress.__exit__(*exc)

    def advance(self, samples: int, errors: int = 0) -> None:
        self.errors += errors
        self._progress.advance(self._shards)
        note = f"[red]{self.errors} errors" if self.errors else ""
        self._progress.update(self._samples, advance=samples, note=note)
