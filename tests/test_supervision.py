"""Issue 12 item 4: a grid supervises its workers. A killed worker's run is reported (one
`error:` line, non-zero exit) and the next `train-all` completes it; a killed parent takes its
workers with it; `-j` above the pending runs starts no idle worker."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import faultcheck as fc
from gridtext import grid_text, tiny_mlp

EPOCHS = 80  # the killed-worker grid: runs that outlast the kill (two run at once)
# Runs that last long enough to be killed mid-way (a few hundred epochs of a tiny MLP).
SLOW = tiny_mlp(dataset_options={"n_train": 256, "n_test": 64}, batch_size=16, optimizer="sgd",
                lr=0.05)


def _grid(tmp: Path, epochs: int, seeds: list[int]) -> Path:
    grid = tmp / "grid.toml"
    grid.write_text(grid_text({**SLOW, "epochs": epochs}, {"name": "slow", "seed": seeds}))
    return grid


def _start(grid: Path, store: Path, jobs: int) -> subprocess.Popen:
    env = {**os.environ, "LANDSCAPE_DEVICE": "cpu", "PYTHONPATH": str(fc.REPO)}
    return subprocess.Popen([sys.executable, "-m", "landscape_lib", "train-all", str(grid),
                             "--store", str(store), "-j", str(jobs), "--no-progress"],
                            cwd=grid.parent, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _running_pids(store: Path, n: int, proc: subprocess.Popen, timeout: float = 240) -> dict:
    """Wait until n runs are `running` with an epoch done; {run_id: worker pid}."""
    from landscape_lib.store import Store
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        try:
            rows = Store(store).query("SELECT run_id, pid FROM runs WHERE status = 'running' "
                                      "AND epochs_done >= 1")
            if len(rows) >= n:
                return dict(zip(rows["run_id"], rows["pid"].astype(int)))
        except Exception:  # noqa: BLE001 - the store is being created
            pass
        time.sleep(0.2)
    raise AssertionError(f"{n} runs never ran at once: {proc.poll()}")


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _workers(parent: int) -> set[int]:
    """The grid's worker processes (spawned children; not the resource tracker)."""
    out = set()
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            ppid = int((d / "stat").read_text().split(")")[-1].split()[1])
            if ppid == parent and b"spawn_main" in (d / "cmdline").read_bytes():
                out.add(int(d.name))
        except (OSError, ValueError, IndexError):  # the process ended meanwhile
            continue
    return out


def _stop(pids) -> None:
    """End the processes this test started that are still alive (cleanup only)."""
    for pid in pids:
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)


def test_killed_worker_is_reported_and_resumed(tmp_path):
    grid, store = _grid(tmp_path, EPOCHS, [0, 1, 2]), tmp_path / "store"
    proc = _start(grid, store, 2)
    try:
        victim_run, victim = next(iter(_running_pids(store, 2, proc).items()))
        os.kill(victim, signal.SIGKILL)
        out, err = proc.communicate(timeout=900)
    finally:
        _stop([proc.pid, *_workers(proc.pid)])
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert proc.returncode not in (0, None), f"a killed worker reported as success:\n{err[-1500:]}"
    assert len(errors) == 1 and victim_run in errors[0], err[-1500:]
    again = fc.subprocess_run(fc.train_all_argv(grid, store), timeout=900)
    assert again.rc == 0, again.stderr[-1500:]
    done = fc.tables(store)
    assert set(done["runs"]["status"]) == {"finished"}
    assert not done["epochs"].duplicated(["run_id", "epoch"]).any()
    assert len(done["epochs"]) == 3 * (EPOCHS + 1)


def test_killed_parent_takes_its_workers(tmp_path):
    grid, store = _grid(tmp_path, 3000, [0, 1]), tmp_path / "store"
    proc = _start(grid, store, 2)
    pids = []
    try:
        pids = list(_running_pids(store, 2, proc).values())
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        deadline = time.time() + 15
        while time.time() < deadline and any(_alive(p) for p in pids):
            time.sleep(0.2)
        orphans = [p for p in pids if _alive(p)]
    finally:
        _stop(pids)
    assert orphans == [], f"workers {orphans} trained on after their parent was killed"


def test_jobs_capped_at_pending_runs(tmp_path):
    grid, store = _grid(tmp_path, 40, [0, 1]), tmp_path / "store"
    proc = _start(grid, store, 5)
    most = 0
    try:
        while proc.poll() is None:
            most = max(most, len(_workers(proc.pid)))
            time.sleep(0.1)
        _, err = proc.communicate()
    finally:
        _stop([proc.pid, *_workers(proc.pid)])
    assert proc.returncode == 0, err[-1500:]
    assert 1 <= most <= 2, f"-j 5 on 2 runs started {most} workers"
