"""Acceptance 2 on a real full disk: `train-all` on a 3 MB filesystem.

Run inside a private mount namespace (`unshare --mount --propagation private`, or
`unshare --map-root-user --mount` without root), so the tmpfs vanishes with this process and the
host's mounts are never touched:

    python tests/smallfs.py WORKDIR     -> prints one JSON object (the phases' outcomes)

Phases, all through `python -m landscape_lib` (the real CLI, real ENOSPC from the kernel):
  0. reference: the grid on an unconstrained store (WORKDIR/ref)
  1. the first study alone on the 3 MB store: fits; its rows are "stored before"
  2. the whole grid on the same store: the disk fills
  3. space is freed (the tmpfs is resized to 64 MB) and the grid runs again
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import faultcheck as fc

# Each run keeps ~0.7 MB (4 checkpoints and 4 trajectory vectors of 58 KB, the Adam resume
# state, the Hessian's eigenvector, its parts): the first study (2 runs) fits in 3 MB, the whole
# grid (5 runs) does not.
GRID = (fc.GRID.replace("hidden = [16]", "hidden = [192]")
        .replace('optimizer = "sgd-momentum"\nlr = 0.05', 'optimizer = "adam"\nlr = 1e-3')
        .split("[analyses.surface]")[0]
        + '[[study]]\nname = "first"\nseed = [0, 1]\n\n[[study]]\nname = "more"\nseed = [2, 3, 4]\n')


def sh(*cmd: str) -> None:
    subprocess.run(cmd, check=True, capture_output=True)


def outcome(res: fc.Outcome) -> dict:
    return {"rc": res.rc, "error_lines": res.error_lines, "traceback": res.traceback,
            "stderr_tail": res.stderr[-1500:]}


def main(workdir: Path) -> dict:
    grid = workdir / "grid.toml"
    grid.write_text(GRID)
    report: dict = {}
    ref = fc.subprocess_run(fc.train_all_argv(grid, workdir / "ref"), timeout=600)
    assert ref.rc == 0, ref.stderr[-2000:]
    reference = fc.tables(workdir / "ref")
    mount = workdir / "fs"
    mount.mkdir()
    sh("mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount))
    try:
        store = mount / "store"
        first = fc.subprocess_run(fc.train_all_argv(grid, store, "--study", "first"), timeout=600)
        report["first"] = outcome(first)
        before = fc.tables(store) if first.rc == 0 else None
        full = fc.subprocess_run(fc.train_all_argv(grid, store), timeout=600)
        report["full"] = outcome(full)
        try:
            got = fc.tables(store)
            report["full"]["incomplete_runs"] = sorted(fc.incomplete_runs(got, reference))
            report["full"]["kept_problems"] = fc.kept_problems(store, reference)
            if before is not None:  # every row of the first study is still there
                report["full"]["lost_from_first"] = [
                    p for p in fc.row_problems(got, before) if ": missing " in p]
        except Exception as exc:  # noqa: BLE001 - an unreadable store after a full disk
            report["full"]["kept_problems"] = [f"store unreadable: {exc!r}"[:300]]
        report["full"]["df"] = subprocess.run(["df", "-k", str(mount)], capture_output=True,
                                              text=True).stdout.splitlines()[-1]
        sh("mount", "-o", "remount,size=64m", str(mount))  # space is freed
        again = fc.subprocess_run(fc.train_all_argv(grid, store), timeout=600)
        report["again"] = outcome(again)
        report["again"]["problems"] = fc.problems(store, reference)
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)
    return report


if __name__ == "__main__":
    print(json.dumps(main(Path(sys.argv[1]))))
