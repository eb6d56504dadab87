"""Files the runtime derives from a bundle and keeps in the cache folder for the next start.

They are written to a temporary name in the same folder, flushed to disk, then renamed over the
final name, so a crash or power cut never leaves a half-written file under that name (which
every later start would trip over). A file that fails to load anyway (a disk error, an older
runtime's leftovers) is deleted and rebuilt once; see the backends.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

_TMP = ".tmp-"


def temp_name(final: Path) -> Path:
    """Where to write `final` first: same folder and suffix (OpenVINO finds an IR's .bin by
    the .xml's stem), marked with this process's id."""
    return final.with_name(f".{final.stem}{_TMP}{os.getpid()}{final.suffix}")


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def commit(*moves: tuple[Path, Path]) -> None:
    """Rename each written temporary file over its final name, in the order given (the file
    whose presence means "done" last), after flushing them to disk."""
    for tmp, _ in moves:
        _fsync(tmp)
    for tmp, final in moves:
        os.replace(tmp, final)
    try:
        _fsync(moves[0][1].parent)  # the renames themselves
    except OSError:
        pass  # some file systems cannot sync a folder; the files are on disk all the same


def save_npz(path: Path, **arrays: np.ndarray) -> None:
    tmp = temp_name(path)
    try:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
        commit((tmp, path))
    finally:
        tmp.unlink(missing_ok=True)


def remove_stale_temps(folder: Path) -> None:
    """Temporary files a process that died while writing left behind (never another live
    process's: a second runtime may be writing the same folder)."""
    for p in folder.glob(f".*{_TMP}*"):
        pid = p.stem.rpartition(_TMP)[2]
        if pid.isdigit() and not _alive(int(pid)):
            p.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def discard(path: Path, error: BaseException) -> None:
    """A derived file (or folder) that would not load: say so once and delete it, so it is
    rebuilt now and not tripped over again."""
    reason = (str(error).strip().splitlines() or [type(error).__name__])[-1]
    log.warning("%s could not be loaded (%s): deleting it and rebuilding it from the bundle",
                path, reason)
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
