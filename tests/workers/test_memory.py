"""A worker keeps the host memory it frees for the next candidate, and gives it back on demand."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import textwrap

import pytest

from nas.workers import LocalWorker, keep_freed_memory

pytestmark = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
    reason="the C allocator's settings are glibc's (mallopt); elsewhere they are left alone",
)

#: 64 tensors of 4 MiB: 16,384 pages of 4 KiB.
_CHURN = textwrap.dedent(
    """
    import json, resource, sys
    import torch
    from nas.workers import LocalWorker
    from nas.workers._local import free_memory

    PAGES = 64 * 1024

    def faults():
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt

    def resident_pages():
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1])

    def churn():  # as a candidate does: allocate, write, free
        before = faults()
        tensors = [torch.ones(1 << 20) for _ in range(64)]
        del tensors
        return (faults() - before) / PAGES

    LocalWorker()
    churn()
    again = churn()
    kept = resident_pages()
    free_memory()
    print(json.dumps({"again": again, "given_back": (kept - resident_pages()) / PAGES}))
    """
)


def _churn(**env: str) -> dict[str, float]:
    done = subprocess.run(
        [sys.executable, "-c", _CHURN],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return dict(json.loads(done.stdout))


def test_memory_freed_by_one_candidate_is_reused_by_the_next_without_page_faults() -> None:
    kept = _churn()
    default = _churn(NAS_KEEP_FREED_MEMORY="0")  # glibc's own settings
    assert kept["again"] < 0.1, "the second candidate took its pages from the system again"
    assert default["again"] > 0.5, "glibc kept the memory by itself: nothing to show here"
    # What the process keeps, free_memory (after an out-of-memory failure) gives back.
    assert kept["given_back"] > 0.5


def test_the_settings_are_made_once_per_process() -> None:
    assert keep_freed_memory() is True  # on glibc, unless switched off
    LocalWorker()
    assert keep_freed_memory.cache_info().misses == 1
