"""Writing files so that readers see the old version or the new one, never half of one.

Two writers, used by everything slotlab stores on disk:

* `atomic_write(path, write)`: one file (checkpoints, configs, TFRecords, scene files). It is
  written to a temporary file beside `path`, fsynced and renamed over `path`.
* `atomic_write_files(folder, writers)`: several files of one directory that belong together
  (a model directory's weights and config): all are written and fsynced first, then renamed
  into place (a new directory is written beside and renamed into place whole).
* `ShardWriter(final)`: one cache directory of `.npy` arrays plus a `meta.json` (the dataset
  caches). It is written to a hidden `.<name>.partial-<pid>-<random>` directory beside `final`,
  `meta.json` last, and renamed into place only when complete. `NpyRows` appends rows to one
  `.npy` file of that directory when the row count is known only at the end.

A failed write (an exception, Ctrl-C, a killed process) leaves the old file or directory as it
was; a partial directory left by a killed process is removed by the next writer of that cache.
A write that fails for lack of space, a file-size limit, a quota or a permission is one
`WriteError` (a `SlotlabError`): one sentence naming the file, the reason and that the old
version is kept.
"""

from __future__ import annotations

import errno
import json
import math
import os
import re
import secrets
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from numpy.lib.format import dtype_to_descr

from slotlab.errors import DataError, SlotlabError

__all__ = [
    "META_FILE",
    "NpyRows",
    "ShardWriter",
    "WriteError",
    "atomic_write",
    "atomic_write_files",
    "cache_dir_in",
    "fsync_path",
    "os_error_in",
    "write_hint",
]

META_FILE = "meta.json"
_NPY_HEADER = 128  # bytes reserved for a .npy header, so it can be rewritten in place
_NPY_MAGIC = b"\x93NUMPY\x01\x00"  # format version 1.0
_COPY_ROWS = 256  # rows per step when rewriting a .npy file with a wider dtype
_LEFTOVER = re.compile(r"^\.(?P<name>.+)\.(?:partial|old)-(?P<pid>\d+)-")


_WHAT_TO_DO = {
    errno.ENOSPC: "free some space and run the same command again",
    errno.EDQUOT: "free some space and run the same command again",
    errno.EFBIG: "a limit on file sizes (ulimit -f) is in the way",
    errno.EACCES: "choose a directory you can write to",
    errno.EPERM: "choose a directory you can write to",
    errno.EROFS: "choose a directory you can write to",
}


def write_hint(code: int | None) -> str:
    """What to do about a failed write of errno `code` ("" where there is nothing to say)."""
    return _WHAT_TO_DO.get(code or 0, "")


class WriteError(SlotlabError, OSError):
    """Writing a file failed (disk full, no permission, ...); the old file, if any, is intact.

    Also an `OSError` carrying the `errno` and `strerror` of the failure.
    """

    def __init__(self, path: str | os.PathLike[str], cause: OSError, existed: bool = True,
                 what: str = "") -> None:
        OSError.__init__(self, cause.errno, cause.strerror)
        self.path = Path(path)
        reason = cause.strerror or str(cause) or type(cause).__name__
        hint = write_hint(cause.errno)
        kept = "the previous version is unchanged" if existed else "nothing was written"
        self.message = (f"could not write {what + ' ' if what else ''}{self.path} ({reason}); "
                        f"{kept}{'; ' + hint if hint else ''}")

    def __str__(self) -> str:
        return self.message


def os_error_in(exc: BaseException) -> OSError | None:
    """The `OSError` that caused `exc`: itself, or one it was raised from or while handling
    (torch.save reports a failed write as a RuntimeError raised while handling the OSError)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, OSError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def fsync_path(path: str | os.PathLike[str]) -> None:
    """Flush a file or directory to disk (best effort where a directory cannot be fsynced)."""
    path = Path(path)
    flags = os.O_RDONLY | (os.O_DIRECTORY if path.is_dir() and hasattr(os, "O_DIRECTORY") else 0)
    try:
        fd = os.open(path, flags)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _create_beside(path: Path) -> tuple[Path, BinaryIO]:
    """A new hidden temporary file beside `path` (permissions as for any new file)."""
    for _ in range(100):
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
        return tmp, os.fdopen(fd, "wb")
    raise FileExistsError(f"no free temporary name beside {path}")


def atomic_write(path: str | os.PathLike[str], write: Callable[[BinaryIO], Any],
                 what: str = "") -> None:
    """Call `write(file)` on a temporary file beside `path`, fsync it, rename it to `path`.

    The parent directory is created if needed. On any failure the temporary file is removed and
    an existing `path` is left as it was; a failed write (an `OSError`, also one that `write`
    reported as another exception raised from it, as torch.save does) is raised as
    `WriteError`, one sentence naming `path` (after `what`, e.g. "checkpoint"); other exceptions
    of `write` propagate unchanged.
    """
    path = Path(path)
    existed = path.exists()
    tmp: Path | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp, f = _create_beside(path)
        with f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        if tmp is not None:
            try:
                tmp.unlink(missing_ok=True)
            except OSError:
                pass
        cause = None if isinstance(exc, WriteError) else os_error_in(exc)
        if cause is not None:
            raise WriteError(path, cause, existed, what) from None
        raise
    fsync_path(path.parent)


def atomic_write_files(folder: str | os.PathLike[str],
                       writers: Mapping[str, Callable[[BinaryIO], Any]], what: str = "") -> None:
    """Write the files `writers` ({name: write(file)}) of the directory `folder` together.

    An existing `folder`: every file is written to a temporary file beside its final name and
    fsynced, and only when all are complete are they renamed into place, so a failed write
    (disk full, ...) leaves every old file as it was. A new `folder` is written as a hidden
    directory beside it and renamed into place whole. Failures are raised as in `atomic_write`
    (`WriteError` naming `folder`, after `what`).
    """
    folder = Path(folder)
    existed = folder.exists()
    temps: list[tuple[Path, Path]] = []  # (temporary file, final path)
    staging: Path | None = None
    try:
        if existed:
            if not folder.is_dir():
                raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR))
            target = folder
        else:
            folder.parent.mkdir(parents=True, exist_ok=True)
            staging = folder.with_name(
                f".{folder.name}.partial-{os.getpid()}-{secrets.token_hex(4)}")
            staging.mkdir()
            target = staging
        for name, write in writers.items():
            final = target / name
            if staging is None:
                tmp, f = _create_beside(final)
                temps.append((tmp, final))
            else:
                f = open(final, "wb")
            with f:
                write(f)
                f.flush()
                os.fsync(f.fileno())
        if staging is None:
            for tmp, final in temps:
                os.replace(tmp, final)
            temps = []
            fsync_path(folder)
        else:
            fsync_path(staging)
            os.rename(staging, folder)
            staging = None
    except BaseException as exc:
        for tmp, _ in temps:
            try:
                tmp.unlink(missing_ok=True)
            except OSError:
                pass
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
        cause = None if isinstance(exc, WriteError) else os_error_in(exc)
        if cause is not None:
            raise WriteError(folder, cause, existed, what) from None
        raise
    fsync_path(folder.parent)


class NpyRows:
    """Rows of one shape appended to a `.npy` file whose row count is known only at `close()`.

    Args:
        path: the file to create.
        row_shape: the shape of one row.
        dtype: the stored dtype; rows are cast to it.
    """

    def __init__(self, path: str | os.PathLike[str], row_shape: Sequence[int], dtype: Any) -> None:
        self.path = Path(path)
        self.row_shape = tuple(int(v) for v in row_shape)
        self.dtype = np.dtype(dtype)
        self.rows = 0
        self._file: BinaryIO | None = open(self.path, "wb")
        self._file.write(b" " * _NPY_HEADER)

    def append(self, row: np.ndarray) -> None:
        """Append one row (ValueError unless it has `row_shape`)."""
        assert self._file is not None, f"{self.path} is closed"
        if row.shape != self.row_shape:
            raise ValueError(f"row of shape {row.shape}, expected {self.row_shape}")
        self._file.write(np.ascontiguousarray(row, dtype=self.dtype).tobytes())
        self.rows += 1

    def widen(self, dtype: Any) -> None:
        """Store the rows so far, and all later ones, as `dtype` (e.g. uint8 ids -> uint16)."""
        assert self._file is not None, f"{self.path} is closed"
        wide_dtype = np.dtype(dtype)
        self._file.flush()
        wide_path = self.path.with_name(self.path.name + ".wide")
        wide = open(wide_path, "wb")
        try:
            wide.write(b" " * _NPY_HEADER)
            per_row = math.prod(self.row_shape)
            with open(self.path, "rb") as src:
                src.seek(_NPY_HEADER)
                for start in range(0, self.rows, _COPY_ROWS):
                    count = min(_COPY_ROWS, self.rows - start) * per_row
                    chunk = np.fromfile(src, dtype=self.dtype, count=count)
                    wide.write(chunk.astype(wide_dtype).tobytes())
            os.replace(wide_path, self.path)
        except BaseException:
            wide.close()
            wide_path.unlink(missing_ok=True)
            raise
        self._file.close()
        self._file = wide
        self.dtype = wide_dtype

    def close(self) -> None:
        """Write the header (now that the row count is known), flush and fsync the file."""
        if self._file is None:
            return
        header = repr(
            {
                "descr": dtype_to_descr(self.dtype),
                "fortran_order": False,
                "shape": (self.rows, *self.row_shape),
            }
        ).encode("latin1")
        size = _NPY_HEADER - len(_NPY_MAGIC) - 2
        if len(header) + 1 > size:
            raise ValueError(f"the .npy header of {self.path} does not fit {_NPY_HEADER} bytes")
        header = header + b" " * (size - len(header) - 1) + b"\n"
        f, self._file = self._file, None
        with f:
            f.seek(0)
            f.write(_NPY_MAGIC + size.to_bytes(2, "little") + header)
            f.flush()
            os.fsync(f.fileno())

    def discard(self) -> None:
        """Close the file without finishing it (the writer is being aborted; a write error
        while flushing what is left, e.g. on a full disk, is not raised again)."""
        if self._file is not None:
            f, self._file = self._file, None
            try:
                f.close()
            except OSError:
                pass


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # e.g. PermissionError: it exists but belongs to someone else
        return True
    return True


def remove_stale_partials(parent: Path, name: str) -> None:
    """Delete `.<name>.partial|old-<pid>-*` directories of writers that are no longer running."""
    for entry in parent.iterdir():
        match = _LEFTOVER.match(entry.name)
        if match and match["name"] == name and not _pid_alive(int(match["pid"])):
            shutil.rmtree(entry, ignore_errors=True)


class ShardWriter:
    """Writes the cache directory `final` so that it appears complete or not at all.

    Files go to a hidden `.<name>.partial-<pid>-<random>` directory beside `final` (created now,
    with the permissions of any new directory); `commit(meta)` closes the `.npy` files, writes
    `meta.json` last, fsyncs everything and renames the directory to `final`. `abort()`, or an
    exception leaving a `with ShardWriter(...)` block, removes it. Partial directories of
    writers of the same `final` whose process is gone are removed when this one starts.

    OSErrors (disk full, no permission) are raised as they are; callers name the cache.
    """

    def __init__(self, final: str | os.PathLike[str]) -> None:
        self.final = Path(final)
        parent = self.final.parent
        parent.mkdir(parents=True, exist_ok=True)
        remove_stale_partials(parent, self.final.name)
        self.folder = parent / f".{self.final.name}.partial-{os.getpid()}-{secrets.token_hex(4)}"
        self.folder.mkdir()
        self._rows: list[NpyRows] = []
        self._done = False

    def rows(self, name: str, row_shape: Sequence[int], dtype: Any) -> NpyRows:
        """A new `.npy` file `name` of the cache, filled row by row."""
        rows = NpyRows(self.folder / name, row_shape, dtype)
        self._rows.append(rows)
        return rows

    def save(self, name: str, array: np.ndarray) -> None:
        """A `.npy` file `name` of the cache holding `array`."""
        path = self.folder / name
        with open(path, "wb") as f:
            np.save(f, np.asarray(array), allow_pickle=False)
            f.flush()
            os.fsync(f.fileno())

    def commit(self, meta: Mapping[str, Any], if_exists: str = "error") -> Path:
        """Write `meta.json` and move the directory to `final`; returns `final`.

        if_exists: what to do when a complete `final` is already there: "error" (DataError),
        "replace" (the old one is moved aside, then deleted) or "keep" (this write is
        discarded; another process wrote the same cache first).
        """
        if if_exists not in ("error", "replace", "keep"):
            raise ValueError(f"if_exists must be 'error', 'replace' or 'keep', got {if_exists!r}")
        for rows in self._rows:
            rows.close()
        with open(self.folder / META_FILE, "w") as f:  # last: its presence marks a finished cache
            json.dump(meta, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        fsync_path(self.folder)
        old: Path | None = None
        if self.final.exists():
            complete = (self.final / META_FILE).is_file()
            if if_exists == "keep" and complete:
                self.abort()
                return self.final
            if if_exists == "error":
                raise DataError(f"cache {self.final} appeared while writing; not replacing it")
            old = self.final.with_name(
                f".{self.final.name}.old-{os.getpid()}-{int(time.time() * 1e6)}"
            )
            os.replace(self.final, old)
        try:
            os.replace(self.folder, self.final)
        except OSError:
            if if_exists == "keep" and (self.final / META_FILE).is_file():
                self.abort()  # another process finished the same cache in the meantime
                return self.final
            raise
        self._done = True
        fsync_path(self.final.parent)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return self.final

    def abort(self) -> None:
        """Remove everything written so far (nothing happens after a successful commit)."""
        if self._done:
            return
        self._done = True
        for rows in self._rows:
            rows.discard()
        shutil.rmtree(self.folder, ignore_errors=True)

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is not None:
            self.abort()


def _writable_dir(path: Path) -> bool:
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".probe-"):
            pass
        return True
    except OSError:
        return False


def cache_dir_in(folder: str | os.PathLike[str]) -> Path:
    """Where dataset caches go by default: `folder/.slotlab-cache` (created), or
    `~/.cache/slotlab` when that cannot be written."""
    beside = Path(folder) / ".slotlab-cache"
    if _writable_dir(beside):
        return beside
    return Path.home() / ".cache" / "slotlab"
