"""The dashboard, driven by Streamlit's AppTest on a synthetic store (tests/dashboard_store.py).

Expected values come from direct queries of the store through landscape_lib.store.Store, never
from the dashboard's own query code.
"""
from __future__ import annotations

import io
import json
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import pytest
from streamlit.runtime.media_file_manager import MediaFileManager
from streamlit.testing.v1 import AppTest

from dashboard_store import make_store
from landscape_lib.store import Store

APP = str(Path(__file__).resolve().parents[1] / "dashboard" / "app.py")
PAGES = ["runs", "training", "initializers", "optimizers", "architectures", "curvature",
         "surfaces", "attention", "lab"]
TITLES = {p: p.capitalize() for p in PAGES}


@pytest.fixture(scope="module")
def store_root(tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp("dash") / "store"
    make_store(root, n_runs=24, n_epochs=8, seed=0)
    return str(root)


@pytest.fixture
def downloads(monkeypatch) -> dict:
    """file id -> callable behind every deferred download button rendered meanwhile."""
    seen: dict = {}
    original = MediaFileManager.add_deferred

    def record(self, data_callable, *args, **kwargs):
        file_id = original(self, data_callable, *args, **kwargs)
        seen[file_id] = data_callable
        return file_id

    monkeypatch.setattr(MediaFileManager, "add_deferred", record)
    return seen


def app(monkeypatch, root) -> AppTest:
    monkeypatch.setenv("LANDSCAPE_STORE", str(root))
    return AppTest.from_file(APP, default_timeout=60)


def csv_of(at: AppTest, downloads: dict, key: str) -> pd.DataFrame:
    """The CSV a download button (by key) would hand to the browser, parsed."""
    button = next(b for b in at.get("download_button") if b.proto.id.endswith(key)
                  or getattr(b, "key", None) == key)
    data = downloads[button.proto.deferred_file_id]()
    return pd.read_csv(io.StringIO(data if isinstance(data, str) else data.decode()))


def problems(at: AppTest) -> list:
    return [e.value for e in at.exception] + [e.value for e in at.error]


def test_every_page_renders(monkeypatch, store_root):
    at = app(monkeypatch, store_root).run()
    n_runs = Store(store_root).query("SELECT count(*) AS n FROM runs")["n"].iloc[0]
    for page in PAGES:
        if page != "runs":
            at.switch_page(f"app_pages/{page}.py").run()
        assert not problems(at), (page, problems(at))
        assert at.title[0].value == TITLES[page]
        if page == "runs":
            assert len(at.dataframe[0].value) == n_runs
        if page in ("training", "initializers", "optimizers", "architectures", "curvature",
                    "surfaces", "attention"):
            assert at.get("download_button"), f"{page} offers no download"


def test_optimizer_filter_limits_runs(monkeypatch, store_root):
    at = app(monkeypatch, store_root).run()
    at.multiselect(key="opt").set_value(["adam"]).run()
    assert not problems(at)
    shown = at.dataframe[0].value
    expected = Store(store_root).query("SELECT run_id FROM runs WHERE optimizer = ?", ["adam"])
    assert 0 < len(expected) < 24
    assert sorted(shown["run_id"]) == sorted(expected["run_id"])
    assert set(shown["optimizer"]) == {"adam"}
    assert at.query_params.get("opt") in ("adam", ["adam"])  # the filter is in the URL


def test_runs_csv_equals_store_rows(monkeypatch, store_root, downloads):
    at = app(monkeypatch, store_root).run()
    at.multiselect(key="init").set_value(["xavier", "lecun"]).run()
    got = csv_of(at, downloads, "csv_runs")
    cols = ["run_id", "status", "final_val_acc", "final_train_loss", "seed", "epochs_done"]
    want = Store(store_root).query(
        f"SELECT {', '.join(cols)} FROM runs WHERE init IN ('xavier', 'lecun') ORDER BY run_id")
    got = got[cols].sort_values("run_id").reset_index(drop=True)
    assert len(got) == len(want) > 0
    pd.testing.assert_frame_equal(got, want, check_dtype=False)


def test_training_csv_equals_store_epochs(monkeypatch, store_root, downloads):
    """Two seeds of one configuration: the chart shows mean +/- std over them by default, and
    the per-run curves when that is switched off; both CSVs are checked against the store."""
    store = Store(store_root)
    config = store.query("SELECT dataset, model_label, init, optimizer FROM runs WHERE "
                         "status = 'done' GROUP BY ALL HAVING count(*) >= 2 LIMIT 1").iloc[0]
    ids = store.query("SELECT run_id FROM runs WHERE status = 'done' AND dataset = ? AND "
                      "model_label = ? AND init = ? AND optimizer = ? ORDER BY run_id LIMIT 2",
                      config.tolist())["run_id"].tolist()
    want = store.query("SELECT run_id, epoch, val_acc FROM epochs WHERE run_id IN (?, ?) "
                       "ORDER BY run_id, epoch", ids)
    at = app(monkeypatch, store_root).run()
    at.multiselect(key="compare").set_value(ids).run()
    at.switch_page("app_pages/training.py").run()
    assert not problems(at)
    assert at.toggle(key="train_bands").value
    bands = csv_of(at, downloads, "csv_training_val_acc").sort_values("epoch")
    stats = want.groupby("epoch")["val_acc"].agg(["mean", "std"])
    assert bands["mean"].tolist() == pytest.approx(stats["mean"].tolist())
    assert bands["std"].tolist() == pytest.approx(stats["std"].tolist())

    at.toggle(key="train_bands").set_value(False).run()
    got = csv_of(at, downloads, "csv_training_val_acc").sort_values(["run_id", "epoch"])
    pd.testing.assert_frame_equal(got.reset_index(drop=True), want, check_dtype=False)


def test_initializer_table_matches_formula(monkeypatch, store_root, downloads):
    """Final error mean/std per initializer = mean/std of 1 - final_val_acc over its runs."""
    at = app(monkeypatch, store_root).run()
    at.switch_page("app_pages/initializers.py").run()
    assert not problems(at)
    table = csv_of(at, downloads, "csv_init_table").set_index("init")
    runs = Store(store_root).query("SELECT init, final_val_acc FROM runs")
    err = (1 - runs["final_val_acc"]).groupby(runs["init"])
    assert table["final_error_mean"].to_dict() == pytest.approx(err.mean().to_dict())
    assert table["final_error_std"].to_dict() == pytest.approx(err.std(ddof=1).to_dict())
    assert table["runs"].to_dict() == err.size().to_dict()


def test_missing_and_empty_store_show_guidance(monkeypatch, tmp_path):
    missing = app(monkeypatch, tmp_path / "nowhere").run()
    assert not missing.exception
    assert "train-all runs/quick.toml" in missing.info[0].value
    assert any("quick grid" in b.label for b in missing.button)
    Store(tmp_path / "empty").ensure()
    empty = app(monkeypatch, tmp_path / "empty").run()
    assert not empty.exception
    assert "no runs yet" in empty.info[0].value
    empty.switch_page("app_pages/surfaces.py").run()  # every page: guidance, no traceback
    assert not empty.exception and "make demo" in empty.info[0].value


def test_corrupt_store_shows_error(monkeypatch, tmp_path):
    root = tmp_path / "corrupt"
    make_store(root, n_runs=3, n_epochs=3, seed=1, n_analysed=0)
    part = next((root / "tables" / "runs").glob("r*/*.parquet"))
    part.write_bytes(b"this is not a parquet file" * 10)
    at = app(monkeypatch, root).run()
    assert not at.exception
    assert at.error and "cannot be read" in at.error[0].value


def test_corrupt_epochs_part_shows_error_on_page(monkeypatch, tmp_path):
    root = tmp_path / "corrupt-epochs"
    make_store(root, n_runs=3, n_epochs=3, seed=1, n_analysed=0)
    part = next((root / "tables" / "epochs").glob("r*/*.parquet"))
    part.write_bytes(b"\x00garbage" * 50)
    at = app(monkeypatch, root).run()
    assert not problems(at)  # the runs table is fine
    at.switch_page("app_pages/training.py").run()
    assert not at.exception
    assert at.error and "cannot be read" in at.error[0].value


FAKE_CLI = textwrap.dedent('''
    """Stand-in for `python -m landscape_lib analyze` with the Lab's contract: JSON-lines
    progress, an `analyses` row (running, then done) and result rows keyed by analysis_id."""
    import argparse, json, sys, time
    from datetime import datetime
    from landscape_lib.store import Store
    p = argparse.ArgumentParser()
    p.add_argument("command"); p.add_argument("run"); p.add_argument("--epoch", type=int)
    p.add_argument("--what"); p.add_argument("--store"); p.add_argument("--progress-file")
    p.add_argument("--set", action="append", default=[])
    p.add_argument("--no-progress", action="store_true")
    a = p.parse_args()
    params = {"samples": 512, "top_k": 3, "tol": 0.001}  # the analysis' defaults
    from landscape_lib.config import parse_value  # the real CLI's value parser
    params.update({k: parse_value(v) for k, v in (s.split("=", 1) for s in a.set)})
    store, aid = Store(a.store), f"hessian-{time.time_ns()}"
    row = {"analysis_id": aid, "run_id": a.run, "epoch": a.epoch, "kind": a.what,
           "status": "running", "params_json": json.dumps(params, sort_keys=True),
           "device": "cpu", "engine": "fake", "started_at": datetime.now()}
    store.write("analyses", a.run, [row], part=aid)
    with open(a.progress_file, "a") as f:
        for i in range(3):
            f.write(json.dumps({"fraction": i / 3, "message": f"step {i}"}) + "\\n"); f.flush()
            time.sleep(params.get("sleep", 0.2))
    eigs = [4.0 / (k + 1) for k in range(params["top_k"])]
    store.write("hessian_eigs", a.run, [{"analysis_id": aid, "run_id": a.run, "epoch": a.epoch,
        "which": "top", "k": k + 1, "eigenvalue": v} for k, v in enumerate(eigs)], part=aid)
    store.write("hessian_summary", a.run, [{"analysis_id": aid, "run_id": a.run,
        "epoch": a.epoch, "layer": "<all>", "top_eig": eigs[0], "lam_min": -0.1, "trace": 9.0,
        "trace_se": 0.5, "neg_share": 0.1}], part=aid)
    store.write("analyses", a.run, [{**row, "status": "done", "seconds": 0.6}], part=aid)
''')


def _use_fake_cli(monkeypatch, tmp_path):
    """Point the Lab's subprocess at FAKE_CLI, which writes a small analysis without a model."""
    from dashboard import jobs
    cli = tmp_path / "fake_cli.py"
    cli.write_text(FAKE_CLI)
    monkeypatch.setattr(jobs, "CLI", [sys.executable, str(cli)])


def test_lab_runs_analysis_in_subprocess_then_reuses_it(monkeypatch, tmp_path):
    root = tmp_path / "lab"
    make_store(root, n_runs=2, n_epochs=4, seed=2, n_analysed=0)
    _use_fake_cli(monkeypatch, tmp_path)
    monkeypatch.setenv("PYTHONPATH", str(Path(APP).parents[1]))
    at = app(monkeypatch, root).run()
    at.switch_page("app_pages/lab.py").run()
    run_id = at.selectbox(key="lab_run").value
    at.number_input(key="lab_hessian_top_k").set_value(4)
    at.button(key="lab_run_button").click().run()
    deadline = time.time() + 30
    while not at.success and time.time() < deadline:
        assert not problems(at), problems(at)
        time.sleep(0.3)
        at.run()
    assert at.success, [w.value for w in at.warning]
    assert "cpu" in at.success[0].value
    eig_table = next(d.value for d in at.dataframe if "eigenvalue" in d.value.columns)
    assert eig_table["eigenvalue"].tolist() == pytest.approx([4.0, 2.0, 4 / 3, 1.0])
    stored = Store(root).query("SELECT * FROM analyses WHERE run_id = ?", [run_id])
    assert len(stored) == 1 and json.loads(stored["params_json"][0])["top_k"] == 4
    # Asking again for the same thing shows the stored result without a new subprocess.
    at.switch_page("app_pages/runs.py").run()
    at.switch_page("app_pages/lab.py").run()
    assert at.success and at.button(key="lab_run_button").label == "Run again"
    assert len(Store(root).query("SELECT * FROM analyses")) == 1


def test_new_runs_appear_without_restart(monkeypatch, tmp_path):
    """Rows written after the app started show up within seconds (no reconnect, no reload)."""
    root = tmp_path / "live"
    make_store(root, n_runs=3, n_epochs=3, seed=4, n_analysed=0)
    at = app(monkeypatch, root).run()
    assert len(at.dataframe[0].value) == 3
    store = Store(root)
    first = sorted((root / "tables" / "runs").glob("r*"))[0].name
    new = store.read("runs", first).assign(run_id="r99999-new", status="running")
    store.write("runs", "r99999-new", new)
    deadline = time.time() + 20
    while len(at.dataframe[0].value) == 3 and time.time() < deadline:
        time.sleep(0.5)
        at.run()
    shown = at.dataframe[0].value
    assert "r99999-new" in set(shown["run_id"]) and len(shown) == 4


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
    from dashboard import jobs
    cli = tmp_path / "quick.py"
    cli.write_text(QUICK_GRID)
    monkeypatch.setattr(jobs, "CLI", [sys.executable, str(cli)])
    at = app(monkeypatch, tmp_path / "fresh").run()
    next(b for b in at.button if "quick grid" in b.label).click().run()
    assert not at.exception
    deadline = time.time() + 30
    while not at.title or at.title[0].value != "Runs":
        assert time.time() < deadline, [i.value for i in at.info] + [e.value for e in at.error]
        time.sleep(0.5)
        at.run()
    assert at.dataframe[0].value["run_id"].tolist() == ["quick-1"]


def test_lab_cancel_ends_the_subprocess(monkeypatch, tmp_path):
    from dashboard import jobs
    root = tmp_path / "cancel"
    make_store(root, n_runs=1, n_epochs=2, seed=5, n_analysed=0)
    _use_fake_cli(monkeypatch, tmp_path)
    started = []
    original = jobs.start_analysis
    monkeypatch.setattr(jobs, "start_analysis",
                        lambda *a, **k: started.append(original(*a, **k)) or started[-1])
    at = app(monkeypatch, root).run()
    at.switch_page("app_pages/lab.py").run()
    at.text_input(key="lab_extra").set_value("sleep=30")
    at.button(key="lab_run_button").click().run()
    deadline = time.time() + 20
    while "step 0" not in " ".join(p.proto.text for p in at.get("progress")):
        assert time.time() < deadline and started[0].running
        time.sleep(0.3)
        at.run()
    at.button(key="lab_cancel").click().run()
    assert not problems(at) and at.warning and "cancelled" in at.warning[0].value
    assert started[0].returncode is not None  # the process is gone
    assert not at.success
