"""``serve --workers auto`` (the default) starts one worker per core the process may use:
its CPU affinity, less its cgroup's CPU quota (``gateway.serve.cores``), as a container limited
to fewer CPUs than its host has needs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from gateway.serve.cores import usable_cores

AFFINITY = len(os.sched_getaffinity(0))


def cgroups(tmp_path: Path, own: str, files: dict[str, str]) -> tuple[Path, Path]:
    root = tmp_path / "cgroup"
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text, encoding="ascii")
    proc = tmp_path / "proc-self-cgroup"
    proc.write_text(own, encoding="ascii")
    return root, proc


@pytest.mark.parametrize(
    ("cpu_max", "expected"),
    [
        ("max 100000\n", AFFINITY),  # no quota
        ("50000 100000\n", 1),  # half a core: still one worker
        ("100000 100000\n", 1),
        (f"{AFFINITY * 100000 + 1} 100000\n", AFFINITY),  # more than the affinity: the affinity
    ],
)
def test_a_cgroup_v2_quota_caps_the_workers(tmp_path: Path, cpu_max: str, expected: int) -> None:
    root, own = cgroups(tmp_path, "0::/kubepods/pod1/ctr\n", {"kubepods/pod1/ctr/cpu.max": cpu_max})
    assert usable_cores(root, own) == expected


def test_a_parents_quota_counts_too_and_the_smallest_wins(tmp_path: Path) -> None:
    root, own = cgroups(
        tmp_path, "0::/slice/service\n",
        {"slice/cpu.max": "100000 100000\n", "slice/service/cpu.max": "max 100000\n"},
    )  # fmt: skip
    assert usable_cores(root, own) == 1


def test_inside_a_container_the_mount_is_its_own_cgroup(tmp_path: Path) -> None:
    # The host's path is not under the container's mount: its root's quota applies.
    root, own = cgroups(tmp_path, "0::/docker/abc123\n", {"cpu.max": "100000 100000\n"})
    assert usable_cores(root, own) == 1


def test_a_cgroup_v1_quota_caps_the_workers_and_minus_one_is_none(tmp_path: Path) -> None:
    files = {
        "cpu,cpuacct/cpu.cfs_quota_us": "100000\n",
        "cpu,cpuacct/cpu.cfs_period_us": "100000\n",
    }
    root, own = cgroups(tmp_path, "3:cpu,cpuacct:/\n1:name=systemd:/\n", files)
    assert usable_cores(root, own) == 1
    (root / "cpu,cpuacct/cpu.cfs_quota_us").write_text("-1\n", encoding="ascii")
    assert usable_cores(root, own) == AFFINITY


def test_without_readable_cgroups_the_affinity_decides(tmp_path: Path) -> None:
    assert usable_cores(tmp_path / "none", tmp_path / "missing") == AFFINITY
    root, own = cgroups(tmp_path, "garbage\n0::/\n", {"cpu.max": "not numbers\n"})
    assert usable_cores(root, own) == AFFINITY
