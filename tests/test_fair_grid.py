"""A fair grid (issue 10 item 10): 3 seeds where studies compare, per-optimizer learning-rate
sweeps in each optimizer's own range, the chapter's PReLU setup, and each optimizer at its
best rate, chosen from the store's runs."""
import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from conftest import REPO
from landscape_lib.analyses.surface import evaluate
from landscape_lib.errors import ConfigError, StoreError
from landscape_lib.grid import expand_variant, load_grid
from landscape_lib.store import queries
from landscape_lib.store.comparisons import lr_table
from landscape_lib.train.engine import _run_row

GRID = REPO / "runs" / "grid.toml"


@pytest.fixture(scope="module")
def configs():
    return load_grid(GRID)


def test_studies_that_compare_run_three_seeds_and_old_studies_are_kept(configs):
    by = pd.DataFrame([{"study": c.study, "seed": c.seed, "run": c.run_id()} for c in configs])
    seeds = by.groupby("study").seed.apply(lambda s: sorted(set(s)))
    for study in ("A-vit-sam", "C-realformer", "E-initializers", "E-initializers-chapter",
                  "E-optimizers"):
        assert seeds[study] == [0, 1, 2], study
    old = {"A-vit-sam", "B-stem-optimizer", "B-lr-wd", "C-realformer", "E-initializers",
           "E-optimizers"}
    assert old <= set(by.study)
    counts = by.groupby("study").size().to_dict()
    assert counts == {"A-vit-sam": 30, "B-stem-optimizer": 5, "B-lr-wd": 18,
                      "C-realformer": 9, "E-initializers": 24, "E-initializers-chapter": 24,
                      "E-optimizers": 297}
    assert by.run.is_unique


def test_every_optimizer_sweeps_three_rates_in_its_own_range(configs):
    opt = pd.DataFrame([{"optimizer": c.optimizer, "lr": c.lr, "wd": c.weight_decay}
                        for c in configs if c.study == "E-optimizers"])
    rates = opt.groupby("optimizer").lr.apply(lambda s: sorted(set(s)))
    assert len(rates) == 11 and all(len(r) == 3 for r in rates)
    adam = rates["adam"][1]
    # SophiaH clips each coordinate's step to lr * p (p = 0.01): the centre cap ~ Adam's lr
    assert 1 / 3 <= rates["sophia"][1] * 0.01 / adam <= 3
    assert 3 <= adam / rates["lion"][1] <= 10  # Lion: 3-10x smaller than Adam
    assert rates["sgd"][1] > rates["sgd-momentum"][1] > adam
    lion_wd = opt[opt.optimizer == "lion"].wd.iloc[0]
    adamw_wd = opt[opt.optimizer == "adamw"].wd.iloc[0]
    assert rates["lion"][1] * lion_wd == pytest.approx(rates["adamw"][1] * adamw_wd)


def test_the_chapter_setup_is_a_prelu_mlp_on_fashion_mnist_for_3_epochs(configs):
    chapter = [c for c in configs if c.study == "E-initializers-chapter"]
    assert {(c.dataset, c.arch, c.arch_options["activation"], c.epochs) for c in chapter} \
        == {("fashion-mnist", "mlp", "prelu", 3)}
    assert len({c.init for c in chapter}) == 8


def test_a_list_inside_a_variant_sweeps_only_that_variant(tmp_path):
    out = expand_variant({"optimizer": "adam", "lr": [1e-3, 3e-3], "arch_options": {"a": 1}})
    assert out == [{"optimizer": "adam", "arch_options": {"a": 1}, "lr": 1e-3},
                   {"optimizer": "adam", "arch_options": {"a": 1}, "lr": 3e-3}]
    grid = tmp_path / "g.toml"
    grid.write_text('[[study]]\nname = "s"\nseed = [0, 1]\nvariants = [\n'
                    '  { optimizer = "sgd", lr = [0.1, 0.3] },\n  { optimizer = "adam" },\n]\n')
    got = sorted((c.optimizer, c.lr, c.seed) for c in load_grid(grid))
    assert got == [("adam", 1e-3, 0), ("adam", 1e-3, 1), ("sgd", 0.1, 0), ("sgd", 0.1, 1),
                   ("sgd", 0.3, 0), ("sgd", 0.3, 1)]
    grid.write_text('[[study]]\nname = "s"\nvariants = [{ optimizer = "sgd", lr = [] }]\n')
    with pytest.raises(ConfigError, match="empty"):
        load_grid(grid)


def test_prelu_mlp_builds_trains_and_takes_the_vmap_engine(store):
    from landscape_lib.config import RunConfig
    from landscape_lib.models import create_model
    from landscape_lib.train.engine import train_run
    torch.manual_seed(0)  # not whatever state earlier tests of this worker left
    model = create_model("mlp", in_channels=1, image_size=8, num_classes=10, hidden=[16, 16],
                         activation="prelu")
    assert sum(isinstance(m, nn.PReLU) for m in model.modules()) == 2
    assert evaluate._choose_method("auto", False, model) == "vmap"
    x, y = torch.randn(32, 1, 8, 8), torch.randint(0, 10, (32,))
    w = torch.cat([p.detach().flatten() for p in model.parameters()])
    D = torch.randn(2, w.numel()) * 0.1
    coords = np.random.default_rng(0).normal(size=(6, 2))
    run = lambda method: np.concatenate([l for _, l, _, _ in evaluate.evaluate_points(  # noqa
        model, w, D, coords, [(x, y)], method=method)])
    np.testing.assert_allclose(run("vmap"), run("loop"), rtol=1e-5)
    cfg = RunConfig.from_dict(dict(dataset="digits", arch="mlp", epochs=1, train_subset=256,
                                   arch_options={"hidden": [16], "activation": "prelu"},
                                   init="kaiming", optimizer="sgd-momentum", lr=0.05))
    assert train_run(cfg, store, device="cpu", progress=False) == "finished"


def runs_frame():
    """`runs` rows written by the library's own row builder, with known final accuracies."""
    from landscape_lib.config import RunConfig
    rows = []
    acc = {("adam", 1e-4): 0.80, ("adam", 1e-3): 0.90, ("adam", 1e-2): 0.85,
           ("lion", 1e-5): 0.70, ("lion", 3e-5): 0.75, ("lion", 1e-4): 0.88}
    for (name, lr), mean in acc.items():
        for seed in range(3):
            cfg = RunConfig.from_dict(dict(optimizer=name, lr=lr, seed=seed, study="E"))
            row = _run_row(cfg, cfg.run_id(), torch.device("cpu"), 100)
            row.update(status="finished", final_val_acc=mean + 0.01 * (seed - 1))
            rows.append(row)
    df = pd.DataFrame(rows)
    # one adam seed diverges at the rate that would otherwise win on its mean
    df.loc[(df.optimizer == "adam") & (df.lr == 1e-2) & (df.seed == 0),
           ["status", "final_val_acc"]] = ["diverged", 0.999]
    df.loc[(df.optimizer == "adam") & (df.lr == 1e-2) & (df.seed.isin([1, 2])),
           "final_val_acc"] = 0.97
    # one lion run still running: left out and counted
    df.loc[(df.optimizer == "lion") & (df.lr == 1e-4) & (df.seed == 2), "status"] = "running"
    return df


def test_best_lr_per_optimizer_against_a_hand_count(store):
    """Through the store: rows written as the engine writes them, chosen by
    queries.optimizers_at_best_lr."""
    df = runs_frame()
    for i, row in df.iterrows():
        store.write("runs", row["run_id"], [row.to_dict()])  # each under its own run id
    best = queries.optimizers_at_best_lr(store, "E").set_index("optimizer")
    # adam: 1e-2 has the best mean but a diverged seed -> 1e-3 (0.90 +- 0.01 over 3 seeds)
    assert best.loc["adam", "best_lr"] == 1e-3
    assert best.loc["adam", "final_val_acc"] == pytest.approx(0.90)
    assert best.loc["adam", "n"] == 3 and best.loc["adam", "se"] == pytest.approx(0.01 / np.sqrt(3))
    assert not best.loc["adam", "at_edge"]
    # lion: best at its largest rate -> flagged; n counts the two finished seeds
    assert best.loc["lion", "best_lr"] == 1e-4 and best.loc["lion", "at_edge"]
    assert best.loc["lion", "n"] == 2
    assert best.loc["lion", "final_val_acc"] == pytest.approx(np.mean([0.87, 0.88]))
    assert best.loc["lion", "lrs_tried"] == [1e-5, 3e-5, 1e-4]
    table = lr_table(df).set_index(["optimizer", "lr"])
    assert table.loc[("lion", 1e-4), "n_missing"] == 1
    assert table.loc[("adam", 1e-2), "n_diverged"] == 1
    assert set(best.model_label) == {"mlp"} and set(best.dataset) == {"digits"}
    assert queries.optimizers_at_best_lr(store, "no such study").empty
    with pytest.raises(StoreError, match="final_val_acc"):
        queries.optimizers_at_best_lr(store, "E", "train_loss")
