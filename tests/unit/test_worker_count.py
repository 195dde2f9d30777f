"""The default worker count: affinity mask capped by the cgroup v2 CPU quota, read from a cgroup tree
laid out as the kernel lays it out."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from connector.proxy.worker_count import cgroup_cpu_quota, parse_cpu_max, usable_cpus


@pytest.mark.parametrize(
    ("text", "cpus"),
    [
        ("200000 100000\n", 2.0),
        ("150000 100000", 1.5),
        ("max 100000\n", None),
        ("", None),
        ("abc 100000", None),
        ("0 100000", None),
        ("100000", None),
    ],
)
def test_cpu_max_lines(text: str, cpus: float | None) -> None:
    assert parse_cpu_max(text) == cpus


def cgroup_tree(tmp_path: Path, levels: dict[str, str]) -> tuple[Path, Path]:
    """A cgroup root with `cpu.max` files at the given relative paths; the process sits in the deepest one."""
    root = tmp_path / "cgroup"
    for relative, cpu_max in levels.items():
        (root / relative).mkdir(parents=True, exist_ok=True)
        (root / relative / "cpu.max").write_text(cpu_max)
    deepest = max(levels, key=len)
    proc = tmp_path / "proc-self-cgroup"
    proc.write_text(f"0::/{deepest}\n")
    return root, proc


def test_the_tightest_quota_on_the_path_to_the_root_applies(tmp_path: Path) -> None:
    root, proc = cgroup_tree(tmp_path, {"kubepods": "100000 100000", "kubepods/pod1/c1": "max 100000"})
    assert cgroup_cpu_quota(root, proc) == 1.0
    assert usable_cpus(root, proc) == 1


def test_a_fractional_quota_rounds_up_and_never_exceeds_the_affinity_mask(tmp_path: Path) -> None:
    affinity = len(os.sched_getaffinity(0))
    root, proc = cgroup_tree(tmp_path, {"pod": "150000 100000"})
    assert usable_cpus(root, proc) == min(affinity, 2)
    root, proc = cgroup_tree(tmp_path / "big", {"pod": f"{(affinity + 8) * 100000} 100000"})
    assert usable_cpus(root, proc) == affinity


def test_no_quota_or_no_unified_hierarchy_leaves_the_affinity_mask(tmp_path: Path) -> None:
    affinity = len(os.sched_getaffinity(0))
    root, proc = cgroup_tree(tmp_path, {"pod": "max 100000"})
    assert cgroup_cpu_quota(root, proc) is None and usable_cpus(root, proc) == affinity
    v1 = tmp_path / "v1-cgroup"
    v1.write_text("12:cpu,cpuacct:/pod\n")
    assert cgroup_cpu_quota(root, v1) is None
    assert usable_cpus(root, tmp_path / "missing") == affinity
