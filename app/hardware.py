"""What machine this is: CPU model, its int8 instructions, and the cores this process may use.

Written once for model cards, training runs, the int8 backend's thread count and the benchmarks.
A leaf: imports nothing from ``app``.
"""

from __future__ import annotations

import math
import os
import platform
from pathlib import Path


def _cpuinfo() -> str:
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:  # not Linux
        return ""


def _cpuinfo_field(info: str, key: str) -> str:
    return next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith(key)), "")


def cpu_model_name() -> str:
    """The CPU's model name, e.g. 'AMD EPYC 7B13' ('unknown' when it cannot be read)."""
    return _cpuinfo_field(_cpuinfo(), "model name") or platform.processor() or "unknown"


def cpu_description() -> str:
    """The CPU model name with its widest vector ISA and whether it has int8 dot-product instructions."""
    info = _cpuinfo()
    flags = _cpuinfo_field(info, "flags").split()
    vnni = [flag for flag in ("avx512_vnni", "avx_vnni", "amx_int8") if flag in flags]
    isa = "avx512" if "avx512f" in flags else "avx2" if "avx2" in flags else "sse"
    return f"{cpu_model_name()} ({isa}, {'+'.join(vnni) if vnni else 'no VNNI'})"


def cpu_cores() -> int:
    """CPU cores this process may use: its affinity mask, capped by a cgroup CPU quota when there is one.

    ``os.cpu_count()`` reports the host's cores, which oversubscribes threads in a container limited
    to a few CPUs (``docker run --cpus``, Kubernetes limits) or a process pinned with ``taskset``.
    """
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:  # cgroup v2: "max 100000" (no limit) or "200000 100000" (2 CPUs)
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            cores = min(cores, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass  # no cgroup v2 limit readable: the affinity mask is the answer
    return max(1, cores)
