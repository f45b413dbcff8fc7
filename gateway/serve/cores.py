"""How many cores this process may use: what ``serve --workers auto`` (the default) starts a
worker for. The CPUs it may run on (its affinity: ``taskset``, a cpuset), and fewer if its
cgroup has a CPU quota: a container limited to 2 CPUs on a 64-core host sees 64 CPUs in its
affinity, and 64 workers there would share 2 cores' worth of time (and each hold its own
store connections and caches). A quota of 1.5 cores rounds up to 2."""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path

__all__ = ("usable_cores",)

_CGROUP_ROOT = Path("/sys/fs/cgroup")
_OWN_CGROUP = Path("/proc/self/cgroup")
# Where cgroup v1 mounts its cpu controller (co-mounted with cpuacct on most distributions).
_V1_MOUNTS = ("cpu", "cpu,cpuacct", "cpuacct,cpu")


def usable_cores(cgroup_root: Path = _CGROUP_ROOT, own_cgroup: Path = _OWN_CGROUP) -> int:
    cores = len(os.sched_getaffinity(0))
    quota = _quota(cgroup_root, own_cgroup)
    if quota is not None:
        cores = min(cores, math.ceil(quota))
    return max(1, cores)


def _quota(root: Path, own_cgroup: Path) -> float | None:
    """The smallest CPU quota, in cores, of this process's cgroup and its parents; None if
    there is none (or it cannot be read: then the affinity alone decides)."""
    try:
        lines = own_cgroup.read_text(encoding="ascii").splitlines()
    except OSError:
        return None
    quotas: list[float] = []
    for line in lines:
        fields = line.split(":", 2)
        if len(fields) != 3:
            continue
        _id, controllers, path = fields
        if not controllers:  # cgroup v2: cpu.max holds "quota period" or "max period"
            quotas += _along(root, path, lambda d: _ratio(d / "cpu.max"))
        elif "cpu" in controllers.split(","):  # cgroup v1
            for mount in _V1_MOUNTS:
                quotas += _along(root / mount, path, _v1_ratio)
    return min(quotas) if quotas else None


def _along(mount: Path, path: str, read: Callable[[Path], float | None]) -> list[float]:
    """``read`` of the cgroup at ``path`` under ``mount`` and of each parent up to the mount
    (inside a container the mount is its own cgroup, and the host's path does not exist)."""
    found = []
    directory = mount / path.lstrip("/")
    while True:
        if (value := read(directory)) is not None:
            found.append(value)
        if directory == mount or mount not in directory.parents:
            return found
        directory = directory.parent


def _ratio(cpu_max: Path) -> float | None:
    try:
        quota, period = cpu_max.read_text(encoding="ascii").split()
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError, ZeroDivisionError):
        return None


def _v1_ratio(directory: Path) -> float | None:
    try:
        quota = int((directory / "cpu.cfs_quota_us").read_text(encoding="ascii"))
        period = int((directory / "cpu.cfs_period_us").read_text(encoding="ascii"))
    except (OSError, ValueError):
        return None
    return quota / period if quota > 0 and period > 0 else None  # -1: no quota
