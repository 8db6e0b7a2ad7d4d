"""One surface on two real GPUs equals the one-GPU surface (marked gpu: skipped without two
CUDA GPUs; `python -m pytest -m gpu` collects it with test_gpu.py). The CPU tests in
test_surface_devices.py cover the same code with two simulated devices."""
import numpy as np
import pytest
import torch

from landscape_lib.analyses.surface.devices import surface_2d_multi
from landscape_lib.analyses.surface.directions import get_weights, random_directions
from landscape_lib.analyses.surface.grids import surface_2d
from landscape_lib.models import create_model
from landscape_lib.train.environment import set_tf32

pytestmark = pytest.mark.gpu


@pytest.fixture
def two_gpus():
    if torch.cuda.device_count() < 2:
        pytest.skip("needs two CUDA GPUs")
    before = (torch.backends.cudnn.benchmark, torch.backends.cuda.matmul.allow_tf32,
              torch.backends.cudnn.allow_tf32)
    torch.backends.cudnn.benchmark = False  # the same algorithm on both GPUs
    set_tf32(False)
    yield ["cuda:0", "cuda:1"]
    (torch.backends.cudnn.benchmark, torch.backends.cuda.matmul.allow_tf32,
     torch.backends.cudnn.allow_tf32) = before


@pytest.mark.parametrize("bn,channels_last", [("fixed", True), ("recompute", False)])
def test_two_gpus_equal_one_gpu(two_gpus, bn, channels_last):
    torch.manual_seed(0)
    model = create_model("resnet18", in_channels=3, image_size=32, num_classes=10,
                         width=16).cuda().eval()
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(256, 3, 32, 32, generator=g), torch.randint(0, 10, (256,), generator=g)
    batches = [(x[i:i + 128].cuda(), y[i:i + 128].cuda()) for i in range(0, 256, 128)]
    d1, d2 = random_directions(model, seed=0, count=2)
    xs, ys = np.linspace(-1, 1, 7), np.linspace(-1, 1, 9)
    options = dict(bn=bn, channels_last=channels_last)
    one = surface_2d(model, get_weights(model), d1, d2, xs, ys, batches, **options)
    rows = []
    two = surface_2d_multi(model, get_weights(model), d1, d2, xs, ys, batches, devices=two_gpus,
                           on_row=lambda j, loss, acc: rows.append(j), **options)
    assert rows == list(range(len(ys))) and two["devices"] == two_gpus
    np.testing.assert_allclose(two["loss"], one["loss"], rtol=1e-5)
    np.testing.assert_array_equal(two["acc"], one["acc"])
