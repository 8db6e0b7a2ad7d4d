"""What keeps pages light at 10,000 runs: the data layer's caches keyed on the store snapshot's
versions (dashboard.data.core.by_version, core.versions: a result is reused while the tables it
reads are unchanged, and made again, with the new rows, once one of them changes), and select
boxes of run ids that offer the newest runs only (dashboard.widgets)."""
from __future__ import annotations

import time

import pytest

from dashboard import widgets
from dashboard.data import core, curvature, surfaces
from dashboard.data import runs as runs_data
from dashboard_store import copy_of, sample_root
from test_dashboard import app
from landscape_lib.store import Store


def test_cached_queries_see_a_new_run(tmp_path, tmp_path_factory):
    root = str(copy_of(sample_root(tmp_path_factory), tmp_path))
    store = Store(root)
    tables = ("runs", "hessian_summary")
    before = core.versions(root, tables)
    n = core.run_count(root)
    study = "optimizers"
    measured = set(curvature.run_measures(root, core.Filters(studies=(study,)))["run_id"])
    assert core.versions(root, tables) == before  # nothing changed: the same snapshots
    # A copy of one of the study's runs (the row as the library wrote it), under a new id
    row = store.query("SELECT * FROM runs WHERE study = ? ORDER BY run_id LIMIT 1",
                      [study]).iloc[0].to_dict()
    row["run_id"] = new = f"{row['run_id']}-copy"
    store.write("runs", new, [row])
    time.sleep(core.REFRESH + 0.1)  # the snapshot re-checks its files after REFRESH seconds
    after = core.versions(root, tables)
    assert after[0] != before[0] and after[1] == before[1]  # only `runs` changed
    assert core.run_count(root) == n + 1
    assert new in set(runs_data.runs(root, core.Filters())["run_id"])
    now = curvature.run_measures(root, core.Filters(studies=(study,)))
    assert set(now["run_id"]) == measured | {new}
    assert now.set_index("run_id").loc[new, "final_val_acc"] == pytest.approx(
        row["final_val_acc"])


def test_versions_refuse_a_table_read_from_disk(tmp_path_factory):
    with pytest.raises(ValueError, match="surface_points"):
        core.versions(sample_root(tmp_path_factory), ("surface_points",))


def test_run_choices_are_the_newest_and_the_picked(monkeypatch, tmp_path_factory):
    """A select box of run ids offers the MAX_CHOICES newest runs with results and any run
    picked in the URL, however old (the Surfaces page; Attention uses the same widget)."""
    root = sample_root(tmp_path_factory)
    monkeypatch.setattr(widgets, "MAX_CHOICES", 2)
    have = surfaces.runs_with(root, "surface_points",
                              tuple(runs_data.runs(root, core.Filters())["run_id"]))
    assert len(have) > 3
    at = app(monkeypatch, root, "surfaces")
    box = at.multiselect(key="surf_runs")
    assert box.options == have[:2] and box.value == have[:2]
    assert any(f"The 2 newest of the {len(have)} runs" in c.value for c in at.caption)
    at = app(monkeypatch, root, "surfaces", surf_runs=[have[-1]])
    box = at.multiselect(key="surf_runs")
    assert box.options == [*have[:2], have[-1]] and box.value == [have[-1]]
