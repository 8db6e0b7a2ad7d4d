"""Robust reads (issue 12 items 5-7): one bad file is skipped and named while the rest stays
readable; no glob interpretation of the store path; meta.json validated; concurrent creation;
every transient read error retried."""
from __future__ import annotations

import multiprocessing as mp
import shutil
from pathlib import Path

import duckdb
import pytest

from conftest import cli
from landscape_lib.errors import StoreError
from landscape_lib.store import Store, StoreReader, retry_read
from landscape_lib.store.layout import list_table
from landscape_lib.store.parts import transient
from store_fixtures import small, written  # noqa: F401 - fixtures
from store_fixtures import canon, make_store


def _epochs_part(root: Path) -> Path:
    return sorted((root / "tables" / "epochs").glob("vit-*/all.parquet"))[0]


@pytest.mark.parametrize("damage", ["truncate", "garble", "empty"])
def test_corrupt_part_is_skipped_and_named(small, damage):
    root, before = small
    part = _epochs_part(root)
    data = part.read_bytes()
    part.write_bytes({"truncate": data[: len(data) // 2],
                      "garble": data[:100] + bytes(reversed(data[100:-100])) + data[-100:],
                      "empty": b""}[damage])
    r = StoreReader(root)
    expected = before["epochs"][before["epochs"].run_id != part.parent.name]
    assert canon(r.query("SELECT * FROM epochs")) == canon(expected)
    assert str(part) in r.problems
    assert len(r.query("SELECT * FROM runs")) == 12  # other tables unaffected
    out = cli("export", "epochs", "--store", root)  # the rows, and a warning naming the file
    assert out.returncode == 0 and len(out.stdout.splitlines()) == 1 + len(expected)
    assert f"warning: skipped {part}" in out.stderr and "Traceback" not in out.stderr


def test_stray_and_foreign_files_are_not_read(small):
    root, before = small
    part = _epochs_part(root)
    strays = [part.parent / "all (1).parquet", part.parent / "backup.parquet",
              part.parent / "notes.txt", root / "tables" / "epochs" / "loose.parquet"]
    for s in strays:
        shutil.copy(part, s)
    hs = sorted((root / "tables" / "hessian_summary").glob("*/hessian-*.parquet"))[0]
    shutil.copy(hs, hs.parent / "hessian-0123456789ab.parquet")  # another analysis' name
    runs_part = root / "tables" / "runs" / part.parent.name / "all.parquet"
    other = [p for p in (root / "tables" / "epochs").glob("*/all.parquet") if p != part][0]
    shutil.copy(runs_part, other)  # a runs part under epochs/ (gave a NULL-epoch row)
    r = StoreReader(root)
    ep, hsum = r.query("SELECT * FROM epochs"), r.query("SELECT * FROM hessian_summary")
    assert canon(ep) == canon(before["epochs"][before["epochs"].run_id != other.parent.name])
    assert canon(hsum) == canon(before["hessian_summary"])
    assert {str(s) for s in strays if s.suffix == ".parquet"} | {
        str(other), str(hs.parent / "hessian-0123456789ab.parquet")} <= set(r.problems)
    shutil.copy(part, other)  # another run's rows under this run's name
    r.refresh()
    assert str(other) in r.problems
    assert canon(r.query("SELECT * FROM epochs")) == canon(
        before["epochs"][before["epochs"].run_id != other.parent.name])


def test_glob_characters_in_store_path(tmp_path):
    for name, runs in (("glob[1]", 2), ("glob1", 3), ("st*re", 4)):
        make_store(tmp_path / name, runs=runs, epochs=2)
    for name, runs in (("glob[1]", 2), ("glob1", 3), ("st*re", 4)):
        assert len(StoreReader(tmp_path / name).query("SELECT * FROM runs")) == runs
    d = tmp_path / "glob1" / "tables" / "runs"
    (d / "[a-z]*").mkdir()  # a folder with glob characters is no run of the store
    (d / "[a-z]*" / "all.parquet").write_bytes(b"x")
    assert d / "[a-z]*" in list_table(tmp_path / "glob1" / "tables", "runs").foreign


@pytest.mark.parametrize("content", [b"{not json", b"\xff\xfe", b"[]", b'{"schema_version": "1"}',
                                     b'{"schema_version": true}', b"{}", b'{"schema_version": 99}'])
def test_meta_json_validated(tmp_path, content):
    Store(tmp_path / "s").ensure()
    (tmp_path / "s" / "meta.json").write_bytes(content)
    with pytest.raises(StoreError, match="meta.json is malformed|newer than this"):
        Store(tmp_path / "s").reader()
    out = cli("runs", "--store", tmp_path / "s")
    assert out.returncode == 2 and out.stderr.startswith("error:"), out.stderr


def _create(root):
    return Store(root).ensure().root.name


def test_concurrent_store_creation(tmp_path):
    for i in range(5):
        root = tmp_path / f"s{i}"
        with mp.get_context("fork").Pool(4) as pool:
            assert pool.map(_create, [root] * 8) == [f"s{i}"] * 8
        assert not [p for p in root.rglob("*") if p.name.endswith(".tmp")]
        assert len(StoreReader(root).query("SELECT * FROM runs")) == 0


def test_retry_classification():
    assert transient(duckdb.IOException("x")) and transient(duckdb.InvalidInputException("x"))
    assert transient(duckdb.Error("Invalid Error: TProtocolException: Invalid data"))
    assert not transient(duckdb.BinderException("x")) and not transient(duckdb.ParserException("x"))
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 4:
            raise duckdb.Error("TProtocolException: Invalid data")
        return "ok"
    assert retry_read(flaky, delay=0.001) == "ok" and len(calls) == 4
    with pytest.raises(duckdb.BinderException):
        retry_read(lambda: (_ for _ in ()).throw(duckdb.BinderException("no column")))


def test_an_invalid_query_is_named_as_such_not_as_an_unreadable_store(store):
    """A notebook's mistyped SQL says the query is at fault (with DuckDB's reason); a store
    that cannot be read keeps its own message."""
    store.ensure()
    with pytest.raises(StoreError, match="query .* is not valid: .*Binder Error: Ambiguous"):
        store.query("SELECT run_id FROM runs a JOIN epochs b ON a.run_id = b.run_id")
    with pytest.raises(StoreError, match="query .* is not valid: .*Parser Error"):
        store.query("SELEC 1")
    assert len(store.query("SELECT a.run_id FROM runs a JOIN epochs b "
                           "ON a.run_id = b.run_id")) == 0
