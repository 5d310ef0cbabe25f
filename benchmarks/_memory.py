"""Peak resident memory that one call adds, for the benchmarks (Linux)."""

from __future__ import annotations

import ctypes
from collections.abc import Callable


def cpu_peak_growth(fn: Callable[[], None]) -> float | None:
    """MB by which ``fn`` raises the process's peak resident set above the current one (Linux only).

    Memory that the allocator kept from earlier calls is handed back first (glibc ``malloc_trim``), so
    what ``fn`` allocates has to be faulted in again and shows in the peak.
    """

    def status(key: str) -> float:
        with open("/proc/self/status") as f:
            line = next(line for line in f if line.startswith(key))
        return int(line.split()[1]) / 1024

    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass  # not glibc: the figure may then undercount memory reused from earlier calls
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM (the peak) to the current resident set
        before = status("VmRSS")
        fn()
        return status("VmHWM") - before
    except OSError:
        return None
