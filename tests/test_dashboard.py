"""The dashboard's pages, driven by Streamlit's AppTest on a store the library wrote
(dashboard.sample_store: tiny runs trained and analysed by the library's own writers).

Expected values come from direct queries of the store through landscape_lib.store.Store and
from SciPy, never from the dashboard's own query or statistics code.
"""
from __future__ import annotations

import io
import json
import math
import re
from pathlib import Path
from xml.etree import ElementTree

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps
from streamlit.runtime.media_file_manager import MediaFileManager
from streamlit.testing.v1 import AppTest

from dashboard import figures3d
from dashboard_store import sample_root
from landscape_lib.store import Store
from landscape_lib.store.schema import WHOLE_MODEL

APP = str(Path(__file__).resolve().parents[1] / "dashboard" / "app.py")
PAGES = {"runs": "Runs", "training": "Training", "initializers": "Initializers",
         "optimizers": "Optimizers", "architectures": "Architectures",
         "curvature": "Curvature", "surfaces": "Surfaces", "attention": "Attention",
         "report": "Study report", "lab": "Lab"}


@pytest.fixture(scope="session")
def store_root(tmp_path_factory) -> str:
    return sample_root(tmp_path_factory)


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


def app(monkeypatch, root, page: str | None = None, **params) -> AppTest:
    """The app on `root`, at `page`, with URL parameters (single values through the URL; AppTest
    keeps one value per URL key, so lists are set on their bound multiselects)."""
    monkeypatch.setenv("LANDSCAPE_STORE", str(root))
    at = AppTest.from_file(APP, default_timeout=90)
    for key, value in params.items():
        if not isinstance(value, list):
            at.query_params[key] = value
    if page:  # opened directly (its url_path is its file name): one script run, not two
        at.switch_page(f"app_pages/{page}.py")
    at.run()
    for key, value in params.items():  # the sidebar's compare first: page widgets follow it
        if isinstance(value, list):
            at.multiselect(key=key).set_value(value)
    if any(isinstance(value, list) for value in params.values()):
        at.run()
    assert not problems(at), problems(at)
    return at


def fetch(at: AppTest, downloads: dict, key: str):
    """What a download button (by key) would hand to the browser."""
    button = next(b for b in at.get("download_button") if b.proto.id.endswith(key)
                  or getattr(b, "key", None) == key)
    return downloads[button.proto.deferred_file_id]()


def csv_of(at: AppTest, downloads: dict, key: str) -> pd.DataFrame:
    data = fetch(at, downloads, key)
    return pd.read_csv(io.StringIO(data if isinstance(data, str) else data.decode()))


def vega_specs(at: AppTest) -> list[dict]:
    """The Vega-Lite specs of the charts on the page."""
    return [json.loads(c.proto.spec) for c in at.get("vega_lite_chart")]


def problems(at: AppTest) -> list:
    return [e.value for e in at.exception] + [e.value for e in at.error]


def t_interval(values):
    v = np.asarray(values, float)
    half = sps.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v))
    return v.mean(), v.mean() - half, v.mean() + half


def test_every_page_renders(monkeypatch, store_root):
    """One AppTest visits every page; each offers downloads; the run table lists every run."""
    at = app(monkeypatch, store_root)
    n_runs = Store(store_root).query("SELECT count(*) AS n FROM runs")["n"].iloc[0]
    for page, title in PAGES.items():
        if page != "runs":
            at.switch_page(f"app_pages/{page}.py").run()
        assert not problems(at), (page, problems(at))
        assert at.title[0].value == title
        if page == "runs":
            assert len(at.dataframe[0].value) == n_runs
        if page != "lab":
            assert at.get("download_button"), f"{page} offers no download"


def test_study_filter_in_url_and_folder_label(monkeypatch, store_root):
    store = Store(store_root)
    at = app(monkeypatch, store_root, study="initializers")
    want = store.query("SELECT run_id FROM runs WHERE study = 'initializers'")["run_id"]
    assert sorted(at.dataframe[0].value["run_id"]) == sorted(want)
    assert at.multiselect(key="study").value == ["initializers"]
    at.multiselect(key="study").set_value(["folder"]).run()
    assert at.query_params["study"] in ("folder", ["folder"])
    # A folder data set is labelled by its folder's name, not "folder".
    assert at.multiselect(key="dataset").options == ["tinyshapes"]
    assert set(at.dataframe[0].value["data_set"]) == {"tinyshapes"}


def test_factor_page_defaults_to_its_study_with_intervals_over_seeds(
        monkeypatch, store_root, downloads):
    """Optimizers: the optimizers study, grouped by model (lr follows the optimizer: not a
    group); each row's n, and its 95% intervals over the two seeds, equal SciPy's."""
    at = app(monkeypatch, store_root, "optimizers")
    assert at.selectbox(key="optimizer_study").value == "optimizers"
    assert at.multiselect(key="optimizer_group").value == ["model_label"]
    table = csv_of(at, downloads, "csv_optimizer_table")
    runs = Store(store_root).query("SELECT * FROM runs WHERE study = 'optimizers'")
    assert len(table) == runs.groupby(["optimizer", "model_label"]).ngroups == 6
    for row in table.itertuples():
        mine = runs[(runs["optimizer"] == row.optimizer) & (runs["model_label"] == row.model_label)]
        assert row.runs == len(mine) == 2
        mean, lo, hi = t_interval(mine["final_val_acc"])
        assert (row.final_val_acc, row.final_val_acc_lo, row.final_val_acc_hi) == pytest.approx(
            (mean, max(lo, 0), min(hi, 1)))
        g, glo, ghi = np.exp(t_interval(np.log(mine["final_val_loss"])))  # log scale
        assert (row.final_val_loss, row.final_val_loss_lo, row.final_val_loss_hi) == \
            pytest.approx((g, glo, ghi))
        assert 0 <= row.final_val_acc_lo <= row.final_val_acc_hi <= 1
    # Group by any key, e.g. the seed as well: groups of one run have a value and no interval.
    at.multiselect(key="optimizer_group").set_value(["model_label", "seed"]).run()
    table = csv_of(at, downloads, "csv_optimizer_table")
    assert (table["runs"] == 1).all() and table["final_val_acc_lo"].isna().all()
    # Only the open view is drawn: the curves are not on the page until chosen.
    assert not any(b.proto.id.endswith("csv_optimizer_val_acc") for b in at.get("download_button"))
    at.segmented_control(key="optimizer_view").set_value("Curves over epochs").run()
    assert not any(b.proto.id.endswith("csv_optimizer_table") for b in at.get("download_button"))
    curve = csv_of(at, downloads, "csv_optimizer_val_acc")
    assert (curve["runs"] == 1).all() and curve["val_acc"].notna().all()


def test_optimizers_at_their_best_learning_rate(monkeypatch, store_root, downloads):
    """The view holds the library's choice (queries.optimizers_at_best_lr on the Store) and
    each mean's 95% interval over its seeds as SciPy's t quantile gives it."""
    from landscape_lib.store import queries
    at = app(monkeypatch, store_root, "optimizers", optimizer_view="At best learning rate")
    shown = csv_of(at, downloads, "csv_best_lr").set_index(["model_label", "optimizer"])
    store = Store(store_root)
    want = queries.optimizers_at_best_lr(store, "optimizers").set_index(["model_label",
                                                                          "optimizer"])
    assert len(shown) == len(want) == 6
    runs = store.query("SELECT * FROM runs WHERE study = 'optimizers'")
    for (model, opt), row in want.iterrows():
        got = shown.loc[(model, opt)]
        assert (got["best_lr"], got["final_val_acc"], got["n"]) == pytest.approx(
            (row["best_lr"], row["final_val_acc"], row["n"]))
        mine = runs[(runs["model_label"] == model) & (runs["optimizer"] == opt)
                    & (runs["lr"] == row["best_lr"])]["final_val_acc"]
        _, lo, hi = t_interval(mine)
        assert (got["lo"], got["hi"]) == pytest.approx((max(lo, 0), min(hi, 1)))
    sweep = csv_of(at, downloads, "csv_lr_sweep")
    assert sweep["best"].sum() == len(want)


def test_paired_comparison_within_matched_configurations(monkeypatch, store_root, downloads):
    """SAM-Adam and SGD against Adam within each model: difference of accuracy and ratio of
    lambda_max over the seeds they share, as SciPy's paired t-test computes them."""
    at = app(monkeypatch, store_root, "optimizers", optimizer_baseline="adam",
             optimizer_view="Paired comparison")
    paired = csv_of(at, downloads, "csv_paired_optimizer")
    store = Store(store_root)
    runs = store.query("""SELECT r.run_id, r.optimizer, r.model_label, r.seed, r.final_val_acc,
                                 h.top_eig FROM runs r JOIN hessian_summary h USING (run_id)
                          WHERE r.study = 'optimizers' AND h.layer = '<all>'
                          QUALIFY row_number() OVER (PARTITION BY r.run_id
                                                     ORDER BY h.epoch DESC) = 1""")
    for model, group in runs.groupby("model_label"):
        base = group[group["optimizer"] == "adam"].set_index("seed").sort_index()
        sam = group[group["optimizer"] == "sam-adam"].set_index("seed").sort_index()
        acc = paired[(paired["configuration"] == model) & (paired["optimizer"] == "sam-adam")
                     & (paired["quantity"] == "final_val_acc")].iloc[0]
        d = sam["final_val_acc"] - base["final_val_acc"]
        assert acc["effect"] == "difference" and acc["paired"]
        assert acc["estimate"] == pytest.approx(d.mean())
        assert acc["p_value"] == pytest.approx(
            sps.ttest_rel(sam["final_val_acc"], base["final_val_acc"]).pvalue, nan_ok=True)
        top = paired[(paired["configuration"] == model) & (paired["optimizer"] == "sam-adam")
                     & (paired["quantity"] == "top_eig")].iloc[0]
        ratio = np.log(sam["top_eig"] / base["top_eig"])
        _, lo, hi = t_interval(ratio)
        assert top["effect"] == "ratio"
        assert (top["estimate"], top["lo"], top["hi"]) == pytest.approx(
            (math.exp(ratio.mean()), math.exp(lo), math.exp(hi)))


def test_training_groups_by_any_key(monkeypatch, store_root, downloads):
    at = app(monkeypatch, store_root, "training", study="initializers")
    at.multiselect(key="train_group").set_value(["init"]).run()
    assert not problems(at)
    got = csv_of(at, downloads, "csv_training_train_loss")
    want = Store(store_root).query("""
        SELECT r.init, e.epoch, count(*) AS n, exp(avg(ln(e.train_loss))) AS g
        FROM epochs e JOIN runs r USING (run_id) WHERE r.study = 'initializers'
        GROUP BY ALL ORDER BY ALL""")
    got = got.sort_values(["group", "epoch"]).reset_index(drop=True)
    assert got["group"].tolist() == want["init"].tolist()
    assert got["runs"].tolist() == want["n"].tolist()
    assert got["train_loss"].tolist() == pytest.approx(want["g"].tolist())


def test_runs_page_columns_diff_parallel_and_scatter(monkeypatch, store_root, downloads):
    store = Store(store_root)
    ids = store.query("SELECT run_id FROM runs WHERE study = 'optimizers' AND seed = 0 "
                      "ORDER BY run_id LIMIT 2")["run_id"].tolist()
    at = app(monkeypatch, store_root, study="optimizers", cols=["final_val_acc", "lr"],
             compare=ids)
    table = at.dataframe[0].value
    assert list(table.columns) == ["run_id", "final_val_acc", "lr"]  # metrics first, from URL
    at.multiselect(key="cols").set_value(["optimizer", "best_val_acc"]).run()
    assert list(at.dataframe[0].value.columns) == ["run_id", "optimizer", "best_val_acc"]
    diff = csv_of(at, downloads, "csv_config_diff").set_index("key")
    a, b = (json.loads(c) for c in store.query(
        "SELECT config_json FROM runs WHERE list_contains(?, run_id) ORDER BY run_id",
        [ids])["config_json"])
    assert set(diff.index) == {k for k in a if a[k] != b[k]} == {"optimizer"}
    assert at.segmented_control(key="runs_view").value is None and not vega_specs(at)
    at.segmented_control(key="runs_view").set_value("Parallel coordinates").run()
    parallel = csv_of(at, downloads, "csv_parallel")
    assert set(parallel["run_id"]) == set(store.query(
        "SELECT run_id FROM runs WHERE study = 'optimizers'")["run_id"])
    assert parallel["position"].between(0, 1).all()
    at.segmented_control(key="runs_view").set_value(
        "Final metric against a hyperparameter").run()
    scatter = csv_of(at, downloads, "csv_hp_scatter")
    assert len(scatter) == 12


def test_curvature_one_epoch_per_run(monkeypatch, store_root, downloads):
    store = Store(store_root)
    ids = store.query("SELECT run_id FROM runs WHERE study = 'initializers' "
                      "ORDER BY run_id")["run_id"].tolist()
    at = app(monkeypatch, store_root, "curvature", compare=ids)
    assert at.segmented_control(key="curv_view").options == [
        "Per run", "Table", "Density", "Per layer", "Sharpness and generalization"]  # one epoch
    eigs = csv_of(at, downloads, "csv_top_eigs").sort_values(["run_id", "k"])
    want = store.query("SELECT run_id, k, eigenvalue FROM hessian_eigs WHERE which = 'top' AND "
                       "list_contains(?, run_id) ORDER BY run_id, k", [ids])
    assert eigs["eigenvalue"].tolist() == pytest.approx(want["eigenvalue"].tolist())
    # The five per-run quantities are panels of one chart (one view for the browser)
    panels = vega_specs(at)
    assert len(panels) == 1 and [len(r["hconcat"]) for r in panels[0]["vconcat"]] == [3, 2]
    assert [fetch(at, downloads, f"csv_per_run_{kind}")[:4] for kind in ("png", "svg")] == [
        b"\x89PNG", "<svg"]
    lam = csv_of(at, downloads, "csv_per_run")
    assert len(lam) == len(ids) and lam["lam_min"].notna().all()
    assert set(lam["lam_min_status"]) <= {"converged", "not converged", "not measured"}
    assert not at.dataframe  # the default view is one chart; the table is a view of its own
    at.segmented_control(key="curv_view").set_value("Table").run()
    assert len(at.dataframe) == 1 and not vega_specs(at)
    summary = csv_of(at, downloads, "csv_hessian_summary")
    stored = store.query("SELECT near_zero_share FROM hessian_summary WHERE layer = ? "
                         "AND list_contains(?, run_id)", [WHOLE_MODEL, ids])["near_zero_share"]
    shown = pd.to_numeric(summary["near_zero_share"])  # the analysis now always measures it
    assert shown.between(0, 1).all() and sorted(shown) == pytest.approx(sorted(stored), abs=1e-4)
    for view, key in (("Density", "csv_density"), ("Per layer", "csv_layers")):
        at.segmented_control(key="curv_view").set_value(view).run()
        assert not problems(at)
        df = csv_of(at, downloads, key)
        assert set(df["run_id"]) == set(ids)
    assert (df.groupby("run_id")["depth"].min() == 0).all()


def test_curvature_over_epochs_and_sharpness_over_direction_seeds(
        monkeypatch, store_root, downloads):
    store = Store(store_root)
    twice = store.query("SELECT run_id FROM hessian_summary WHERE layer = '<all>' GROUP BY ALL "
                        "HAVING count(DISTINCT epoch) > 1 ORDER BY run_id")["run_id"].tolist()
    at = app(monkeypatch, store_root, "curvature", compare=twice, curv_view="Over epochs")
    df = csv_of(at, downloads, "csv_epochs_top_eig")
    assert df.groupby("run_id")["epoch"].nunique().min() == 2
    at.segmented_control(key="curv_view").set_value("Sharpness and generalization").run()
    sharp = csv_of(at, downloads, "csv_sharpness").set_index("run_id")
    want = store.query("""SELECT run_id, avg((curvature_x + curvature_y) / 2) AS c,
                                 count(DISTINCT dir_seed) AS n FROM surface_summary
                          WHERE list_contains(?, run_id) GROUP BY run_id""", [twice])
    for row in want.itertuples():
        assert row.n == 2 and sharp.loc[row.run_id, "n_dir_seeds"] == 2
        assert sharp.loc[row.run_id, "surface_curvature"] == pytest.approx(row.c)
    assert set(sharp.index) == set(twice)  # the compare set, nothing else


def test_surfaces_six_runs_scales_and_open_view_only(monkeypatch, store_root, downloads):
    store = Store(store_root)
    have = store.query("SELECT DISTINCT run_id FROM surface_points ORDER BY run_id")["run_id"]
    at = app(monkeypatch, store_root, "surfaces", surf_runs=have.tolist()[:6])
    assert len(at.multiselect(key="surf_runs").value) == 6
    label = at.selectbox(key=f"surf_pick_{have[0]}").value
    assert re.search(r"random seed \d+ · 7x7", label), label
    # By default one Vega heat map per run (no Plotly on the page), the centre marked, axes
    # named after the directions, one shared colour scale
    assert at.radio(key="surf_kind").value == "heat map" and not at.get("plotly_chart")
    heat = vega_specs(at)
    # two rows of three panels, each row within the page's width
    assert len(heat) == 1 and [len(row["hconcat"]) for row in heat[0]["vconcat"]] == [3, 3]
    panel = heat[0]["vconcat"][0]["hconcat"][0]
    assert 3 * (panel["width"] + figures3d.AXIS) + figures3d.LEGEND <= figures3d.WIDTH
    assert "random 1" in panel["layer"][0]["encoding"]["x"]["title"]
    assert panel["layer"][1]["mark"]["shape"] == "cross"
    assert heat[0]["resolve"]["scale"]["color"] == "shared"
    assert not at.dataframe  # the tables on request
    at.segmented_control(key="surf_table").set_value("Surface statistics").run()
    shown = csv_of(at, downloads, "csv_surface_summary").set_index("analysis_id")
    want = store.query("SELECT analysis_id, curvature_x FROM surface_summary WHERE "
                       "list_contains(?, analysis_id)", [shown.index.tolist()])
    assert len(shown) == 6 and shown.loc[want["analysis_id"], "curvature_x"].tolist() == \
        pytest.approx(want["curvature_x"].tolist())
    at.radio(key="surf_scale").set_value("per panel").run()
    assert vega_specs(at)[0]["resolve"]["scale"]["color"] == "independent"
    at.radio(key="surf_scale").set_value("shared").run()
    at.radio(key="surf_kind").set_value("contour").run()
    assert len(at.get("plotly_chart")) == 1  # Plotly only on request, one figure
    at.radio(key="surf_kind").set_value("3-D surface").run()
    fig = json.loads(at.get("plotly_chart")[0].proto.spec)
    scenes = [v for k, v in fig["layout"].items() if k.startswith("scene")]
    assert "random 1" in scenes[0]["xaxis"]["title"]["text"]
    assert sum(t["type"] == "scatter3d" for t in fig["data"]) == 6  # the centres
    zr = {tuple(s["zaxis"]["range"]) for s in scenes}
    assert len(zr) == 1  # shared
    at.radio(key="surf_scale").set_value("per panel").run()
    fig = json.loads(at.get("plotly_chart")[0].proto.spec)
    assert len({tuple(v["zaxis"]["range"]) for k, v in fig["layout"].items()
                if k.startswith("scene")}) == 6
    svg = fetch(at, downloads, "csv_surface_points_svg")
    ElementTree.fromstring(svg)
    at.segmented_control(key="surf_view").set_value("Interpolation").run()
    assert not problems(at) and not at.get("plotly_chart")


def test_chart_downloads_are_images_and_palette(monkeypatch, store_root, downloads):
    from dashboard import charts
    at = app(monkeypatch, store_root, "training")
    # Both default metrics in one chart (one view for the browser), each with its own files
    (both,) = vega_specs(at)
    assert [len(row["hconcat"]) for row in both["vconcat"]] == [2]
    png = fetch(at, downloads, "csv_training_val_acc_png")
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    svg = fetch(at, downloads, "csv_training_val_acc_svg")
    assert ElementTree.fromstring(svg).tag.endswith("svg")
    df = pd.DataFrame({"s": [f"series {i:02d}" for i in range(30)], "epoch": 1, "v": 0.0})
    enc = {k: v.to_dict()["scale"]["range"] for k, v in charts.series(df, "s").items()}
    styles = {(enc["color"][i % 10], str(enc["strokeDash"][i % 3])) for i in range(30)}
    assert len(styles) == 30  # 30 series, 30 distinct colour-and-dash pairs
    spec = charts.lines(df, "epoch", "v", "s").to_dict()
    assert spec["layer"][0]["encoding"]["x"]["axis"]["format"] == "d"


def test_study_report(monkeypatch, store_root, downloads):
    at = app(monkeypatch, store_root, "report", report_study="optimizers")
    # One factor's section on the page at a time, each reachable from the URL's control
    assert len(at.segmented_control(key="report_factor").options) >= 2
    shown = set()
    for factor in ("optimizer", "model_label"):
        at.segmented_control(key="report_factor").set_value(factor).run()
        assert not problems(at) and len(at.subheader) == 1 and len(vega_specs(at)) == 1
        shown.add(at.subheader[0].value.split(" (")[0])
        assert not csv_of(at, downloads, f"csv_report_levels_{factor}").empty
    assert shown >= {"optimizer", "model"}
    md = fetch(at, downloads, "report_md")
    assert "## optimizer" in md and "data:image/png;base64," in md and "| sam-adam |" in md
    html = fetch(at, downloads, "report_html")
    assert html.count("<svg") >= 2 and "Paired comparison" in html


def test_dashboard_listens_on_loopback_by_default():
    import tomllib
    config = tomllib.loads((Path(APP).parents[1] / ".streamlit" / "config.toml").read_text())
    assert config["server"]["address"] == "127.0.0.1"

