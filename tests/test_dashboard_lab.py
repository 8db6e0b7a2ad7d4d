"""The Lab page and the app's guidance and error paths, driven by AppTest.

The Lab's subprocess is a stand-in CLI (FAKE_CLI) with the real one's contract: JSON-lines
progress, an `analyses` row (running, then done) and result rows written by the library's Store.
"""
from __future__ import annotations

import sys
import textwrap
import time
from pathlib import Path

import pytest

from dashboard import jobs
from dashboard_store import copy_of, sample_root
from landscape_lib.store import Store
from landscape_lib.store.schema import INTERRUPTED
from test_dashboard import app, csv_of, downloads, problems, vega_specs  # noqa: F401 (fixture)

FAKE_CLI = textwrap.dedent('''
    import argparse, json, os, sys, time
    from datetime import datetime
    from landscape_lib.store import Store
    p = argparse.ArgumentParser()
    p.add_argument("command"); p.add_argument("run"); p.add_argument("--epoch", type=int)
    p.add_argument("--what"); p.add_argument("--store"); p.add_argument("--progress-file")
    p.add_argument("--set", action="append", default=[])
    p.add_argument("--no-progress", action="store_true")
    a = p.parse_args()
    from landscape_lib.config import parse_value  # the real CLI's value parser
    params = {"samples": 512, "top_k": 3}
    params.update({k: parse_value(v) for k, v in (s.split("=", 1) for s in a.set)})
    from landscape_lib.analyses.provenance import analysis_id  # the library's own part name
    store, aid = Store(a.store), analysis_id(a.run, a.epoch, a.what, params)
    row = {"analysis_id": aid, "run_id": a.run, "epoch": a.epoch, "kind": a.what,
           "status": "running", "params_json": json.dumps(params, sort_keys=True),
           "device": "cpu", "engine": "fake", "started_at": datetime.now()}
    store.write("analyses", a.run, [row], part=aid)
    with open(a.progress_file, "a") as f:
        for i, stage in enumerate(("top eigenvalues", "trace", "density")):
            f.write(json.dumps({"fraction": i / 3, "message": stage}) + "\\n"); f.flush()
            time.sleep(float(os.environ.get("FAKE_SLEEP", "0.2")))
    eigs = [4.0 / (k + 1) for k in range(params["top_k"])]
    store.write("hessian_eigs", a.run, [{"analysis_id": aid, "run_id": a.run, "epoch": a.epoch,
        "which": "top", "k": k + 1, "eigenvalue": v} for k, v in enumerate(eigs)], part=aid)
    store.write("hessian_summary", a.run, [{"analysis_id": aid, "run_id": a.run,
        "epoch": a.epoch, "layer": "<all>", "top_eig": eigs[0], "lam_min": -0.1, "trace": 9.0,
        "trace_se": 0.5, "neg_share": 0.1}], part=aid)
    store.write("analyses", a.run, [{**row, "status": "done", "seconds": 0.6}], part=aid)
''')


@pytest.fixture(scope="module")
def lab_store(tmp_path_factory) -> Path:
    return copy_of(sample_root(tmp_path_factory), tmp_path_factory.mktemp("lab"))


@pytest.fixture
def fake_cli(monkeypatch, tmp_path) -> list:
    """Point the Lab at FAKE_CLI; returns the jobs started meanwhile."""
    cli = tmp_path / "fake_cli.py"
    cli.write_text(FAKE_CLI)
    monkeypatch.setattr(jobs, "CLI", [sys.executable, str(cli)])
    started, original = [], jobs._start
    monkeypatch.setattr(jobs, "_start", lambda *a, **k: started.append(original(*a, **k))
                        or started[-1])
    return started


def _run_of(root, study="initializers") -> str:
    return Store(root).query("SELECT run_id FROM runs WHERE study = ? ORDER BY run_id LIMIT 1",
                             [study])["run_id"][0]


def _wait(at, until, timeout=60):
    deadline = time.time() + timeout
    while not until(at):
        assert time.time() < deadline and not problems(at), problems(at)
        time.sleep(0.3)
        at.run()


def test_lab_runs_analysis_and_lists_every_stored_result(monkeypatch, lab_store, fake_cli):
    run_id = _run_of(lab_store)
    at = app(monkeypatch, lab_store, "lab", lab_run=run_id)
    before = Store(lab_store).query("SELECT analysis_id FROM analyses WHERE run_id = ?",
                                    [run_id])["analysis_id"]
    listed = at.dataframe[0].value
    assert set(listed["analysis_id"]) == set(before)  # the grid's own, whatever its parameters
    at.number_input(key="lab_hessian_top_k").set_value(4)
    at.button(key="lab_run_button").click().run()
    _wait(at, lambda a: not jobs_running(a, run_id) and len(a.dataframe[0].value) > len(before))
    assert len(fake_cli) == 1
    new = at.dataframe[0].value.iloc[0]
    assert new["status"] == "done" and '"top_k": 4' in new["params_json"]
    assert at.success and "fake" in at.success[0].value and "`top_k=4`" in at.success[0].value
    assert len(at.dataframe) == 1  # the result's chart and tables: one at a time, once picked
    at.segmented_control(key="lab_part").set_value("hessian_eigs").run()
    eigs = at.dataframe[1].value
    assert eigs["eigenvalue"].tolist() == pytest.approx([4.0 / (k + 1) for k in range(4)])
    assert not fake_cli[0].workdir.exists()  # the job's temporary folder is gone


def jobs_running(at, run_id) -> bool:
    return any("Stages" in c.value for c in at.caption)


def test_lab_reattaches_and_never_starts_twice(monkeypatch, lab_store, fake_cli):
    monkeypatch.setenv("FAKE_SLEEP", "300")  # its stage lasts past any slow rerun (cancelled)
    run_id = _run_of(lab_store, "optimizers")
    first = app(monkeypatch, lab_store, "lab", lab_run=run_id)
    first.button(key="lab_run_button").click().run()
    _wait(first, lambda a: jobs_running(a, run_id))
    # A reloaded tab is a new session: it finds the running job with its progress and Cancel.
    second = app(monkeypatch, lab_store, "lab", lab_run=run_id)
    assert jobs_running(second, run_id) and second.get("progress")
    second.button(key="lab_run_button").click().run()
    assert any("already running" in i.value for i in second.info), problems(second) + [
        i.value for i in second.info + second.warning]
    assert len(fake_cli) == 1 and fake_cli[0].running
    _wait(second, lambda a: "top eigenvalues" in " ".join(p.proto.text for p in a.get("progress")))
    assert "s left" in second.get("progress")[0].proto.text or "%" in \
        second.get("progress")[0].proto.text
    second.button(key="lab_cancel_hessian").click().run()
    assert fake_cli[0].returncode is not None  # the process is gone
    _wait(second, lambda a: not jobs_running(a, run_id))
    assert any("cancelled" in w.value for w in second.warning)


def test_lab_refuses_requests_above_its_limits(monkeypatch, lab_store, fake_cli):
    run_id = _run_of(lab_store, "optimizers")
    at = app(monkeypatch, lab_store, "lab", lab_run=run_id)
    at.selectbox(key="lab_what").set_value("surface").run()
    at.text_input(key="lab_extra").set_value("grid=401").run()
    at.button(key="lab_run_button").click().run()
    assert any("Refused" in e.value and "grid=401" in e.value for e in at.error)
    assert not fake_cli
    registry = jobs.LabJobs()
    with pytest.raises(jobs.LabRequestError):
        registry.start(str(lab_store), run_id, 3, "surface", {"grid": 401},
                       {"surface": {"grid": 21}})
    with pytest.raises(jobs.LabRequestError):
        registry.start(str(lab_store), run_id, 3, "surface", {"shell": "rm -rf /"},
                       {"surface": {"grid": 21}})
    assert not fake_cli


def test_lab_run_disabled_when_the_checkpoint_file_is_missing(monkeypatch, tmp_path,
                                                              tmp_path_factory):
    root = copy_of(sample_root(tmp_path_factory), tmp_path)
    run_id = _run_of(root)
    path = Store(root).query("SELECT path FROM checkpoints WHERE run_id = ? AND kind = "
                             "'checkpoint' ORDER BY epoch DESC LIMIT 1", [run_id])["path"][0]
    (root / path).unlink()
    at = app(monkeypatch, root, "lab", lab_run=run_id)
    assert at.button(key="lab_run_button").disabled
    assert any("missing" in w.value for w in at.warning)


def test_stale_job_folders_are_swept(tmp_path, monkeypatch):
    import os
    monkeypatch.setattr(jobs.tempfile, "gettempdir", lambda: str(tmp_path))
    old, new = tmp_path / f"{jobs.PREFIX}lab-old", tmp_path / f"{jobs.PREFIX}lab-new"
    old.mkdir(), new.mkdir()
    os.utime(old, (time.time() - 3 * 86400,) * 2)
    assert jobs.sweep_stale() == 1 and not old.exists() and new.exists()


def test_missing_and_empty_store_show_guidance(monkeypatch, tmp_path):
    missing = app(monkeypatch, tmp_path / "nowhere")
    assert "train-all runs/quick.toml" in missing.info[0].value
    assert any("quick grid" in b.label for b in missing.button)
    Store(tmp_path / "empty").ensure()
    empty = app(monkeypatch, tmp_path / "empty")
    assert "no runs yet" in empty.info[0].value
    empty.switch_page("app_pages/surfaces.py").run()  # every page: guidance, no traceback
    assert not empty.exception and "make demo" in empty.info[0].value


@pytest.mark.parametrize("table", ["runs", "epochs"])
def test_corrupt_part_is_skipped_and_listed(monkeypatch, tmp_path, tmp_path_factory, table):
    """One unreadable part: the pages show the rest, the sidebar names the skipped file."""
    root = copy_of(sample_root(tmp_path_factory), tmp_path)
    part = next(p for p in (root / "tables" / table).glob("*/*.parquet")
                if p.parent.name != "_schema")
    part.write_bytes(b"this is not a parquet file" * 10)
    monkeypatch.setenv("LANDSCAPE_STORE", str(root))
    from streamlit.testing.v1 import AppTest
    from test_dashboard import APP
    at = AppTest.from_file(APP, default_timeout=90).run()
    at.switch_page("app_pages/training.py").run()
    at.run()  # the sidebar (drawn before the page) now knows what the page read
    assert not at.exception and not at.error
    assert any("1 file(s) skipped" in e.label for e in at.expander)
    assert any(str(part) in df.value.to_string() for df in at.dataframe)


def test_new_runs_appear_without_restart(monkeypatch, tmp_path, tmp_path_factory):
    """Rows written after the app started show up within seconds (no reconnect, no reload)."""
    root = copy_of(sample_root(tmp_path_factory), tmp_path)
    at = app(monkeypatch, root)
    n = len(at.dataframe[0].value)
    store = Store(root)
    first = store.query("SELECT run_id FROM runs ORDER BY run_id LIMIT 1")["run_id"][0]
    new = store.read("runs", first).assign(run_id="zz-new-run", status="running")
    store.write("runs", "zz-new-run", new)
    deadline = time.time() + 20
    while len(at.dataframe[0].value) == n and time.time() < deadline:
        time.sleep(0.5)
        at.run()
    assert "zz-new-run" in set(at.dataframe[0].value["run_id"])
    # A run's row rewritten in place (same row count, same updated_at, as when the pipeline
    # marks a run interrupted) shows too: the run list's cache follows the snapshot
    store.write("runs", "zz-new-run", new.assign(status=INTERRUPTED))
    deadline = time.time() + 20
    while True:
        table = at.dataframe[0].value.set_index("run_id")
        if table.loc["zz-new-run", "status"] == INTERRUPTED or time.time() > deadline:
            break
        time.sleep(0.5)
        at.run()
    assert table.loc["zz-new-run", "status"] == INTERRUPTED


QUICK_GRID = textwrap.dedent('''
    """Stand-in for `python -m landscape_lib train-all runs/quick.toml --store ROOT`."""
    import sys, time
    from landscape_lib.store import Store
    root = sys.argv[sys.argv.index("--store") + 1]
    assert sys.argv[1:3] == ["train-all", "runs/quick.toml"], sys.argv
    time.sleep(0.5)
    Store(root).ensure().write("runs", "quick-1", [{"run_id": "quick-1", "status": "running",
                                                   "dataset": "digits", "optimizer": "sgd"}])
''')


def test_quick_grid_button_fills_an_empty_store(monkeypatch, tmp_path):
    cli = tmp_path / "quick.py"
    cli.write_text(QUICK_GRID)
    monkeypatch.setattr(jobs, "CLI", [sys.executable, str(cli)])
    at = app(monkeypatch, tmp_path / "fresh")
    next(b for b in at.button if "quick grid" in b.label).click().run()
    assert not at.exception
    deadline = time.time() + 60
    while not at.title or at.title[0].value != "Runs":
        assert time.time() < deadline, [i.value for i in at.info] + [e.value for e in at.error]
        time.sleep(0.5)
        at.run()
    assert at.dataframe[0].value["run_id"].tolist() == ["quick-1"]


def test_lab_draws_a_stored_result_chart_only_when_picked(monkeypatch, lab_store, downloads):
    store = Store(lab_store)
    aid, run_id = store.query("SELECT analysis_id, run_id FROM hessian_density "
                              "GROUP BY ALL ORDER BY run_id LIMIT 1").iloc[0]
    at = app(monkeypatch, lab_store, "lab", lab_run=run_id)
    shown = at.selectbox(key="lab_show")
    shown.set_value(next(o for o in shown.options if o.endswith(aid))).run()
    assert not problems(at) and not vega_specs(at)  # the result's headline numbers only
    at.segmented_control(key="lab_part").set_value("chart").run()
    assert len(vega_specs(at)) == 1
    drawn = csv_of(at, downloads, "csv_lab_density")["x"].tolist()
    want = store.query("SELECT x FROM hessian_density WHERE analysis_id = ? ORDER BY x", [aid])
    assert drawn == pytest.approx(want["x"].tolist())
