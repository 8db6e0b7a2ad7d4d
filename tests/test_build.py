"""The one builder of a run's data, model, optimizer and step module (`train.build`), shared by
the training engine and the analyses; and `--data-root` reaching every data set load."""
import pytest
import torch

from conftest import tiny_config
from landscape_lib.analyses.context import AnalysisContext
from landscape_lib.cli import main
from landscape_lib.train import build
from landscape_lib.train.build import compile_mode, uses_channels_last

CUDA, CPU = torch.device("cuda"), torch.device("cpu")  # device objects: no GPU needed


@pytest.mark.parametrize("optimizer, asked, chosen", [
    ("sgd", "reduce-overhead", "reduce-overhead"),           # CUDA graphs
    ("sam-sgd", "reduce-overhead", "default"),                # a closure optimizer: no graphs
    ("sam-adam", "max-autotune", "max-autotune-no-cudagraphs"),
    ("sam-adam", "default", "default"),
    ("sophia", "default", None),                              # double backward: eager
])
def test_compile_mode_per_optimizer(optimizer, asked, chosen):
    cfg = tiny_config(optimizer=optimizer, compile=True, compile_mode=asked)
    assert compile_mode(cfg, CUDA) == chosen
    assert compile_mode(cfg, CPU) is None  # compilation is for CUDA only
    assert compile_mode(tiny_config(optimizer=optimizer, compile_mode=asked), CUDA) is None


def test_channels_last_only_for_conv_nets_on_cuda():
    assert uses_channels_last(tiny_config(arch="cnn", arch_options={}), CUDA)
    assert not uses_channels_last(tiny_config(arch="cnn", arch_options={}), CPU)
    assert not uses_channels_last(tiny_config(), CUDA)  # an MLP
    assert not uses_channels_last(tiny_config(arch="cnn", arch_options={},
                                              channels_last=False), CUDA)


def test_no_fused_kernels_on_the_cpu():
    cfg = tiny_config(optimizer="adam")
    data = build.build_data(cfg, CPU)
    optimizer = build.build_optimizer(cfg, build.build_model(cfg, data), CPU)
    assert not optimizer.defaults.get("fused")


def test_analyses_see_the_data_and_model_the_run_trained_on(store):
    cfg = tiny_config(train_subset=100)
    ctx = AnalysisContext(store, "run", cfg, 1, CPU)
    data = build.build_data(cfg, CPU)
    assert ctx.data.num_examples("train") == data.num_examples("train") == 100
    x, _ = ctx.data.subset("train", 100)
    assert torch.equal(x, data.subset("train", 100)[0])
    engine_model = build.build_model(cfg, data)
    assert [(n, p.shape) for n, p in ctx.new_model().named_parameters()] == \
        [(n, p.shape) for n, p in engine_model.named_parameters()]


def test_train_all_data_root_reaches_training_and_scheduled_analyses(tmp_path, monkeypatch):
    """`train-all --data-root X`: the runs and the analyses after them all read X."""
    roots = []
    real = build.load_dataset

    def spy(name, *, root=None, **options):
        roots.append(root)
        return real(name, root=root, **options)
    monkeypatch.setattr(build, "load_dataset", spy)
    grid = tmp_path / "grid.toml"
    grid.write_text('''
[defaults]
dataset = "synthetic"
dataset_options = { n_train = 64, n_test = 32 }
arch_options = { hidden = [8] }
epochs = 1
batch_size = 32
[analyses.interpolation]
points = 3
samples = 32
[[study]]
name = "one"
''')
    root = tmp_path / "data-root"
    status = main(["train-all", str(grid), "--data-root", str(root), "--store",
                   str(tmp_path / "store"), "-j", "1", "--no-progress"])
    assert status == 0
    # the check before anything is written, the run, the analysis after it
    assert len(roots) == 3 and all(r == str(root) for r in roots), roots
