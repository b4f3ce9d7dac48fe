"""Peak resident memory of a benchmark process (Linux), shared by the benchmarks that report it.

    method = reset_peak()            # before the measured part
    baseline = status_kb("VmRSS")
    ...
    peak = peak_kb(method)           # kB; peak - baseline is what the part added

`reset_peak` trims the heap and resets the kernel's high-water mark (`/proc/self/clear_refs`);
where that file is not writable the process-lifetime `ru_maxrss` is used instead (the
returned method names which).
"""

from __future__ import annotations

import ctypes
import resource
from pathlib import Path


def status_kb(field: str) -> int:
    """A `/proc/self/status` field in kB (e.g. `VmRSS`, `VmHWM`). Raises KeyError if absent."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def reset_peak() -> str:
    """Reset the peak-RSS counter; returns the measurement method used."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return "VmHWM after clear_refs=5"
    except OSError:
        return "ru_maxrss (clear_refs not writable)"


def peak_kb(method: str) -> int:
    """Peak RSS in kB since `reset_peak` (or since the process started, for `ru_maxrss`)."""
    if method.startswith("VmHWM"):
        return status_kb("VmHWM")
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
