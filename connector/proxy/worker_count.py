"""How many CPUs the connector may use: the default of `serve --workers`.

`os.cpu_count()` counts the machine's CPUs. That is the wrong figure in a pod given 2 vCPUs on a
64-core node, or in a process pinned with taskset. The usable count is the smaller of the CPUs in the
process's affinity mask and the cgroup v2 CPU quota (`cpu.max`: "QUOTA PERIOD", or "max PERIOD" for
no quota). The quota is read at every level from the process's cgroup up to the root, because the
tightest one applies. A fractional quota is rounded up: 1.5 CPUs of quota keep two workers busy.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_SELF_CGROUP = Path("/proc/self/cgroup")


def parse_cpu_max(text: str) -> float | None:
    """CPUs granted by a cgroup v2 `cpu.max` line ("200000 100000" → 2.0); None for no quota or an unreadable line."""
    fields = text.split()
    if len(fields) != 2 or fields[0] == "max":
        return None
    try:
        quota, period = int(fields[0]), int(fields[1])
    except ValueError:
        return None
    if quota <= 0 or period <= 0:
        return None
    return quota / period


def cgroup_cpu_quota(root: Path = CGROUP_ROOT, proc_cgroup: Path = PROC_SELF_CGROUP) -> float | None:
    """The tightest cgroup v2 CPU quota from the process's cgroup up to the root; None when there is none."""
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        return None
    relative = next((line[3:] for line in lines if line.startswith("0::")), None)
    if relative is None:  # cgroup v1 only: no unified hierarchy to read
        return None
    directory = root / relative.strip().lstrip("/")
    quotas: list[float] = []
    for level in (directory, *directory.parents):
        try:
            quota = parse_cpu_max((level / "cpu.max").read_text())
        except OSError:
            quota = None
        if quota is not None:
            quotas.append(quota)
        if level == root:
            break
    return min(quotas) if quotas else None


def usable_cpus(root: Path = CGROUP_ROOT, proc_cgroup: Path = PROC_SELF_CGROUP) -> int:
    """The CPUs this process may use (affinity mask, capped by the cgroup quota), at least 1."""
    cpus = len(os.sched_getaffinity(0))
    quota = cgroup_cpu_quota(root, proc_cgroup)
    if quota is not None:
        cpus = min(cpus, math.ceil(quota))
    return max(1, cpus)
