"""Uploads and downloads with a progress bar (sizes, speed, time left) on a terminal's stderr.

A download is written to a temporary file beside the target and renamed over it only once every byte
has arrived, so a failed download (an unknown id, a dropped connection, Ctrl-C) leaves an existing file
as it was.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from the0.client.cli.runtime import current


@contextlib.contextmanager
def progress_bar(label: str, total: int | None) -> Iterator[Callable[[int], None]]:
    """Yield ``advance(n)``; a bar on a terminal, nothing when stderr is not one."""
    console = current().err
    if not console.is_terminal:
        yield lambda _n: None
        return
    columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
               TimeRemainingColumn())
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task(label, total=total)
        yield lambda n: progress.advance(task, n)


def download_to(target: Path, chunks: Iterable[bytes], *, total: int | None, label: str) -> int:
    """Write ``chunks`` to ``target`` atomically; returns the size written."""
    target = target.resolve()
    fd, temporary = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    size = 0
    try:
        with os.fdopen(fd, "wb") as file, progress_bar(label, total) as advance:
            for chunk in chunks:
                file.write(chunk)
                size += len(chunk)
                advance(len(chunk))
            file.flush()
            os.fsync(file.fileno())
        os.chmod(temporary, 0o644 & ~_umask())
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return size


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
