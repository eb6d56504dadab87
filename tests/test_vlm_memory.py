"""Model-file pages touched while loading are handed back: RSS drops, the data stays readable."""

from __future__ import annotations

import mmap
import sys

import pytest

from edge_gesture.vlm.memory import mapped_ranges, page_out_model_files

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux madvise")


def rss_file_kb() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("RssFile:"))


def test_mapped_model_file_pages_are_paged_out_and_still_readable(tmp_path):
    path = tmp_path / "models" / "weights.bin"
    path.parent.mkdir()
    size = 64 << 20
    path.write_bytes(bytes(range(256)) * (size // 256))
    other = tmp_path / "elsewhere.bin"
    other.write_bytes(b"x" * (1 << 20))
    with open(path, "rb") as f, open(other, "rb") as g:
        m = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        keep = mmap.mmap(g.fileno(), 0, access=mmap.ACCESS_READ)
        total = sum(m[i] for i in range(0, size, 4096))  # touch every page
        keep[0]
        ranges = mapped_ranges([tmp_path / "models"])
        assert sum(hi - lo for lo, hi in ranges) >= size  # only the folder's file is matched
        before = rss_file_kb()
        assert page_out_model_files([tmp_path / "models"]) >= size
        after = rss_file_kb()
        if after > before - 32 * 1024:
            pytest.skip("this kernel ignores MADV_PAGEOUT")
        assert sum(m[i] for i in range(0, size, 4096)) == total  # read back from the file
        m.close()
        keep.close()
