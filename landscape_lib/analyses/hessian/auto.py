"""``hvp_mode = "auto"`` on CUDA: time the float32-exact ways of a product, keep the fastest.

Candidates (``candidates``): forward-over-reverse as CUDA graphs (``graph``) with one column
over the whole batch, and ``WIDTHS`` columns per ``vmap`` (the primal pass shared by the
columns) over the whole batch or micro-batches of it (``FIRST_SPLIT``), the narrower ones also
in channels-last memory format when the model has convolutions; and the retained gradient
graph (``cached``). A graph candidate that cannot be captured is replaced by the same product
run eagerly (``forward``); one whose memory (model and data included) exceeds the budget
(``budget_gib``: ``AUTO_MAX_GIB``, or a quarter of a larger GPU) is tried again on
micro-batches half as large (down to 1/``MAX_SPLIT`` of a batch), so a large model or batch
still gets a forward mode. More columns per call cost less per column (on an H200, 512 CIFAR
images, per column: ResNet-18 54 ms at 4 columns over 4 micro-batches, 48 ms at 4 over the
whole batch, 46 ms at 8 over 2 micro-batches; ViT patch 4 56, 50 and 44 ms:
``bench/bench_hvp_shapes.py``), so the budget decides.

The trial is the same for every candidate (``trial_seconds``): a block of its width, two calls
to warm up (build the gradient graph, pick cuDNN plans), then the fastest of ``TIMED``
synchronised calls (a graph mode captures its CUDA graph in the first and replays it in the
next), in milliseconds per column; its memory is the peak of those calls (what the mode keeps
included). Every timing or the reason
a candidate was dropped is kept in ``op.trials`` (label -> ms per column or text); the choice
is remembered for the rest of the process for operators of the same model structure, batch
shapes, dtype, device and TF32 setting (``op.trials["reused"]`` then names it, no trial runs),
and saved for later processes (below).

Compilation: the ``COMPILE_AT``-th operator of a key in the process (a second analysis of the
architecture: a grid worker's or ``analyze-all``'s next run) also tries ``COMPILED``, the
product through ``torch.compile`` (``products.compiled_product``), 4 columns per call over
half batches (H200, ResNet-18, 512 images, per column: 30.4 ms at 23.0 GiB against 33.3 ms at
16.4 GiB over quarter batches, ``bench/bench_hvp_shapes.py``, and 45.9 for the graphs; ViT
patch 4 over quarter batches 22.5 against 43.6; but 50-95 s of compilation, paid once per
structure in a process since later checkpoints reuse it). Over the budget it is tried again on
micro-batches half as large, as any candidate (a GPU of 80 GB or less: quarter batches). It is
kept when it is faster (``op.trials`` gains its label, and ``"compile trial"``: the seconds its
trial took, compilation included, every size tried).

Saved choices: on CUDA each choice (and its trials) is also written to
``locations.cache_root() / "hvp-choices"``, one small JSON file per key, the key there adding
the GPU's name and the torch, CUDA and cuDNN versions (``saved_key``). A later process (a lone
``analyze``, another grid worker) starts from it: no trials, and a saved compiled choice
compiles at once, Inductor's own on-disk caches (``TORCHINDUCTOR_CACHE_DIR``) sparing most of
the compilation that the first process paid. A saved choice without a compile trial still gets
one at the process' ``COMPILE_AT``-th operator of the key. Delete the folder (or
``forget(saved=True)``) to measure again, e.g. after changing what shares the GPU.
"""
from __future__ import annotations

import gc
import hashlib
import json
import time
import warnings
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

from ...errors import ConfigError
from ...locations import cache_root
from ...store.atomic import atomic_path
from ...train.environment import sync
from .products import WARMUPS

AUTO_MAX_GIB = 20.0   # memory budget of a candidate (model and data included), at least
GPU_SHARE = 0.25      # or this share of the GPU's memory (35 GiB of an H200's 140)
WIDTHS = (4, 8)       # columns per vmap call of the wide candidates
FIRST_SPLIT = {1: 1, 4: 1, 8: 2}  # micro-batches a width is tried on first (more if over budget)
CHANNELS_LAST = (1, 4)  # widths also tried in channels-last memory format (convolutions)
MAX_SPLIT = 16        # smallest micro-batch tried for memory: 1/MAX_SPLIT of a batch
TIMED = 2             # timed calls per candidate (the fastest counts), after the warm-ups
COMPILE_AT = 2        # the operator of a key that tries COMPILED (None: never compile)
COMPILE_DEVICES = ("cuda",)  # where COMPILED is tried (on the CPU "auto" is "cached")
SAVE_DEVICES = ("cuda",)  # where choices are saved for later processes (module docstring)
SAVED = "hvp-choices"     # their folder under locations.cache_root()
SAVED_FORMAT = 1          # part of the saved key: a new candidate set or format measures again
_CHOICES: dict[tuple, tuple["Candidate", dict]] = {}
_SEEN: dict[tuple, int] = {}  # operators of each key that chose a mode in this process


@dataclass(frozen=True)
class Candidate:
    mode: str
    chunk: int = 1
    split: int = 1
    channels_last: bool = False

    @property
    def label(self) -> str:
        return " ".join([self.mode] + ([f"x{self.chunk}"] if self.chunk > 1 else [])
                        + ([f"/{self.split}"] if self.split > 1 else [])
                        + (["chlast"] if self.channels_last else []))


COMPILED = Candidate("compile", 4, 2)  # tried at COMPILE_AT (module docstring)


def candidates(op) -> list[Candidate]:
    """The candidates of ``op`` (a width given by ``chunk_size`` keeps only that width)."""
    conv = any(p.ndim == 4 for p in op.params)
    given = op._given_chunk
    out = []
    for chunk in ((given,) if given else (1, *WIDTHS)):
        split = FIRST_SPLIT.get(chunk, chunk)
        for cl in ((False, True) if conv and (given or chunk in CHANNELS_LAST) else (False,)):
            out.append(Candidate("graph", chunk, split, cl))
    return out + [Candidate("cached")]


def budget_gib(device: torch.device) -> float:
    """GPU memory a candidate may need: ``AUTO_MAX_GIB``, or ``GPU_SHARE`` of a larger GPU."""
    if device.type != "cuda":
        return AUTO_MAX_GIB
    total = torch.cuda.get_device_properties(device).total_memory / 2**30
    return max(AUTO_MAX_GIB, GPU_SHARE * total)


def _args(c: Candidate) -> tuple:
    return c.mode, c.chunk, c.split, c.channels_last


def forget(saved: bool = False) -> None:
    """Drop the process' remembered choices, and with ``saved`` the saved ones too."""
    _CHOICES.clear()
    _SEEN.clear()
    if saved:
        for path in (cache_root() / SAVED).glob("*.json"):
            path.unlink(missing_ok=True)


def saved_key(op, key: tuple) -> str:
    """The key of a saved choice: ``_key`` with the GPU's name for its device index, and the
    versions that decide kernels' speed."""
    dev = op.device
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else dev.type
    env = (SAVED_FORMAT, name, torch.__version__, torch.version.cuda,
           torch.backends.cudnn.version() if dev.type == "cuda" else None)
    return repr((env, key[1:]))


def _saved_path(text: str) -> Path:
    return cache_root() / SAVED / f"{hashlib.sha256(text.encode()).hexdigest()[:24]}.json"


def _load(op, key: tuple) -> tuple["Candidate", dict] | None:
    """The saved choice of ``key`` (None: none, or unreadable: measured again)."""
    if op.device.type not in SAVE_DEVICES:
        return None
    text = saved_key(op, key)
    path = _saved_path(text)
    try:
        saved = json.loads(path.read_text())
        if saved["key"] != text:
            return None
        return Candidate(**saved["choice"]), {**saved["trials"], "saved choice": str(path)}
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as err:
        warnings.warn(f"ignoring the saved Hessian product choice {path} "
                      f"({type(err).__name__}: {err}); measuring again", stacklevel=2)
        return None


def _save(op, key: tuple, cand: "Candidate", trials: dict) -> None:
    """Write the choice for later processes; a cache that cannot be written only warns."""
    if op.device.type not in SAVE_DEVICES:
        return
    text = saved_key(op, key)
    trials = {k: v for k, v in trials.items() if k not in ("reused", "saved choice")}
    record = {"key": text, "choice": asdict(cand), "trials": trials,
              "saved": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    path = _saved_path(text)
    try:
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps(record, indent=1))
    except OSError as err:
        warnings.warn(f"could not save the Hessian product choice to {path}: {err}",
                      stacklevel=2)


def _key(op) -> tuple:
    return (str(op.device), str(op.dtype), type(op.model).__qualname__,
            tuple(tuple(p.shape) for p in op.params),
            tuple((tuple(x.shape), str(x.dtype)) for x, _ in op.batches), op._given_chunk,
            op.autocast, torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
            torch.backends.cudnn.benchmark)


def _gib(device: torch.device, peak: bool = False) -> float:
    if device.type != "cuda":
        return 0.0
    fn = torch.cuda.max_memory_allocated if peak else torch.cuda.memory_allocated
    return fn(device) / 2**30


def trial_seconds(op, W) -> float:
    """Seconds of the fastest of ``TIMED`` products on W after ``products.WARMUPS`` warm-up
    products (a graph mode captures in the first timed call and replays in the next). The peak
    memory counts from after the warm-ups: what the mode keeps (its gradient graph or captured
    CUDA graphs) and what its products allocate, not the warm-up's passing workspaces (cuDNN's
    autotuner tries algorithms with large ones)."""
    for _ in range(WARMUPS):  # a graph mode's eager calls before its capture
        op._trial_product(W)
    if op.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(op.device)
    best = float("inf")
    for _ in range(TIMED):
        sync(op.device)
        t0 = time.perf_counter()
        op._trial_product(W)
        sync(op.device)
        best = min(best, time.perf_counter() - t0)
    return best


def _smaller(op, cand: Candidate) -> list[Candidate]:
    """The candidate on micro-batches half as large, while there are samples to split."""
    smallest = min(len(x) for x, _ in op.batches)
    if cand.mode != "cached" and cand.split * 2 <= min(MAX_SPLIT, smallest):
        return [replace(cand, split=cand.split * 2)]
    return []


def _free(device) -> None:
    gc.collect()  # CUDA graphs and their memory pools of a dropped candidate
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _run_trials(op, queue: list[Candidate]):
    """Try the candidates in turn (``op.trials`` gets each one's ms per column or why it was
    dropped): ``best = (seconds per column, candidate, graphs, products)`` within the budget,
    and ``over = (GiB, candidate)``, the least over it."""
    gen = torch.Generator(device=op.device).manual_seed(0)
    base, best, over = _gib(op.device), None, None
    budget = budget_gib(op.device)
    while queue:
        cand = queue.pop(0)
        W = torch.randn(op.shape[0], cand.chunk, generator=gen, device=op.device,
                        dtype=op.dtype)
        before = _gib(op.device)
        if op.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(op.device)
        try:
            op._setup(*_args(cand))
            seconds = trial_seconds(op, W) / cand.chunk
            need = base + _gib(op.device, peak=True) - before
            if need > budget:
                op.trials[cand.label] = f"dropped: {need:.1f} GiB > {budget:g} GiB"
                queue[:0] = _smaller(op, cand)
                if over is None or need < over[0]:
                    over = (need, cand)
            else:
                op.trials[cand.label] = 1e3 * seconds
                if best is None or seconds < best[0]:
                    best = (seconds, cand, op._graphs, op._forward)
        except torch.cuda.OutOfMemoryError:
            op.trials[cand.label] = "failed: out of memory"
            queue[:0] = _smaller(op, cand)
        except (RuntimeError, NotImplementedError, ConfigError) as err:
            # no forward rule, no CUDA graphs here: the same product eagerly, or not a candidate
            op.trials[cand.label] = f"failed: {type(err).__name__}: {str(err)[:80]}"
            if cand.mode == "graph":
                queue.insert(0, replace(cand, mode="forward"))
        finally:
            op.trial_products += op._trial_columns()
            op._graphs, op._forward = None, None
            _free(op.device)  # the best one so far is still held by `best`
    return best, over


def _take(op, best) -> Candidate:
    _, cand, op._graphs, op._forward = best
    op.mode, op.chunk_size, op.split, op.channels_last = _args(cand)
    return cand


def _compile_now(op, key, cand: Candidate, trials: dict) -> bool:
    """Whether this operator tries ``COMPILED`` (module docstring)."""
    return (COMPILE_AT is not None and _SEEN[key] == COMPILE_AT
            and op.device.type in COMPILE_DEVICES
            and op._given_chunk is None and cand.mode != "compile"
            and "compile trial" not in trials  # a saved choice's earlier one
            and isinstance(trials.get(cand.label), float))


def _with_compiled(op, cand: Candidate, trials: dict) -> tuple[Candidate, dict]:
    """The compiled product's trial against the remembered choice: the faster one."""
    t0 = time.perf_counter()
    best, _ = _run_trials(op, [COMPILED])
    trials = {**trials, **op.trials,
              "compile trial": f"{time.perf_counter() - t0:.1f} s, compilation included"}
    if best is not None and 1e3 * best[0] < trials[cand.label]:
        return _take(op, best), trials
    op._setup(*_args(cand))
    return cand, trials


def _first_choice(op) -> Candidate:
    """The fastest candidate within the budget, else the one needing least memory."""
    best, over = _run_trials(op, candidates(op))
    if best is not None:
        return _take(op, best)
    if over is None:
        raise RuntimeError(f"no Hessian-vector product mode ran: {op.trials}")
    # Every mode that ran needs more than the budget: take the one needing least, alone.
    op._setup(*_args(over[1]))
    op.trials["chosen over budget"] = over[1].label
    return over[1]


def choose(op) -> None:
    """Set ``op`` up in the fastest candidate within the memory budget (module docstring)."""
    key = _key(op)
    _SEEN[key] = _SEEN.get(key, 0) + 1
    if key not in _CHOICES and (saved := _load(op, key)) is not None:
        _CHOICES[key] = saved
    if key not in _CHOICES:
        cand = _first_choice(op)
    else:
        cand, trials = _CHOICES[key]
        if not _compile_now(op, key, cand, trials):
            op._setup(*_args(cand))
            op.trials = {**trials, "reused": cand.label}
            return
        cand, op.trials = _with_compiled(op, cand, trials)
    op.n_products += op.trial_products
    _CHOICES[key] = (cand, dict(op.trials))
    _save(op, key, cand, op.trials)
    _free(op.device)
