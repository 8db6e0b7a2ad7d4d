"""Per-epoch metrics measured one way at every epoch, epoch 0 included (issue 10 item 8): the
eval-mode loss of each epoch's checkpoint on a fixed training sample; the running average of
the training objective kept beside it."""
import numpy as np
import pytest
import torch
from torch import nn

from landscape_lib.analyses.context import AnalysisContext
from landscape_lib.config import RunConfig
from landscape_lib.train.engine import TRAIN_EVAL_SEED, train_run


def config(**kw):
    base = dict(dataset="synthetic", dataset_options={"n_train": 160, "n_test": 64},
                arch="cnn", arch_options={"widths": [4, 8]}, optimizer="sgd-momentum", lr=0.05,
                epochs=3, batch_size=32, seed=0, label_smoothing=0.1,
                checkpoint_epochs=[0, 1, 2, 3], trajectory="off", train_eval_samples=96)
    return RunConfig.from_dict({**base, **kw})


def independent_train_loss(ctx, epoch, n=96):
    """Checkpoint `epoch`, eval mode, plain cross-entropy on the fixed sample (seed 0)."""
    model = ctx.model_at(epoch)
    x, y = ctx.data.subset("train", n, TRAIN_EVAL_SEED)
    with torch.no_grad():
        logits = model(x)
    return (nn.functional.cross_entropy(logits, y).item(),
            (logits.argmax(1) == y).double().mean().item())


def test_every_epoch_is_the_eval_mode_loss_of_its_checkpoint(store):
    """A BN net trained with label smoothing: each epoch's train_loss (0 included) equals an
    independent eval of its stored checkpoint on the same 96 of the 160 training examples;
    loss_improvement is their difference; the running average is another number (train-mode
    BN, label smoothing), NULL at epoch 0."""
    cfg = config()
    assert train_run(cfg, store, device="cpu", progress=False) == "finished"
    rows = store.read("epochs", cfg.run_id()).sort_values("epoch")
    ctx = AnalysisContext(store, cfg.run_id(), cfg, 3, torch.device("cpu"))
    for _, row in rows.iterrows():
        loss, acc = independent_train_loss(ctx, int(row.epoch))
        assert row.train_loss == pytest.approx(loss, rel=1e-5), row.epoch
        assert row.train_acc == pytest.approx(acc, abs=1e-12)
    np.testing.assert_allclose(rows.loss_improvement.iloc[1:],
                               -np.diff(rows.train_loss.to_numpy()), rtol=1e-12)
    assert rows.train_loss_running.isna().tolist() == [True, False, False, False]
    assert (abs(rows.train_loss_running.iloc[1:] - rows.train_loss.iloc[1:]) > 1e-4).all()
    run = store.read("runs", cfg.run_id()).iloc[0]
    assert run.final_train_loss == rows.train_loss.iloc[-1]
    assert run.generalization_gap == pytest.approx(rows.val_loss.iloc[-1]
                                                   - rows.train_loss.iloc[-1])


def test_the_sample_is_fixed_and_small_data_sets_are_measured_whole(store):
    from landscape_lib.data import DeviceData, load_dataset
    data = DeviceData(load_dataset("synthetic", n_train=50, n_test=10), "cpu")
    idx = data.sample_indices("train", 20, TRAIN_EVAL_SEED)
    part = list(data.eval_batches("train", 16, idx))
    assert [len(y) for _, y in part] == [16, 4]
    torch.testing.assert_close(torch.cat([x for x, _ in part]),
                               data.subset("train", 20, TRAIN_EVAL_SEED)[0])
    assert torch.equal(data.sample_indices("train", 30, 0)[:20], idx)  # larger extends smaller
    cfg = config(train_eval_samples=10_000, epochs=1, checkpoint_epochs=[0, 1],
                 label_smoothing=0.0)
    assert train_run(cfg, store, device="cpu", progress=False) == "finished"
    ctx = AnalysisContext(store, cfg.run_id(), cfg, 1, torch.device("cpu"))
    row = store.read("epochs", cfg.run_id()).sort_values("epoch").iloc[-1]
    assert row.train_loss == pytest.approx(independent_train_loss(ctx, 1, n=160)[0], rel=1e-5)
    assert cfg.run_id() == config(train_eval_samples=5, epochs=1, checkpoint_epochs=[0, 1],
                                  label_smoothing=0.0).run_id()  # measurement, not training


def test_label_smoothing_changes_only_the_functional_part_of_the_hessian():
    """Why the Hessian analysis may keep plain cross-entropy: the logit Hessian of CE does not
    depend on the targets (the Gauss-Newton part is identical); only the functional part
    differs."""
    torch.manual_seed(0)
    z, y = torch.randn(5, 4, dtype=torch.float64), torch.randint(0, 4, (5,))
    plain, smooth = nn.CrossEntropyLoss(), nn.CrossEntropyLoss(label_smoothing=0.1)
    hz = lambda loss: torch.func.hessian(lambda t: loss(t, y))(z)  # noqa: E731
    torch.testing.assert_close(hz(plain), hz(smooth), rtol=0, atol=1e-14)
    x = torch.randn(5, 3, dtype=torch.float64)
    w = torch.randn(3 * 4, dtype=torch.float64)
    linear = lambda loss: torch.func.hessian(lambda v: loss(x @ v.view(3, 4), y))(w)  # noqa
    torch.testing.assert_close(linear(plain), linear(smooth), rtol=0, atol=1e-12)  # no f part
    u = torch.randn(3 * 3 + 3 * 4, dtype=torch.float64)
    mlp = lambda loss: torch.func.hessian(  # noqa: E731
        lambda v: loss(torch.tanh(x @ v[:9].view(3, 3)) @ v[9:].view(3, 4), y))(u)
    assert (mlp(plain) - mlp(smooth)).abs().max() > 1e-3


def test_the_hessian_analysis_stores_and_uses_its_loss(store):
    """loss='ce' (default) is the Hessian of the plain cross-entropy even when training used
    label smoothing; loss='train' that of the training objective; params_json says which."""
    import json

    from conftest import tiny_config
    from landscape_lib.analyses.provenance import run_analysis
    cfg = tiny_config(arch_options={"hidden": [6]}, label_smoothing=0.3, epochs=2)
    assert train_run(cfg, store, device="cpu", progress=False) == "finished"
    ctx = AnalysisContext(store, cfg.run_id(), cfg, 2, torch.device("cpu"))
    model = ctx.model.double()
    x, y = ctx.data.subset("train", 64, 0)
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for p in model.parameters()]
    flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])

    def dense_top(smoothing):
        def loss(v):
            parts = dict(zip(names, (t.view(s) for t, s in zip(
                torch.split(v, [s.numel() for s in shapes]), shapes))))
            out = torch.func.functional_call(model, parts, (x.double(),))
            return nn.functional.cross_entropy(out, y, label_smoothing=smoothing)
        return torch.linalg.eigvalsh(torch.func.hessian(loss)(flat))[-1].item()

    params = {"samples": 64, "top_k": 1, "tol": 1e-8, "trace_samples": 2, "per_layer": False,
              "density_vectors": 1, "density_steps": 10}
    tops = {}
    for which, smoothing in (("ce", 0.0), ("train", 0.3)):
        aid = run_analysis(store, cfg.run_id(), "hessian", "last", {**params, "loss": which})
        row = store.query("SELECT params_json FROM analyses WHERE analysis_id = ?", [aid])
        assert json.loads(row.params_json.iloc[0])["loss"] == which
        tops[which] = store.query("SELECT top_eig FROM hessian_summary WHERE analysis_id = ?",
                                  [aid]).top_eig.iloc[0]
        assert tops[which] == pytest.approx(dense_top(smoothing), rel=1e-3)
    assert abs(tops["ce"] - tops["train"]) > 1e-3 * tops["ce"]
