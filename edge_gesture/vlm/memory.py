"""Give back the pages of model files the compiled models no longer read.

OpenVINO maps the IR weights or the compiled-model cache blob, copies the weights into its own
layout while compiling and warming up, and keeps the file mapped. The pages it touched stay
resident (and count in the daemon's RSS) although the copy is what inference reads. After the
warm-up we ask the kernel to page them out (madvise MADV_PAGEOUT, Linux 5.4+). They are clean
file pages: if anything does read them again, they are simply read back from the file.
"""

from __future__ import annotations

import ctypes
import logging
import os
import sys
from collections.abc import Iterable
from pathlib import Path

log = logging.getLogger(__name__)

_MADV_PAGEOUT = 21


def mapped_ranges(under: Iterable[Path | None], maps: str = "/proc/self/maps"
                  ) -> list[tuple[int, int]]:
    """Address ranges of this process's file mappings whose file lies under one of `under`
    (None entries, e.g. an unset cache folder, are skipped)."""
    roots = [str(Path(p).resolve()) + os.sep for p in under if p is not None]
    out = []
    try:
        with open(maps) as f:
            for line in f:
                parts = line.split(maxsplit=5)
                if len(parts) == 6 and parts[5].strip().startswith(tuple(roots)):
                    lo, hi = (int(x, 16) for x in parts[0].split("-"))
                    out.append((lo, hi))
    except OSError:
        return []
    return out


def page_out_model_files(under: Iterable[Path | None]) -> int:
    """Page out mappings of files under these folders; returns the bytes advised (0 when the
    platform cannot)."""
    if not sys.platform.startswith("linux"):
        return 0
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        madvise = libc.madvise
    except (OSError, AttributeError):
        return 0
    madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    done = 0
    for lo, hi in mapped_ranges(under):
        if madvise(lo, hi - lo, _MADV_PAGEOUT) == 0:
            done += hi - lo
        else:  # an older kernel (EINVAL): nothing gained, nothing lost
            log.debug("madvise(MADV_PAGEOUT) failed: errno %d", ctypes.get_errno())
            return done
    return done
