"""The Attention page's views, one at a time, on the store the library wrote (see
test_dashboard.py for the fixtures and helpers)."""
from __future__ import annotations

from landscape_lib.store import Store
from test_dashboard import (app, csv_of, downloads, problems, store_root,  # noqa: F401
                            vega_specs)


def test_attention_one_view_at_a_time(monkeypatch, store_root, downloads):
    store = Store(store_root)
    ids = store.query("SELECT DISTINCT run_id FROM attention_jsd ORDER BY run_id")["run_id"]
    at = app(monkeypatch, store_root, "attention", jsd_runs=ids.tolist()[:2])
    # The divergence of both runs in one chart (a panel each, one colour scale) and one CSV
    heat = vega_specs(at)
    assert len(heat) == 1 and len(heat[0]["hconcat"]) == len(ids[:2])
    assert heat[0]["resolve"]["scale"]["color"] == "shared"
    jsd = csv_of(at, downloads, "csv_jsd")
    want = store.query("SELECT run_id, count(*) AS n FROM attention_jsd WHERE list_contains(?, "
                       "run_id) AND epoch = (SELECT max(epoch) FROM attention_jsd a WHERE "
                       "a.run_id = attention_jsd.run_id) GROUP BY run_id", [ids.tolist()[:2]])
    assert jsd.groupby("run_id").size().to_dict() == dict(zip(want["run_id"], want["n"]))
    at.segmented_control(key="att_view").set_value("Hessian blocks against input scale").run()
    assert not problems(at) and not any("hconcat" in s for s in vega_specs(at))
    sweep = csv_of(at, downloads, "csv_attention_hessian")
    assert (sweep["frobenius"] > 0).all() and sweep["scale"].nunique() > 1
