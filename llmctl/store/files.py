"""Writing files llmctl owns: atomically (readers see the old or the new content), never through a planted link,
and whole folders moved into place in one step."""

from __future__ import annotations

import errno
import os
import shutil
from collections.abc import Callable
from pathlib import Path

from llmctl import redaction
from llmctl.errors import UsageError
from llmctl.store.layout import OLD_SUFFIX


def read_new_lines(path: Path, position: int, partial: str, on_line: Callable[[str], None]) -> tuple[int, str]:
    """Pass each complete line written to `path` since byte `position` to `on_line` (a job's output or events file
    followed while it grows); returns the new position and the unfinished last line."""
    if not path.exists():
        return position, partial
    with path.open(encoding="utf-8", errors="replace") as stream:
        stream.seek(position)
        text = partial + stream.read()
        position = stream.tell()
    *lines, partial = text.split("\n")
    for line in lines:
        on_line(line + "\n")
    return position, partial


def open_own(path: Path, flags: int, mode: int = 0o644) -> int:
    """os.open for a file llmctl keeps in its own folders (run folder, registry): a symbolic link there is
    refused, never followed — a planted `.lock -> ~/notes.txt` would otherwise have llmctl empty that file."""
    try:
        return os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise UsageError(
                f"{path} is a symbolic link; llmctl keeps its own files there and follows no links (one could make "
                "it overwrite the file it points to): remove the link, then run again"
            ) from None
        raise


def append_own(path: Path, text: str) -> None:
    """Append `text` to a file of llmctl's own (see `open_own`), secrets hidden."""
    fd = open_own(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    with os.fdopen(fd, "a", encoding="utf-8") as handle:
        handle.write(redaction.redact(text))


def write_atomic(path: Path, text: str) -> None:
    """Write a file so that readers see the old or the new content, never a partial one (secrets hidden). A
    link at `path` is replaced, never written through."""
    text = redaction.redact(text)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    if tmp.is_symlink():
        tmp.unlink()
    with os.fdopen(open_own(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def replace_dir(src: Path, dest: Path) -> None:
    """Move a finished folder into place. A crash at any point leaves either the old or the new folder at
    `dest`, never a half-written one: an existing `dest` is swapped with `src` in one renameat2(RENAME_EXCHANGE)
    where the file system supports it (else renamed aside first), then the old one is deleted."""
    old = dest.with_name(dest.name + OLD_SUFFIX)
    remove(old)
    if dest.is_symlink():  # a stage folder replaced by a link: the link goes, never what it points at
        dest.unlink()
    if dest.exists() and _exchange(src, dest):
        shutil.rmtree(src, ignore_errors=True)  # src now holds the old folder
    else:
        if dest.exists():
            os.rename(dest, old)
        os.rename(src, dest)
        shutil.rmtree(old, ignore_errors=True)
    _fsync_dir(dest.parent)


def remove(path: Path) -> None:
    """Delete a file, folder or symbolic link if there is one; a link is unlinked, never followed (shutil.rmtree
    refuses links, which once left every later run failing with an internal error)."""
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.is_dir():
        shutil.rmtree(path)


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (Linux renameat2 RENAME_EXCHANGE, not in Python's os module); False where
    the kernel or file system cannot."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    return renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
