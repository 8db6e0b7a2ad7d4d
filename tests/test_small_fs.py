"""Acceptance 2: a real 3 MB filesystem (tmpfs in a private mount namespace; see smallfs.py).

Needs mount rights in a new mount namespace: root (this machine and CI are root), or
unprivileged user namespaces. Elsewhere it is skipped with the reason; the in-suite proxy is
the ENOSPC sweep of test_faults.py. LANDSCAPE_SMALLFS=0 skips it on purpose.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

import faultcheck as fc


def _namespace_prefix() -> list[str] | None:
    """The `unshare` command line that may mount a tmpfs here, or None."""
    if shutil.which("unshare") is None:
        return None
    for prefix in (["unshare", "--mount", "--propagation", "private"],
                   ["unshare", "--map-root-user", "--mount"]):
        probe = subprocess.run([*prefix, "sh", "-c", "mount -t tmpfs -o size=1m tmpfs /mnt"],
                               capture_output=True)
        if probe.returncode == 0:
            return prefix
    return None


@pytest.mark.skipif(os.environ.get("LANDSCAPE_SMALLFS") == "0", reason="LANDSCAPE_SMALLFS=0")
def test_three_megabyte_filesystem(tmp_path):
    prefix = _namespace_prefix()
    if prefix is None:
        pytest.skip("cannot mount a tmpfs in a private mount namespace here (needs root or "
                    "user namespaces); the ENOSPC sweep of test_faults.py stands in")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(fc.HERE), str(fc.REPO)])}
    res = subprocess.run([*prefix, sys.executable, str(fc.HERE / "smallfs.py"), str(tmp_path)],
                         capture_output=True, text=True, env=env, timeout=1500)
    assert res.returncode == 0, res.stderr[-3000:]
    report = json.loads(res.stdout.strip().splitlines()[-1])
    if os.environ.get("LANDSCAPE_SMALLFS_REPORT"):
        with open(os.environ["LANDSCAPE_SMALLFS_REPORT"], "w") as f:
            json.dump(report, f, indent=1)
    first, full, again = report["first"], report["full"], report["again"]
    assert first["rc"] == 0 and not first["traceback"], first
    assert full["incomplete_runs"], "the grid fitted in 3 MB: make the runs bigger"
    problems = []
    # The disk fills: one clean error line per failed run, non-zero exit, nothing lost.
    if full["rc"] == 0:
        problems.append("disk full reported as success")
    if full["traceback"]:
        problems.append("traceback on a full disk")
    if len(full["error_lines"]) != len(full["incomplete_runs"]):
        problems.append(f"{len(full['error_lines'])} error lines for "
                        f"{len(full['incomplete_runs'])} failed runs")
    problems += full["kept_problems"] + full.get("lost_from_first", [])
    # Space freed: the re-run completes every run, each epoch exactly once, as uninterrupted.
    if again["rc"] != 0 or again["traceback"]:
        problems.append(f"re-run after freeing space: exit {again['rc']}")
    problems += [f"after the re-run: {p}" for p in again["problems"]]
    assert problems == [], problems
