"""``hvp_mode = "auto"``: the candidates' trials, the memory budget, the compiled product's trial
and the saved choices, on the CPU standing in for CUDA (a rigged clock), every product checked
against the dense Hessian (see ``hessian_problems``)."""
import dataclasses
import json

import numpy as np
import pytest
import torch

from hessian_problems import CE, mlp_problem  # noqa: F401
from landscape_lib.analyses.hessian import auto as hessian_auto
from landscape_lib.analyses.hessian.analysis import hessian_analysis, tf32
from landscape_lib.analyses.hessian import operator as hessian_ops, products
from landscape_lib.analyses.hessian.operator import HessianOperator
from landscape_lib.analyses.hessian.products import WARMUPS
from landscape_lib.locations import cache_root

def test_auto_mode_is_chosen_by_device():
    assert hessian_ops._resolve_mode("auto", torch.device("cpu")) == "cached"
    assert hessian_ops._resolve_mode("auto", torch.device("cuda")) == "auto"  # measured later
    assert hessian_ops._resolve_mode("reverse", torch.device("cuda")) == "reverse"


@pytest.fixture
def rigged_auto(monkeypatch):
    """"auto" as on CUDA (on the CPU CUDA graphs cannot be captured: those candidates fail and
    their eager substitutes run), with nothing remembered, and a clock that makes ``faster``
    twice as fast per column as every other candidate."""
    monkeypatch.setattr(hessian_ops, "_resolve_mode", lambda m, d: m)
    monkeypatch.setattr(hessian_auto, "TIMED", 1)  # a warm-up and one timed call (test time)
    hessian_auto.forget(saved=True)
    timed = hessian_auto.trial_seconds

    def rig(faster):
        def rigged(op, W):
            timed(op, W)
            return (1.0 if op.label == faster else 2.0) * W.shape[1]
        monkeypatch.setattr(hessian_auto, "trial_seconds", rigged)

    yield rig
    hessian_auto.forget(saved=True)


@pytest.fixture
def compiling(monkeypatch, mlp_problem):
    """The compiled product tried on the CPU standing in for CUDA (dynamo without inductor),
    none compiled yet; ``compiling(count)`` is ``count`` new operators of the MLP, each checked
    on 3 columns against the dense Hessian."""
    monkeypatch.setattr(hessian_auto, "COMPILE_DEVICES", ("cpu",))
    monkeypatch.setattr(products, "BACKEND", "aot_eager")
    monkeypatch.setattr(products, "_COMPILED", {})
    model, batches, H, _ = mlp_problem
    V = torch.randn(H.shape[0], 3, generator=torch.Generator().manual_seed(4),
                    dtype=torch.float64)

    def operators(count: int) -> list[HessianOperator]:
        ops = []
        for _ in range(count):
            ops.append(HessianOperator(model, CE, batches))
            torch.testing.assert_close(ops[-1] @ V, H @ V, rtol=1e-9, atol=1e-12)
        return ops
    return operators


@pytest.mark.parametrize("faster", ["forward", "forward x4", "forward x8 /2", "cached"])
def test_auto_mode_keeps_the_fastest_measured_candidate(rigged_auto, mlp_problem, faster):
    model, batches, H, _ = mlp_problem
    rigged_auto(faster)
    op = HessianOperator(model, CE, batches)
    assert op.mode == "auto"
    V = torch.randn(H.shape[0], 3, generator=torch.Generator().manual_seed(3),
                    dtype=torch.float64)
    torch.testing.assert_close(op @ V, H @ V, rtol=1e-9, atol=1e-12)
    assert op.label == faster
    # every graph candidate failed and was replaced by the same product run eagerly
    assert list(op.trials) == ["graph", "forward", "graph x4", "forward x4", "graph x8 /2",
                               "forward x8 /2", "cached"]
    assert all(str(op.trials[k]).startswith("failed: ConfigError") for k in op.trials
               if "graph" in k)
    assert sorted(v for v in op.trials.values() if not isinstance(v, str)) == [1e3, 2e3, 2e3,
                                                                                2e3]
    assert (op._graphs is not None) == (faster == "cached")  # the losers' memory is freed
    # the warm-ups and the timed call of each that ran
    assert op.trial_products == (WARMUPS + 1) * (1 + 4 + 8 + 1)
    assert op.n_products == 3 + op.trial_products
    torch.testing.assert_close(op @ V[:, 0], H @ V[:, 0], rtol=1e-9, atol=1e-12)
    assert op.n_products == 4 + op.trial_products
    # the choice is remembered for operators of the same model and batch shapes ...
    again = HessianOperator(model, CE, batches)
    torch.testing.assert_close(again @ V, H @ V, rtol=1e-9, atol=1e-12)
    assert again.label == faster and again.trials["reused"] == faster
    assert again.trial_products == 0 and again.n_products == 3
    if faster == "cached":  # ... but not for other batch shapes
        other = HessianOperator(model, CE, [batches[0]])
        other @ V[:, 0]
        assert "reused" not in other.trials and other.trial_products == op.trial_products


def test_auto_mode_retries_out_of_memory_candidates_on_smaller_micro_batches(
        monkeypatch, rigged_auto, mlp_problem):
    """A candidate that runs out of GPU memory is tried again on micro-batches half as large
    (here: one column fits only in quarters of the batches, and is then the fastest)."""
    model, batches, H, _ = mlp_problem
    rigged_auto("forward /4")
    rigged = hessian_auto.trial_seconds

    def tight(op, W):
        if op.label in ("forward", "forward /2"):
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (rigged)")
        return rigged(op, W)

    monkeypatch.setattr(hessian_auto, "trial_seconds", tight)
    op = HessianOperator(model, CE, batches)
    V = torch.randn(H.shape[0], 2, generator=torch.Generator().manual_seed(7),
                    dtype=torch.float64)
    torch.testing.assert_close(op @ V, H @ V, rtol=1e-9, atol=1e-12)
    assert [k for k, v in op.trials.items() if v == "failed: out of memory"] == [
        "forward", "forward /2"]
    assert op.label == "forward /4" and op.trials["forward /4"] == 1e3


def test_analysis_keeps_autos_choice_and_trials(rigged_auto, mlp_problem):
    """The analysis' result names the product mode auto chose and keeps every trial (the
    runner stores them as hvp_trials.json); the trial products count in the first part
    (density); TF32 and cuDNN's autotuner are on during the analysis and restored after."""
    model, batches, H, evals = mlp_problem
    rigged_auto("forward x8 /2")
    cudnn = torch.backends.cudnn
    before = (torch.backends.cuda.matmul.allow_tf32, cudnn.allow_tf32, cudnn.benchmark)
    with tf32(True):
        assert torch.backends.cuda.matmul.allow_tf32 and cudnn.allow_tf32 and cudnn.benchmark
    assert (torch.backends.cuda.matmul.allow_tf32, cudnn.allow_tf32, cudnn.benchmark) == before
    res = hessian_analysis(model, CE, batches, top_k=2, trace_samples=4, density_vectors=2,
                           density_steps=8, layer_steps=3, bottom_max_steps=20)
    assert res.hvp_mode == "forward x8 /2"
    assert res.hvp_trials["forward x8 /2"] == 1e3 and res.hvp_trials["cached"] == 2e3
    costs = res.costs.set_index("part")["n_products"]
    assert costs["density"] == 2 * 8 + (WARMUPS + 1) * (1 + 4 + 8 + 1)
    assert costs["top"] == res.top.n_products
    # within each value's own residual of the dense eigenvalue (Krylov-Bogoliubov)
    assert np.all(np.abs(res.top.values - evals.numpy()[::-1][:2]) <= res.top.residuals)

def test_auto_mode_over_the_memory_budget_takes_the_least_hungry_candidate(monkeypatch,
                                                                            mlp_problem):
    """Every candidate over the budget (a ViT with 256 tokens on 512 images needs ~62 GiB in
    each mode): the forward ones (1, 4 and 8 columns per call) are tried again on smaller
    micro-batches (here down to the 5-sample batch's 4 parts), then the analysis still runs,
    in the mode needing least."""
    model, batches, H, _ = mlp_problem
    monkeypatch.setattr(hessian_ops, "_resolve_mode", lambda m, d: m)
    monkeypatch.setattr(hessian_auto, "AUTO_MAX_GIB", -1.0)  # on the CPU every need is 0 GiB
    hessian_auto.forget(saved=True)
    op = HessianOperator(model, CE, batches)
    V = torch.randn(H.shape[0], 2, generator=torch.Generator().manual_seed(4),
                    dtype=torch.float64)
    torch.testing.assert_close(op @ V, H @ V, rtol=1e-9, atol=1e-12)
    dropped = [k for k, v in op.trials.items() if str(v).startswith("dropped")]
    assert dropped == ["forward", "forward /2", "forward /4", "forward x4", "forward x4 /2",
                       "forward x4 /4", "forward x8 /2", "forward x8 /4", "cached"]
    assert op.trials["chosen over budget"] == "forward" == op.label
    hessian_auto.forget(saved=True)


@pytest.mark.parametrize("compiled_faster", [True, False])
def test_the_second_operator_of_a_structure_tries_the_compiled_product(
        rigged_auto, compiling, compiled_faster):
    """``auto.COMPILE_AT``: the first operator runs the trials, the second also tries the
    compiled product and keeps the faster one, the third reuses that choice; every one's
    products are the dense Hessian's (the CPU standing in for CUDA, dynamo without inductor)."""
    compiled = hessian_auto.COMPILED.label
    rigged_auto(compiled if compiled_faster else "forward x4")
    first, second, third = compiling(3)
    assert compiled not in first.trials and first.trial_products > 0
    assert second.trials[compiled] == (1e3 if compiled_faster else 2e3)
    assert "compile trial" in second.trials and second.trial_products == (WARMUPS + 1) * 4
    assert second.label == (compiled if compiled_faster else first.label)
    assert third.label == second.label and third.trial_products == 0
    assert third.trials["reused"] == second.label and len(products._COMPILED) == 1


def test_a_compiled_product_over_the_budget_is_tried_on_smaller_micro_batches(
        monkeypatch, rigged_auto, compiling):
    """``auto.COMPILED`` (4 columns over half batches) needing more memory than the budget (a
    GPU of 80 GB or less) is dropped and tried again over quarter batches, which are then kept
    when faster; the products are the dense Hessian's."""
    compiled = hessian_auto.COMPILED
    smaller = dataclasses.replace(compiled, split=compiled.split * 2)
    rigged_auto(smaller.label)
    rigged, trying = hessian_auto.trial_seconds, {}

    def remember(op, W):  # the candidate whose peak memory _gib reports next
        trying["label"] = op.label
        return rigged(op, W)
    monkeypatch.setattr(hessian_auto, "trial_seconds", remember)
    monkeypatch.setattr(hessian_auto, "_gib", lambda device, peak=False: (
        1e3 if peak and trying.get("label") == compiled.label else 0.0))
    _, second = compiling(2)
    assert str(second.trials[compiled.label]).startswith("dropped: 1000.0 GiB")
    assert second.trials[smaller.label] == 1e3 and "compile trial" in second.trials
    assert second.label == smaller.label == "compile x4 /4"


@pytest.mark.parametrize("compiled_faster", [True, False])
def test_a_later_process_starts_from_the_saved_choice(monkeypatch, rigged_auto, compiling,
                                                      compiled_faster):
    """``auto``'s saved choices (the CPU standing in for CUDA): a new process, its memory
    empty, takes the saved choice at its first operator without trials (a saved compiled product
    is compiled at once) and does not repeat a compile trial; another torch version or an
    unreadable file measures again; every product is the dense Hessian's."""
    monkeypatch.setattr(hessian_auto, "SAVE_DEVICES", ("cpu",))
    rigged_auto(hessian_auto.COMPILED.label if compiled_faster else "forward x4")
    folder = cache_root() / hessian_auto.SAVED

    def operator():
        return compiling(1)[0]

    def saved_label(path):
        return hessian_auto.Candidate(**json.loads(path.read_text())["choice"]).label

    first = operator()
    [path] = folder.glob("*.json")
    assert saved_label(path) == first.label and first.trial_products > 0
    second = operator()  # the process' 2nd operator: the compile trial, saved too
    chosen = second.label
    assert saved_label(path) == chosen and "compile trial" in second.trials
    assert (chosen == hessian_auto.COMPILED.label) == compiled_faster
    hessian_auto.forget()  # a new process
    products._COMPILED.clear()
    for _ in range(2):  # its 1st and 2nd operators
        op = operator()
        assert op.label == chosen and op.trial_products == 0 and op.n_products == 3
        assert op.trials["reused"] == chosen and op.trials["saved choice"] == str(path)
    assert len(products._COMPILED) == int(compiled_faster)
    path.write_text("{not json")
    hessian_auto.forget()
    with pytest.warns(UserWarning, match="ignoring the saved Hessian product choice"):
        again = operator()
    assert again.trial_products == first.trial_products and saved_label(path) == first.label
    monkeypatch.setattr(torch, "__version__", "0.0+other")
    hessian_auto.forget()
    other = operator()
    assert other.trial_products > 0 and "saved choice" not in other.trials
    assert len(list(folder.glob("*.json"))) == 2
    hessian_auto.forget(saved=True)
    assert not list(folder.glob("*.json"))
