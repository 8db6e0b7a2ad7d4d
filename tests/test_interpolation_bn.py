"""Interpolation of a BatchNorm net trained briefly on digits (issue 10 item 3, acceptance 2):
the `bn` option (interpolate, recompute, fixed) against independent evaluations."""
import numpy as np
import pytest
import torch

from landscape_lib.analyses.context import AnalysisContext
from landscape_lib.analyses.provenance import run_analysis
from landscape_lib.analyses.surface.batchnorm import bn_statistics, resolve_bn
from landscape_lib.analyses.surface.directions import get_weights
from landscape_lib.analyses.surface.grids import interpolate_1d
from landscape_lib.config import RunConfig
from landscape_lib.errors import ConfigError
from landscape_lib.store import Store
from landscape_lib.train import metrics
from landscape_lib.train.engine import train_run

ALPHAS = np.linspace(-0.25, 1.25, 7)  # includes 0 and 1 exactly


@pytest.fixture(scope="module")
def bn_run(tmp_path_factory):
    """A CIFAR-style ResNet-18 (width 4, BN everywhere) trained 2 epochs on 384 digits by the
    library's own trainer; checkpoints at epochs 0 and 2."""
    store = Store(tmp_path_factory.mktemp("bn") / "store").ensure()
    cfg = RunConfig.from_dict(dict(dataset="digits", arch="resnet18", arch_options={"width": 4},
                                   optimizer="adam", lr=3e-3, epochs=2, batch_size=64, seed=0,
                                   train_subset=384, checkpoint_epochs=[0, 2],
                                   trajectory="off"))
    assert train_run(cfg, store, device="cpu", progress=False) == "finished"
    ctx = AnalysisContext(store, cfg.run_id(), cfg, 2, torch.device("cpu"))
    return ctx, ctx.model_at(0), ctx.model_at(2), ctx.batches("train", 128, seed=0)


def with_weights(ctx, weights_of, stats_of, a=None, other=None):
    """A fresh model with the weights (1-a) w(weights_of) + a w(other) and the statistics of
    `stats_of` (an independent construction, no library interpolation)."""
    model = ctx.new_model()
    model.load_state_dict(stats_of.state_dict())
    with torch.no_grad():
        for p, q, r in zip(model.parameters(), weights_of.parameters(),
                           (other or weights_of).parameters()):
            p.copy_(q if a is None else (1 - a) * q + a * r)
    return model.eval()


def own_loss(model, batches):
    return metrics.evaluate(model, batches)  # eval mode, the checkpoint's own statistics


def test_interpolate_ends_equal_their_checkpoints_own_loss(bn_run):
    ctx, m0, m2, batches = bn_run
    assert resolve_bn(m2) == "interpolate"
    df = interpolate_1d(m2, get_weights(m0), get_weights(m2), ALPHAS, batches,
                        stats1=bn_statistics(m0), stats2=bn_statistics(m2))
    assert set(df.bn) == {"interpolate"}
    start, end = df.set_index("alpha").loc[0.0], df.set_index("alpha").loc[1.0]
    assert start.loss == pytest.approx(own_loss(m0, batches)[0], rel=1e-4)
    assert start.acc == pytest.approx(own_loss(m0, batches)[1], abs=1e-12)
    assert end.loss == pytest.approx(own_loss(m2, batches)[0], rel=1e-4)
    assert end.acc == pytest.approx(own_loss(m2, batches)[1], abs=1e-12)


def test_interpolate_inside_matches_a_model_built_from_averaged_state_dicts(bn_run):
    """Independent reference: a fresh model loaded with (1-a) sd0 + a sd2 for every float
    entry (weights and BN statistics), evaluated by metrics.evaluate."""
    ctx, m0, m2, batches = bn_run
    df = interpolate_1d(m2, get_weights(m0), get_weights(m2), ALPHAS, batches,
                        stats1=bn_statistics(m0), stats2=bn_statistics(m2))
    sd0, sd2 = m0.state_dict(), m2.state_dict()
    for a, loss, clamped in zip(df.alpha, df.loss, df.bn_var_clamped):
        mixed = {k: (1 - a) * sd0[k] + a * sd2[k] if sd0[k].is_floating_point() else sd2[k]
                 for k in sd0}
        negative = sum(int((v < 0).sum()) for k, v in mixed.items() if k.endswith("running_var"))
        assert clamped == negative
        if 0 <= a <= 1:
            assert negative == 0
            ref = ctx.new_model()
            ref.load_state_dict(mixed)
            assert loss == pytest.approx(own_loss(ref, batches)[0], rel=1e-4)


def test_recompute_matches_an_independent_re_estimation_at_every_alpha(bn_run):
    """Reference: a fresh model at w(a), BN momentum 1 and one train-mode pass over the same
    training sample (so the running statistics are exactly that sample's), then eval."""
    ctx, m0, m2, batches = bn_run
    bn_batches = ctx.batches("train", 160, seed=1, batch_size=160)  # one batch
    df = interpolate_1d(m2, get_weights(m0), get_weights(m2), ALPHAS, batches, bn="recompute",
                        bn_batches=bn_batches)
    assert set(df.bn) == {"recompute"}
    sd0, sd2 = m0.state_dict(), m2.state_dict()
    for a, loss, acc in zip(df.alpha, df.loss, df.acc):
        ref = ctx.new_model()
        ref.load_state_dict({k: (1 - a) * sd0[k] + a * sd2[k] if k in dict(m0.named_parameters())
                             else sd0[k] for k in sd0})  # statistics: anything, they are reset
        for m in ref.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.reset_running_stats()
                m.momentum = 1.0
        ref.train()
        with torch.no_grad():
            ref(bn_batches[0][0])
        ref_loss, ref_acc = own_loss(ref, batches)
        assert loss == pytest.approx(ref_loss, rel=1e-4)
        assert acc == pytest.approx(ref_acc, abs=1e-12)


def test_fixed_keeps_the_end_statistics_at_every_alpha(bn_run):
    """`fixed` (the old behaviour, kept as an option): every alpha with the final checkpoint's
    statistics, so the epoch-0 end is not the epoch-0 checkpoint's own loss."""
    ctx, m0, m2, batches = bn_run
    fixed = interpolate_1d(m2, get_weights(m0), get_weights(m2), [0.0, 0.5, 1.0], batches,
                           bn="fixed")
    assert set(fixed.bn) == {"fixed"}
    for a, loss in zip(fixed.alpha, fixed.loss):
        ref = with_weights(ctx, m0, m2, a=a, other=m2)
        assert loss == pytest.approx(own_loss(ref, batches)[0], rel=1e-4)
    own0 = own_loss(m0, batches)[0]
    assert abs(fixed.loss[0] - own0) > 1e-3 * own0  # 10x the tolerance the ends are held to
    assert fixed.loss[2] == pytest.approx(own_loss(m2, batches)[0], rel=1e-4)


def test_interpolate_needs_both_statistics_and_bad_modes_are_refused(bn_run):
    ctx, m0, m2, batches = bn_run
    with pytest.raises(ConfigError, match="stats1"):
        interpolate_1d(m2, get_weights(m0), get_weights(m2), [0.0], batches)
    with pytest.raises(ConfigError, match="bn="):
        interpolate_1d(m2, get_weights(m0), get_weights(m2), [0.0], batches, bn="average")


def test_the_analysis_stores_the_mode_and_its_ends_are_the_checkpoints(bn_run):
    """Through the store: `auto` on a BN net is stored as `interpolate`, and its ends are the
    checkpoints' own losses on the analysis' sample."""
    ctx, m0, m2, _ = bn_run
    aid = run_analysis(ctx.store, ctx.run_id, "interpolation", "last",
                       {"from_epoch": 0, "points": 3, "alpha_min": 0.0, "alpha_max": 1.0,
                        "samples": 128})
    df = ctx.store.query("SELECT * FROM interpolation WHERE analysis_id = ? ORDER BY alpha",
                         [aid])
    assert set(df.bn) == {"interpolate"} and (df.bn_var_clamped == 0).all()
    sample = ctx.batches("train", 128, seed=0)
    assert df.loss.iloc[0] == pytest.approx(own_loss(m0, sample)[0], rel=1e-4)
    assert df.loss.iloc[-1] == pytest.approx(own_loss(m2, sample)[0], rel=1e-4)
    with pytest.raises(ConfigError, match="bn="):
        run_analysis(ctx.store, ctx.run_id, "interpolation", "last", {"bn": "average"})


def test_the_model_is_left_as_found(bn_run):
    ctx, m0, m2, batches = bn_run
    before = {k: v.clone() for k, v in m2.state_dict().items()}
    interpolate_1d(m2, get_weights(m0), get_weights(m2), [-0.25, 0.5], batches,
                   stats1=bn_statistics(m0), stats2=bn_statistics(m2))
    for k, v in m2.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_nets_without_bn_resolve_to_fixed_and_match_independent_losses():
    from landscape_lib.models import create_model
    torch.manual_seed(0)
    a = create_model("mlp", in_channels=1, image_size=8, num_classes=10, hidden=[16])
    b = create_model("mlp", in_channels=1, image_size=8, num_classes=10, hidden=[16])
    batches = [(torch.randn(64, 1, 8, 8), torch.randint(0, 10, (64,)))]
    assert resolve_bn(a) == "fixed"
    ours = interpolate_1d(b, get_weights(a), get_weights(b), ALPHAS, batches)
    assert set(ours.bn) == {"fixed"} and (ours.bn_var_clamped == 0).all()
    for alpha, loss in zip(ours.alpha, ours.loss):
        ref = create_model("mlp", in_channels=1, image_size=8, num_classes=10, hidden=[16])
        ref.load_state_dict({k: (1 - alpha) * a.state_dict()[k] + alpha * v
                             for k, v in b.state_dict().items()})
        assert loss == pytest.approx(own_loss(ref, batches)[0], rel=1e-5)
