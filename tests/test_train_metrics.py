"""Every recorded per-epoch metric checked against an independent computation on a tiny model."""
import math

import numpy as np
import pytest
import torch
from torch import nn

from conftest import tiny_config
from landscape_lib.data import DeviceData, load_dataset
from landscape_lib.models import create_model
from landscape_lib.train.engine import train_run


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from landscape_lib.store import Store
    store = Store(tmp_path_factory.mktemp("s") / "store").ensure()
    # Full batch (one step per epoch) and plain SGD, so each epoch is one known update.
    cfg = tiny_config(batch_size=128, checkpoint_epochs=[0, 1, 2, 3], trajectory="full",
                      augment=False)
    assert train_run(cfg, store, progress=False) == "finished"
    rid = cfg.run_id()
    epochs = store.query("SELECT * FROM epochs WHERE run_id = ? ORDER BY epoch", [rid])
    layers = store.query("SELECT * FROM layers WHERE run_id = ? ORDER BY epoch, layer_index", [rid])
    splits = load_dataset("synthetic", n_train=128, n_test=64)
    data = DeviceData(splits, "cpu")
    x_tr, y_tr = next(iter(data.eval_batches("train", 10_000)))
    x_te, y_te = next(iter(data.eval_batches("test", 10_000)))
    states = [torch.load(store.artifacts_dir / rid / "checkpoints" / f"epoch_{e:04d}.pt")
              for e in range(4)]
    model = create_model("mlp", in_channels=1, image_size=8, num_classes=4, hidden=[16])
    return dict(cfg=cfg, store=store, rid=rid, epochs=epochs, layers=layers, model=model,
                states=states, train=(x_tr, y_tr), test=(x_te, y_te))


def _loss_grad(model, state, x, y):
    model.load_state_dict(state)
    model.zero_grad()
    logits = model(x)
    loss = nn.functional.cross_entropy(logits, y)
    loss.backward()
    grad = torch.cat([p.grad.reshape(-1) for p in model.parameters()])
    acc = (logits.argmax(1) == y).float().mean().item()
    return loss.item(), grad, acc


def _flat(state, model):
    names = [n for n, _ in model.named_parameters()]
    return torch.cat([state[n].reshape(-1).float() for n in names])


def test_epoch_rows_complete(trained):
    df = trained["epochs"]
    assert df["epoch"].tolist() == [0, 1, 2, 3]
    metrics = ["train_loss", "train_acc", "val_loss", "val_acc", "train_loss_running",
               "train_acc_running", "grad_norm", "weight_norm", "param_change",
               "loss_improvement", "lr", "epoch_time", "wall_time", "images_per_s",
               "peak_mem_mb", "avg_cond", "avg_spectral_norm", "avg_eff_rank_ratio"]
    assert df.loc[df.epoch > 0, metrics].notna().all().all()
    assert (df["mem_kind"] == "rss").all()
    assert not df["diverged"].any()


def test_train_loss_grad_norm_and_update(trained):
    model, states, (x, y) = trained["model"], trained["states"], trained["train"]
    df = trained["epochs"].set_index("epoch")
    for e in (0, 1, 2, 3):  # train_loss: eval mode at the epoch's own weights, every epoch
        loss, _, acc = _loss_grad(model, states[e], x, y)  # 128 examples: the whole set
        assert df.loc[e, "train_loss"] == pytest.approx(loss, rel=1e-5)
        assert df.loc[e, "train_acc"] == pytest.approx(acc)
    assert np.isnan(df.loc[0, "train_loss_running"])
    for e in (1, 2, 3):
        # one full-batch step per epoch: the running average is the loss at its start
        loss, grad, acc = _loss_grad(model, states[e - 1], x, y)
        assert df.loc[e, "train_loss_running"] == pytest.approx(loss, rel=1e-5)
        assert df.loc[e, "train_acc_running"] == pytest.approx(acc)
        assert df.loc[e, "grad_norm"] == pytest.approx(grad.norm().item(), rel=1e-5)
        # plain SGD: w_e = w_{e-1} - lr * g
        w_prev, w = _flat(states[e - 1], model), _flat(states[e], model)
        assert torch.allclose(w, w_prev - 0.1 * grad, atol=1e-6)
        assert df.loc[e, "param_change"] == pytest.approx((w - w_prev).norm().item(), rel=1e-5)
        assert df.loc[e, "weight_norm"] == pytest.approx(w.norm().item(), rel=1e-5)
        assert df.loc[e, "loss_improvement"] == pytest.approx(
            df.loc[e - 1, "train_loss"] - df.loc[e, "train_loss"], rel=1e-9)
        assert df.loc[e, "lr"] == pytest.approx(0.1)
        assert df.loc[e, "wall_time"] == pytest.approx(df.loc[:e, "epoch_time"].sum(), rel=1e-9)


def test_validation_metrics(trained):
    model, states, (x, y) = trained["model"], trained["states"], trained["test"]
    df = trained["epochs"].set_index("epoch")
    for e in range(4):
        loss, _, acc = _loss_grad(model, states[e], x, y)
        assert df.loc[e, "val_loss"] == pytest.approx(loss, rel=1e-5)
        assert df.loc[e, "val_acc"] == pytest.approx(acc)


def test_layer_statistics(trained):
    states, layers = trained["states"], trained["layers"]
    for e in range(4):
        rows = layers[layers.epoch == e].sort_values("layer_index")
        mats = [v.numpy().astype(np.float64) for k, v in states[e].items() if k.endswith("weight")]
        assert len(rows) == len(mats)
        for (_, row), w in zip(rows.iterrows(), mats):
            s = np.linalg.svd(w, compute_uv=False)
            p = s / s.sum()
            assert row["spectral_norm"] == pytest.approx(s[0], rel=1e-6)
            assert row["cond"] == pytest.approx(s[0] / s[-1], rel=1e-6)
            assert row["eff_rank_ratio"] == pytest.approx(
                math.exp(-(p * np.log(p)).sum()) / len(s), rel=1e-6)
        ep = trained["epochs"].set_index("epoch")
        assert ep.loc[e, "avg_cond"] == pytest.approx(rows["cond"].mean(), rel=1e-9)


def test_trajectory_and_checkpoint_rows(trained):
    store, rid, model = trained["store"], trained["rid"], trained["model"]
    ck = store.query("SELECT * FROM checkpoints WHERE run_id = ? ORDER BY kind, epoch", [rid])
    assert sorted(ck[ck.kind == "checkpoint"]["epoch"]) == [0, 1, 2, 3]
    for _, row in ck[ck.kind == "full"].iterrows():
        vec = torch.load(store.root / row["path"])
        assert torch.equal(vec, _flat(trained["states"][row["epoch"]], model))


def test_run_row(trained):
    run = trained["store"].query("SELECT * FROM runs").iloc[0]
    ep = trained["epochs"].set_index("epoch")
    assert run["status"] == "finished" and run["epochs_done"] == 3
    assert run["final_val_acc"] == pytest.approx(ep.loc[3, "val_acc"])
    assert run["generalization_gap"] == pytest.approx(ep.loc[3, "val_loss"] - ep.loc[3, "train_loss"])
    assert run["n_params"] == sum(p.numel() for p in trained["model"].parameters())
    assert '"seed": 0' in run["config_json"] and "torch" in run["env_json"]


def test_finished_run_is_a_noop(trained):
    store, cfg = trained["store"], trained["cfg"]
    before = {p: p.stat().st_mtime_ns for p in store.tables_dir.rglob("*.parquet")}
    assert train_run(cfg, store, progress=False) == "skipped"
    after = {p: p.stat().st_mtime_ns for p in store.tables_dir.rglob("*.parquet")}
    assert before == after
