"""Atomic file output: write to a temp file beside the target, fsync, then rename over it.

A crash, a full disk or a concurrent reader never sees a half-written output: the target is either the previous
complete file or the new complete file. Files get the permissions the user's umask allows (mkstemp alone would
leave 0600).
"""

from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Iterator, Union

__all__ = ["atomic_open", "atomic_write_text", "atomic_write_json"]


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


@contextmanager
def atomic_open(target: Union[str, os.PathLike], mode: str = "wb") -> Iterator[IO[Any]]:
    """Yield a file handle whose content replaces ``target`` only if the block completes without error."""
    target = Path(target)
    if not target.parent.is_dir():
        raise FileNotFoundError(f"{target.parent}: output directory does not exist")
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(target: Union[str, os.PathLike], text: str) -> None:
    with atomic_open(target, "w") as handle:
        handle.write(text)


def atomic_write_json(target: Union[str, os.PathLike], data: Any) -> None:
    atomic_write_text(target, json.dumps(data, indent=2, sort_keys=True) + "\n")
