"""Files that are never half-written: write to a temp file beside the target, then rename.

A crash, an error or Ctrl-C leaves either the previous file or the new one, never a mix, and
never a stray temp file.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from widthc.errors import WidthcError


def check_folder(target: Path) -> None:
    """A clear error when `target` cannot be written (its folder is missing or read-only)."""
    folder = target.parent
    if not folder.is_dir():
        raise WidthcError(f"cannot write {target}: folder {folder} does not exist")
    if not os.access(folder, os.W_OK):
        raise WidthcError(f"cannot write {target}: folder {folder} is not writable")


@contextmanager
def replacing(path: str | os.PathLike) -> Iterator[Path]:
    """Yields a temp path to write; on success it replaces `path`, otherwise it is removed."""
    target = Path(path)
    check_folder(target)
    tmp = target.with_name(target.name + ".tmp")
    try:
        yield tmp
        tmp.replace(target)
    except OSError as e:
        raise WidthcError(f"cannot write {target}: {e.strerror or e}") from e
    finally:
        tmp.unlink(missing_ok=True)


def write_atomic(path: str | os.PathLike, write: Callable[[Path], object]) -> Path:
    """`write(tmp)` writes the content; then it replaces `path` (see `replacing`)."""
    with replacing(path) as tmp:
        write(tmp)
    return Path(path)


def write_text(path: str | os.PathLike, text: str) -> Path:
    return write_atomic(path, lambda tmp: tmp.write_text(text))


def staged_write(folder: Path, write: Callable[[Path], list[str]]) -> None:
    """Files that appear together: `write(tmp)` writes them into a temp folder inside `folder`
    and returns their names; they are then moved into place, and the temp folder removed."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise WidthcError(f"cannot create folder {folder}: {e.strerror or e}") from e
    with tempfile.TemporaryDirectory(prefix=".widthc-", dir=folder) as tmp:
        for name in write(Path(tmp)):
            (Path(tmp) / name).replace(folder / name)
