"""The store's write side (issue 12): exactly-once rows, write errors as one clear line,
unique temporaries swept once their writer is gone, a validated meta.json, checksummed files."""
import hashlib
import json
import multiprocessing as mp
import os
import subprocess
import sys

import duckdb
import pytest
import torch

from landscape_lib.errors import StoreError, StoreWriteError
from landscape_lib.store import Store
from landscape_lib.store.atomic import save_tensor, sweep_temporaries, write_error
from landscape_lib.store.files import write_part
from landscape_lib.store.schema import KEYS, TABLES
from landscape_lib.train.checkpoints import load_checkpoint


def test_every_key_names_columns_of_its_table():
    assert set(KEYS) <= set(TABLES)
    assert all(set(key) <= set(TABLES[table]) for table, key in KEYS.items())


def test_the_writer_refuses_a_second_copy_of_a_row(store):
    rows = [{"run_id": "r", "epoch": 0, "train_loss": 1.0},
            {"run_id": "r", "epoch": 1, "train_loss": 0.5},
            {"run_id": "r", "epoch": 0, "train_loss": 1.0}]
    with pytest.raises(StoreError, match=r"refusing to write 2 rows of 'epochs'.*\(run_id=r, epoch=0\)"):
        store.write("epochs", "r", rows)
    assert store.read("epochs", "r") is None  # nothing written
    store.write("epochs", "r", rows[:2])
    assert store.read("epochs", "r")["epoch"].tolist() == [0, 1]


def test_duckdb_and_os_write_errors_become_one_line(tmp_path):
    # What DuckDB raises on a full disk (measured on a 64 KiB tmpfs): the errno in the text.
    full = duckdb.IOException('IO Error: Could not write file "x.tmp": No space left on device '
                              '{"errno":"28"}')
    assert str(write_error("p.parquet", full)) == "cannot write p.parquet: No space left on device"
    assert write_error("f", OSError(13, "Permission denied")).reason == "Permission denied"
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(StoreWriteError, match=r"cannot write .*all\.parquet: .*") as caught:
        write_part(blocker / "epochs" / "r" / "all.parquet", "epochs", [{"run_id": "r"}])
    assert "\n" not in str(caught.value)
    with pytest.raises(StoreWriteError, match=r"cannot write .*x\.pt: "):
        save_tensor(torch.ones(3), blocker / "x.pt")


def test_store_write_error_survives_a_process_boundary():
    import pickle
    exc = pickle.loads(pickle.dumps(StoreWriteError("/s/x.parquet", "No space left on device")))
    assert (exc.path, exc.reason) == ("/s/x.parquet", "No space left on device")


def test_saved_tensors_carry_their_digest_and_a_changed_file_is_refused(tmp_path):
    path = tmp_path / "c" / "epoch_0001.pt"
    digest = save_tensor({"w": torch.arange(4.0)}, path)
    assert digest == hashlib.sha256(path.read_bytes()).hexdigest()
    assert torch.equal(load_checkpoint(path, sha256=digest)["w"], torch.arange(4.0))
    torch.save({"w": torch.arange(4.0) * 1.01}, path)  # still a valid file, other weights
    with pytest.raises(StoreError, match="fails its checksum"):
        load_checkpoint(path, sha256=digest)
    assert load_checkpoint(path, sha256=None)["w"][1] == pytest.approx(1.01)  # older stores


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_temporaries_of_dead_writers_are_swept_and_live_ones_kept(tmp_path):
    dead, live = _dead_pid(), os.getpid()
    stale = tmp_path / "a" / f".all.parquet.{dead}.0123abcd.tmp"
    mine = tmp_path / "a" / f".all.parquet.{live}.89abcdef.tmp"
    other = tmp_path / "a" / ".notes.tmp"  # not a name atomic_path makes
    for p in (stale, mine, other):
        p.parent.mkdir(exist_ok=True)
        p.write_bytes(b"PAR1")
    assert sweep_temporaries(tmp_path) == [stale]
    assert not stale.exists() and mine.exists() and other.exists()


@pytest.mark.parametrize("body", ['{"schema_version": "x"}', "[]", "null", "{}",
                                  '{"schema_version": true}', '{"schema_version": 0}',
                                  b"\xff\xfe\x00garbage"])
def test_a_malformed_meta_json_is_one_clear_error(store, body):
    meta = store.root / "meta.json"
    meta.write_bytes(body if isinstance(body, bytes) else body.encode())
    with pytest.raises(StoreError, match="meta.json is malformed"):
        store.check_version()
    with pytest.raises(StoreError, match="meta.json is malformed"):
        store.ensure()


def _create(root: str) -> str:
    try:
        Store(root).ensure()
        return "ok"
    except Exception as exc:  # noqa: BLE001 - reported to the test
        return repr(exc)


def test_processes_creating_one_store_at_once_all_succeed(tmp_path):
    roots = [str(tmp_path / f"s{i}") for i in range(6)]
    with mp.get_context("fork").Pool(4) as pool:
        results = pool.map(_create, [r for r in roots for _ in range(4)])
    assert set(results) == {"ok"}
    for root in roots:
        assert json.loads((tmp_path / root / "meta.json").read_text())["schema_version"] >= 1
        assert not [p for p in (tmp_path / root).rglob("*.tmp")]
        assert Store(root).query("SELECT count(*) AS n FROM runs")["n"].iloc[0] == 0


def test_a_run_lock_excludes_a_second_holder(store):
    first = store.lock_run("r")
    assert first is not None and store.lock_run("r") is None
    first.close()
    again = store.lock_run("r")
    assert again is not None
    again.close()
