"""bench/grid_cost.py (issue 10 item 11): the grid's cost classes, estimates from hand-written
times, from a trained store's epoch and analysis times and from short measured runs, and the
times derived for classes not measured."""
import importlib.util
import json
import sys

import numpy as np
import pytest

from conftest import REPO
from gridtext import grid_text, tiny_mlp
from landscape_lib.grid import load_grid
from landscape_lib.store import Store
from landscape_lib.train.engine import train_run

SPEC = importlib.util.spec_from_file_location("grid_cost", REPO / "bench" / "grid_cost.py")
grid_cost = sys.modules["grid_cost"] = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(grid_cost)

TINY = grid_text(
    tiny_mlp("digits", epochs=3, batch_size=64, lr=0.05, train_subset=256),
    {"name": "opt", "variants": [{"optimizer": "sgd", "lr": [0.05, 0.1]},
                                 {"optimizer": "sam-sgd"}]},
    {"name": "longer", "epochs": 5, "optimizer": "adam", "seed": [0, 1]},
    analyses={"interpolation": {"samples": 64, "points": 5}})
PLAIN = ("digits", "mlp hidden=16", "plain", 64, 256)


@pytest.fixture
def tiny(tmp_path):
    grid = tmp_path / "tiny.toml"
    grid.write_text(TINY)
    return grid, load_grid(grid)


def test_the_grid_has_24_classes_covering_every_run():
    configs = load_grid(REPO / "runs" / "grid.toml")
    reps = grid_cost.representatives(configs)
    assert len(configs) == 407 and len(reps) == 24
    assert {grid_cost.cost_class(c) for c in configs} == set(reps)
    assert {k.kind for k in reps} == {"plain", "sam", "sophia"}


def test_estimate_by_hand(tiny, tmp_path, capsys):
    grid, configs = tiny
    times = tmp_path / "times.toml"
    times.write_text('[[class]]\ndataset = "digits"\nmodel = "mlp hidden=16"\nkind = "plain"\n'
                     'batch_size = 64\ntrain_subset = 256\nepoch_s = 2.0\nstartup_s = 10.0\n'
                     'analyses_s = 30.0\n')
    studies, missing = grid_cost.estimate(configs, grid_cost.load_timings(times))
    # opt: 2 plain runs x (10 + 3 x 2) training + 30 analyses each; the SAM run is unmeasured
    assert studies["opt"] == {"runs": 3, "train_s": 32.0, "analyses_s": 60.0, "unmeasured": 1,
                              "analyses_unmeasured": 0, "derived": 0}
    assert studies["longer"]["train_s"] == 2 * (10 + 5 * 2.0)
    assert list(missing.values()) == [1] and next(iter(missing)).kind == "sam"
    table = grid_cost.markdown(studies, missing)
    assert "| **whole grid** | 5 | 0.02 | 0.03 | **0.05** |" in table and "/ sam /" in table
    grid_cost.main(["estimate", str(grid), "--timings", str(times)])
    assert "| **whole grid** | 5 |" in capsys.readouterr().out


def test_timings_from_a_store_are_its_epoch_and_analysis_times(tiny, tmp_path):
    """What the lead collects from a real study-A store: epochs.epoch_time and the seconds of
    the grid's analyses, per class (median over runs)."""
    from landscape_lib.pipeline import run_scheduled
    _, configs = tiny
    store = Store(tmp_path / "store").ensure()
    cfg = configs[0]
    assert train_run(cfg, store, device="cpu", progress=False) == "finished"
    run_scheduled(cfg, store, device="cpu")
    timings = grid_cost.timings_from_store(store.root, {"interpolation"})
    t = timings[grid_cost.CostClass(*PLAIN)]
    ep = store.read("epochs", cfg.run_id()).set_index("epoch").epoch_time
    assert t.epoch_s == pytest.approx(np.median(ep.loc[[2, 3]]))
    assert t.startup_s == pytest.approx(max(ep.sum() - 3 * t.epoch_s, 0.0))
    done = store.query("SELECT seconds FROM analyses WHERE run_id = ?", [cfg.run_id()])
    assert len(done) == 1 and t.analyses_s == pytest.approx(done.seconds.sum())
    assert grid_cost.timings_from_store(store.root, {"hessian"})[
        grid_cost.CostClass(*PLAIN)].analyses_s is None  # only the grid's kinds count


def test_unmeasured_kinds_and_models_are_derived_and_said_so():
    C = grid_cost.CostClass
    T = grid_cost.Timing
    known = {C("d", "a", "plain", 8): T(1.0, 10.0, 5.0), C("d", "a", "sam", 8): T(2.2, 12.0, 5.0),
             C("d", "b", "plain", 8): T(3.0, 20.0, 7.0)}
    classes = set(known) | {C("d", "b", "sam", 8), C("d", "c", "plain", 8),
                            C("d", "b", "sophia", 8)}
    out = grid_cost.derive(classes, known, {"c": "a"})
    assert out[C("d", "b", "sam", 8)].epoch_s == pytest.approx(3.0 * 2.2)
    assert out[C("d", "b", "sam", 8)].startup_s == pytest.approx(20.0 * 1.2)
    assert out[C("d", "b", "sam", 8)].source.startswith("plain x 2.20")
    assert out[C("d", "c", "plain", 8)].epoch_s == 1.0
    assert "assumed" in out[C("d", "c", "plain", 8)].source
    assert C("d", "b", "sophia", 8) not in out  # no sophia/plain ratio measured anywhere


def test_measure_on_the_cpu_then_estimate(tiny, tmp_path):
    _, configs = tiny
    store = tmp_path / "timing"
    path = grid_cost.measure(configs, store, epochs=2, device="cpu", progress=False)
    entries = json.loads(path.read_text())
    assert [e["kind"] for e in entries] == ["plain", "sam"]
    assert all(e["status"] == "finished" and len(e["epoch_times"]) == 3 for e in entries)
    # analyses are timed once per (dataset, model): on the first class only
    assert entries[0]["analyses_wall_s"] > 0 and entries[1]["analyses_wall_s"] is None
    timings = grid_cost.load_timings(path)
    assert all(t.analyses_s == entries[0]["analyses_wall_s"] for t in timings.values())
    studies, missing = grid_cost.estimate(configs, timings)
    assert not missing and all(s["train_s"] > 0 for s in studies.values())
    again = grid_cost.measure(configs, store, epochs=2, device="cpu", progress=False)
    assert json.loads(again.read_text()) == entries  # every class done: nothing re-timed


def test_measure_skips_what_is_covered_and_times_only_the_classes_asked(tiny, tmp_path):
    _, configs = tiny
    plain = grid_cost.CostClass(*PLAIN)
    known = {plain: grid_cost.Timing(1.0, 1.0, 1.0)}
    path = grid_cost.measure(configs, tmp_path / "a", epochs=1, device="cpu", progress=False,
                             covered=lambda timed: known)
    entries = json.loads(path.read_text())
    assert [e["kind"] for e in entries] == ["sam"] and entries[0]["analyses_wall_s"] is None
    path = grid_cost.measure(configs, tmp_path / "b", epochs=1, device="cpu", progress=False,
                             only=["/ sam /"])
    assert [e["kind"] for e in json.loads(path.read_text())] == ["sam"]


def test_proxy_data_keeps_shapes():
    from landscape_lib.config import RunConfig
    cfg = RunConfig.from_dict({"dataset": "fashion-mnist", "arch": "mlp", "epochs": 20})
    timed = grid_cost.timing_config(cfg, 3, proxy=True)
    assert timed.dataset == "synthetic" and timed.epochs == 3
    assert timed.dataset_options == {"n_train": 60000, "n_test": 10000, "channels": 1,
                                     "size": 28, "num_classes": 10}
    assert grid_cost.cost_class(cfg).dataset == "fashion-mnist"
    folder = RunConfig.from_dict({"dataset": "folder", "dataset_options": {"path": "x"}})
    assert grid_cost.cost_class(folder).dataset == "cifar10"  # the JPEG copy is CIFAR-10
