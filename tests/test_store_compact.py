"""Compaction of done runs' parts (issue 14): every row exactly once, for readers during it,
after it and after a crash at any of its steps; writers and `train-all -j 2` carry on."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from conftest import REPO, cli
from landscape_lib.store import TABLES, Store, StoreReader
from landscape_lib.store import manifest as mf
from landscape_lib.store.compact import compact, done_keys
from landscape_lib.store.layout import list_table
from store_fixtures import small, written  # noqa: F401 - fixtures
from store_fixtures import assert_same, reader_rows, run_compact


def loose_done_parts(root, done) -> int:
    return sum(1 for t in TABLES for k in list_table(Path(root) / "tables", t).parts
               if k.split("/")[0] in done)


def test_compaction_keeps_rows_and_removes_loose_parts(small):
    root, before = small
    assert_same(reader_rows(root), before)  # the reader agrees with DuckDB on the files
    done = done_keys(StoreReader(root).table("runs"))
    assert len(done) == 9  # 3 of 12 still running
    assert sum(r.compacted_parts for r in compact(root, list(TABLES), done, min_age=3600)) == 0
    reps = compact(root, list(TABLES), done, min_age=0)
    assert sum(r.compacted_parts for r in reps) > 9 * 15
    assert loose_done_parts(root, done) == 0
    running = done.universe - set(done)
    left = {k.split("/")[0] for k in list_table(Path(root) / "tables", "epochs").parts}
    assert left == running | {"_schema"}  # running runs' parts stay loose
    assert_same(reader_rows(root), before)
    assert sum(r.compacted_parts for r in compact(root, list(TABLES), done, min_age=0)) == 0
    out = cli("runs", "--store", root)  # the CLI reads compacted + loose parts alike
    assert out.returncode == 0 and len(out.stdout.splitlines()) == 1 + 12, out.stderr


def test_rewrite_delete_and_remove_run_after_compaction(small):
    root, before = small
    store = Store(root)
    done = done_keys(StoreReader(root).table("runs"))
    compact(root, list(TABLES), done, min_age=0)
    a, b, c = sorted(done)[:3]
    old = store.read("epochs", a)  # found in the compacted file
    assert not (Path(root) / "tables" / "epochs" / a).exists() and len(old) == 7
    store.write("epochs", a, old.iloc[:3])  # a writer replaces a compacted part: it wins
    aid = store.keys().keys_of_run("analyses", b)[0].split("/")[1]
    store.delete("analyses", b, aid)
    store.remove_run(c)
    reader = StoreReader(root)
    for attempt in range(2):  # before and after a second compaction
        reader.refresh()
        assert len(reader.query("SELECT * FROM epochs WHERE run_id = ?", [a])) == 3
        assert aid not in set(reader.query("SELECT analysis_id FROM analyses")["analysis_id"])
        assert all(len(reader.query(f'SELECT * FROM "{t}" WHERE run_id = ?', [c])) == 0
                   for t in TABLES)
        ep = reader.query("SELECT * FROM epochs")
        assert len(ep) == len(before["epochs"]) - 7 + 3 - (before["epochs"].run_id == c).sum()
        assert len(store.read("epochs", a)) == 3
        compact(root, list(TABLES), done, min_age=0)
    man = mf.load(Path(root) / "tables", "epochs")
    assert any(f"{a}/all" in e["excluded"] for e in man["files"])


@pytest.mark.parametrize("point", ["file-written", "committed", "retiring"])
def test_kill9_at_each_step_then_finish(small, point):
    root, before = small
    assert run_compact(root, crash=point) == -signal.SIGKILL
    assert_same(reader_rows(root), before)
    assert run_compact(root) == 0
    assert_same(reader_rows(root), before)
    assert loose_done_parts(root, done_keys(StoreReader(root).table("runs"))) == 0
    cdir = [p for t in TABLES for p in mf.compacted_dir(Path(root) / "tables", t).iterdir()]
    assert not [p for p in cdir if p.name.endswith(".tmp")]


GRID = """
[defaults]
dataset = "synthetic"
dataset_options = {{ n_train = 128, n_test = 64 }}
arch = "mlp"
arch_options = {{ hidden = [16] }}
epochs = {epochs}
batch_size = 32
optimizer = "sgd"
lr = 0.05
seed = {seed}

[[study]]
name = "poll"
init = ["lecun", "xavier", "kaiming", "orthogonal"]
"""
# `make test` samples ~100 polls; LANDSCAPE_POLLS=2000 runs the acceptance count (issue 12).
POLLS = int(os.environ.get("LANDSCAPE_POLLS", "100"))


def test_reader_polls_during_train_all_and_compaction(tmp_path):
    """The README's reading pattern every 0.1 s while `train-all -j 2` writes and a compactor
    loops: no error, no (run, epoch) twice, no count going down; then every epoch once."""
    root = Store(tmp_path / "store").ensure().root
    stop, errors, polls, seeds = threading.Event(), [], [0], []

    def compactor():
        while not stop.is_set():
            # merged files deleted 5 s after they leave the manifest (the library keeps them
            # 600 s): far longer than a poll, far shorter than the test, so deletions happen
            if run_compact(root, max_files=3, grace=5.0) != 0:
                errors.append("compaction failed")
            time.sleep(0.2)

    th = threading.Thread(target=compactor)
    th.start()
    counts = (0, 0)
    try:
        while polls[0] < POLLS:  # grids of 4 runs with new seeds until enough polls
            seeds.append(len(seeds))
            grid = tmp_path / f"grid{seeds[-1]}.toml"
            grid.write_text(GRID.format(epochs=4, seed=seeds[-1]))
            proc = subprocess.Popen([sys.executable, "-m", "landscape_lib", "train-all",
                                     str(grid), "-j", "2", "--store", str(root),
                                     "--no-progress"], cwd=REPO, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.PIPE, text=True,
                                    env={**os.environ, "PYTHONPATH": str(REPO)})
            while proc.poll() is None:
                try:
                    con = Store(root).connect()  # the README's pattern
                    ep = con.execute("SELECT run_id, epoch FROM epochs").df()
                    n_runs = con.execute("SELECT count(*) FROM runs").fetchone()[0]
                    if ep.duplicated().any():
                        errors.append(f"poll {polls[0]}: an epoch row twice")
                    if (len(ep), n_runs) < counts:
                        errors.append(f"poll {polls[0]}: rows went down {counts}")
                    counts = max(counts, (len(ep), n_runs))
                except Exception as exc:  # noqa: BLE001 - any error is a failure
                    errors.append(f"poll {polls[0]}: {exc!r}")
                polls[0] += 1
                time.sleep(0.1)
            assert proc.wait() == 0, proc.stderr.read()
    finally:
        stop.set()
        th.join()
    assert not errors, errors[:5]
    assert run_compact(root) == 0
    r = StoreReader(root)
    ep = r.query("SELECT run_id, count(*) AS n, count(DISTINCT epoch) AS d FROM epochs "
                 "GROUP BY run_id")
    assert len(ep) == 4 * len(seeds) and (ep.n == 5).all() and (ep.d == 5).all()
    assert set(r.query("SELECT status FROM runs")["status"]) == {"finished"}
    assert loose_done_parts(root, done_keys(r.table("runs"))) == 0
    print(f"{polls[0]} polls, {len(seeds)} grids, 0 errors")


def test_train_all_compacts_once_the_store_is_large(small, monkeypatch):
    from landscape_lib import commands
    root, before = small
    old = time.time() - 3600  # parts untouched for an hour
    for p in (Path(root) / "tables").rglob("*.parquet"):
        os.utime(p, (old, old))
    done = done_keys(StoreReader(root).table("runs"))
    monkeypatch.setattr(commands, "AUTO_COMPACT", 100)
    commands._compact_if_large(Store(root))
    assert loose_done_parts(root, done) > 9 * 15  # 12 runs: below the threshold
    monkeypatch.setattr(commands, "AUTO_COMPACT", 12)
    commands._compact_if_large(Store(root))
    assert loose_done_parts(root, done) == 0
    assert_same(reader_rows(root), before)
