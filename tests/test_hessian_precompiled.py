"""The compiled product saved for later processes (``precompiled.SavedProduct``): compiled ahead
of time and saved by the first process, loaded (no tracing) by a later one, each product
checked against the dense float64 Hessian of its own checkpoint; a damaged, stale or
uncompilable case falls back with a warning and still gives the right products. On the CPU
standing in for CUDA, with dynamo's ``aot_eager`` backend (inductor's code generation takes
minutes on 2 cores; the GPU's is in ``test_gpu_hessian.py``)."""
import pytest
import torch
from torch._dynamo.utils import counters

from hessian_problems import CE, NETS, _digits, dense_hessian
from landscape_lib.analyses.hessian import precompiled, products
from landscape_lib.analyses.hessian.operator import HessianOperator
from landscape_lib.locations import cache_root
from landscape_lib.models import create_model
from test_hessian_compiled import _net

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated")


@pytest.fixture
def new_process(monkeypatch):
    """``new_process()`` forgets the compiled products and dynamo's state, as a later process
    starts; saved files are kept (the test's own cache folder). The CPU stands in for CUDA."""
    monkeypatch.setattr(products, "BACKEND", "aot_eager")
    monkeypatch.setattr(precompiled, "DEVICES", ("cpu",))

    def start():
        products._COMPILED.clear()
        torch._dynamo.reset()
    precompiled.forget()
    start()
    yield start
    start()
    precompiled.forget()


def _mlp(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    arch, options = NETS["mlp"]
    return create_model(arch, in_channels=1, image_size=8, num_classes=10,
                        **options).double().eval()


def _check(model, batches, split: int = 1) -> precompiled.SavedProduct:
    """The compiled operator's products (3 columns: a call of 2 and a padded one) against the
    dense Hessian; its saved product."""
    op = HessianOperator(model, CE, batches, mode="compile", chunk_size=2, split=split)
    H = dense_hessian(model, batches)
    V = torch.randn(H.shape[0], 3, generator=torch.Generator().manual_seed(0),
                    dtype=torch.float64)
    torch.testing.assert_close(op @ V, H @ V, rtol=1e-9, atol=1e-11)
    return op._forward._product


def _files():
    return sorted((cache_root() / precompiled.SAVED).glob("*.bin"))


def test_a_later_process_loads_the_saved_product_without_tracing(new_process):
    """The BN conv net (its running statistics are inputs): saved by the first process, loaded
    for another checkpoint by a later one; a structure whose key differs only where it may
    differ between processes (a module's attribute: here BatchNorm's eps) has the same file
    name: it is compiled and replaces the file, its products its own Hessian's."""
    _, batches = _digits(64)
    first = _check(_net(0), batches)
    assert (first.saved, first.loaded) == (1, 0) and len(_files()) == 1
    new_process()
    traced = counters["stats"]["unique_graphs"]
    later = _check(_net(1), batches)  # another checkpoint of the architecture
    assert (later.saved, later.loaded) == (0, 1) and len(_files()) == 1
    assert counters["stats"]["unique_graphs"] == traced  # dynamo traced nothing
    changed = _net(0)
    changed.apply(lambda m: setattr(m, "eps", 1e-2) if hasattr(m, "eps") else None)
    other = _check(changed, batches)
    assert other is not later and (other.saved, other.loaded) == (1, 0) and len(_files()) == 1


def test_each_input_signature_is_a_file_of_its_own(new_process):
    _, batches = _digits(64)
    whole, halves = _check(_mlp(0), batches), _check(_mlp(0), batches, split=2)
    assert whole is halves and whole.saved == 2 and len(_files()) == 2
    new_process()
    whole, halves = _check(_mlp(1), batches), _check(_mlp(1), batches, split=2)
    assert whole is halves and (whole.saved, whole.loaded) == (0, 2)


def test_a_damaged_file_is_compiled_and_saved_again(new_process):
    _, batches = _digits(64)
    _check(_mlp(0), batches)
    [path] = _files()
    path.write_bytes(b'{"key": "damaged"\n' + b"\0" * 64)  # a half-written file of old
    new_process()
    with pytest.warns(UserWarning, match="ignoring the saved compiled Hessian product"):
        again = _check(_mlp(1), batches)
    assert (again.saved, again.loaded) == (1, 0)
    new_process()
    assert _check(_mlp(0), batches).loaded == 1  # the file is whole again


def test_a_product_that_cannot_be_compiled_ahead_falls_back_to_torch_compile(
        new_process, monkeypatch):
    def fails(self, args):
        raise RuntimeError("DICT_VERSION guard cannot be serialized.")
    monkeypatch.setattr(precompiled.SavedProduct, "_compile", fails)
    _, batches = _digits(64)
    traced = counters["stats"]["unique_graphs"]
    with pytest.warns(UserWarning, match="could not be compiled ahead of time"):
        product = _check(_mlp(0), batches)
    assert (product.saved, product.loaded) == (0, 0) and not _files()
    assert counters["stats"]["unique_graphs"] > traced  # torch.compile traced it


def test_a_saved_product_whose_guards_fail_falls_back_to_torch_compile(new_process):
    """A guard of the saved code that fails (here: forced) is a warning and the product
    compiled in the process, never an error the operator would take for a missing forward
    rule (it would fall back to double backward) and never a wrong product."""
    _, batches = _digits(64)
    product = _check(_mlp(0), batches)
    [sig] = product._by_signature

    def failing(*args):
        raise RuntimeError("GuardManager check failed, reason: forced by the test")
    product._by_signature[sig] = failing
    with pytest.warns(UserWarning, match="does not fit these inputs"):
        assert _check(_mlp(1), batches) is product  # checked against its dense Hessian
    assert product._by_signature[sig] is product.fallback


def test_the_folder_is_pruned_least_recently_used_first(new_process, monkeypatch):
    """After a save the folder is cut to ``MAX_BYTES``: the file used longest ago goes, a loaded
    file counts as used (its time refreshed), the file just written stays; a pruned product is
    compiled and saved again when asked for."""
    import os
    _, batches = _digits(64)
    _check(_mlp(0), batches)
    [whole] = _files()
    _check(_mlp(0), batches, split=2)
    [halves] = [p for p in _files() if p != whole]
    os.utime(whole, ns=(10**18, 10**18))   # whole the older of the two ...
    os.utime(halves, ns=(15 * 10**17, 15 * 10**17))  # both in the past
    new_process()
    assert _check(_mlp(1), batches).loaded == 1  # ... until a later process loads it
    assert whole.stat().st_mtime_ns > halves.stat().st_mtime_ns
    sizes = whole.stat().st_size + halves.stat().st_size
    monkeypatch.setattr(precompiled, "MAX_BYTES", sizes)  # the third file does not fit
    third = _check(_mlp(1), batches, split=4)
    assert third.saved == 1 and len(_files()) == 2
    assert whole.exists() and not halves.exists()  # the least recently used went
    [newest] = [p for p in _files() if p != whole]
    assert precompiled.prune(limit=newest.stat().st_size) == [whole]  # older than the third
    assert _files() == [newest]
    new_process()
    assert _check(_mlp(0), batches, split=2).saved == 1  # pruned: compiled and saved again
