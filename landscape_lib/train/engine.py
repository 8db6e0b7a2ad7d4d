"""Training one run: data resident on the device, a seeded loop, metrics and checkpoints per epoch.

`train_run(cfg, store)` is idempotent: a finished (or diverged) run is skipped, an interrupted
one resumes from its last epoch (epoch rows past that epoch are dropped, so none is duplicated).

Per-epoch metrics are measured one way at every epoch, epoch 0 (before any step) included:
``train_loss``/``train_acc`` after the epoch's last step, model in eval mode (dropout off, BN on
its running statistics), plain mean cross-entropy (no label smoothing), no augmentation, on a
fixed training sample: the first ``train_eval_samples`` of a permutation drawn from seed 0
(`DeviceData.sample_indices`), the same examples at every epoch and for every run on that data
set (the whole set when it is smaller). ``val_loss``/``val_acc``: the same on the whole test
split. So ``loss_improvement`` (previous minus current train_loss) and ``generalization_gap``
(val_loss - train_loss) compare like with like. ``train_loss_running``/``train_acc_running``
(NULL at epoch 0): the running average over the epoch's steps of the training objective (train
mode, augmented batches, label smoothing), what the optimizer saw. The extra pass costs about
1/15 of a CIFAR-10 epoch (a third of the work per image on a fifth of the images).
"""
from __future__ import annotations

import math
import os
import time
import traceback
from dataclasses import dataclass, field
from datetime import datetime

import torch
from torch import nn
from tqdm.auto import tqdm

from ..config import RunConfig
from ..data import DeviceData
from ..errors import LandscapeError
from ..inits import init_model_
from ..models import model_label
from ..optim import get_spec, optimizer_step
from ..store import SCHEMA_VERSION, Store
from ..store.schema import (DIVERGED, DONE_STATUSES, FAILED, FINISHED, INTERRUPTED, RUNNING)
from . import checkpoints as ck
from . import metrics
from .build import build_data, build_forward, build_model, build_optimizer, uses_channels_last
from .environment import environment, resolve_device, set_tf32

EVAL_BATCH = 1024
TRAIN_EVAL_SEED = 0  # the permutation the fixed training sample is the start of


@dataclass
class Run:
    """Everything one training run holds while it trains."""
    cfg: RunConfig
    store: Store
    run_id: str
    device: torch.device
    data: DeviceData
    model: nn.Module          # the module whose state is saved
    forward: nn.Module        # the (possibly compiled) module used for steps
    optimizer: torch.optim.Optimizer
    generator: torch.Generator
    info: dict = field(default_factory=dict)     # the `runs` row
    epochs: list = field(default_factory=list)   # the `epochs` rows so far
    layers: list = field(default_factory=list)   # the `layers` rows so far
    saved: list = field(default_factory=list)    # the `checkpoints` rows so far
    sketch: ck.CountSketch | None = None
    trajectory: str = "off"
    augment: bool = False
    train_eval: torch.Tensor | None = None  # indices of the fixed training sample (None: all)

    @property
    def amp(self) -> bool:
        return self.cfg.amp and self.device.type == "cuda"


# ---------------------------------------------------------------------- public entry point
def train_run(cfg: RunConfig, store: Store, *, data_root=None, device=None, progress=True,
              position: int = 0) -> str:
    """Train (or resume, or skip) one run; returns its final status."""
    run_id = cfg.run_id()
    existing = store.read("runs", run_id)
    if existing is not None and existing["status"].iloc[0] in DONE_STATUSES:
        return "skipped"
    lock = store.lock_run(run_id)
    if lock is None:
        return "busy"  # another process is training this run right now
    try:
        run = _build(cfg, store, run_id, resolve_device(device), data_root)
        start = _resume(run) if existing is not None else 0
        return _train(run, start, progress, position)
    finally:
        lock.close()


# ---------------------------------------------------------------------- building
def _build(cfg: RunConfig, store: Store, run_id: str, device: torch.device, data_root) -> Run:
    torch.manual_seed(cfg.seed)
    if device.type == "cuda":
        # Fixed input shapes: let cuDNN pick the fastest conv algorithms once per shape.
        torch.backends.cudnn.benchmark = True
        set_tf32(True)
    data = build_data(cfg, device, data_root, channels_last=uses_channels_last(cfg, device))
    model = build_model(cfg, data)
    init_model_(model, cfg.init, momentum=cfg.momentum, **cfg.init_options)
    model.to(device)
    if data.channels_last:
        model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(cfg, model, device)
    forward = build_forward(cfg, model, device)
    generator = torch.Generator(device=device).manual_seed(cfg.seed)
    run = Run(cfg, store, run_id, device, data, model, forward, optimizer, generator)
    run.augment = cfg.augment if cfg.augment is not None else data.augment_default
    if 0 < cfg.train_eval_samples < data.num_examples("train"):
        run.train_eval = data.sample_indices("train", cfg.train_eval_samples, TRAIN_EVAL_SEED)
    n_params = sum(p.numel() for p in model.parameters())
    run.trajectory = ck.trajectory_mode(cfg.trajectory, n_params, cfg.epochs)
    if run.trajectory == "sketch":
        run.sketch = ck.CountSketch(n_params, cfg.sketch_dim, cfg.seed, device)
    run.info = _run_row(cfg, run_id, device, n_params)
    return run


def _run_row(cfg: RunConfig, run_id: str, device: torch.device, n_params: int) -> dict:
    import json
    now = datetime.now()
    return {
        "run_id": run_id, "study": cfg.study, "status": RUNNING, "dataset": cfg.dataset,
        "arch": cfg.arch, "arch_options": json.dumps(cfg.arch_options, sort_keys=True),
        "model_label": model_label(cfg.arch, cfg.arch_options), "init": cfg.init,
        "optimizer": cfg.optimizer, "lr": cfg.lr, "weight_decay": cfg.weight_decay,
        "batch_size": cfg.batch_size, "epochs": cfg.epochs, "seed": cfg.seed,
        "tags": ",".join(map(str, cfg.tags)),
        "config_json": json.dumps(cfg.to_dict(), sort_keys=True, default=str),
        "env_json": json.dumps(environment(device), sort_keys=True),
        "n_params": n_params, "device": str(device), "epochs_done": 0,
        "created_at": now, "updated_at": now, "pid": os.getpid(), "host": os.uname().nodename,
        "schema_version": SCHEMA_VERSION,
    }


# ---------------------------------------------------------------------- resuming
def _resume(run: Run) -> int:
    """Restore the last finished epoch; returns the epoch to continue after (0 = from scratch)."""
    path = run.store.resume_path(run.run_id)
    if not path.exists():
        run.store.remove_run(run.run_id)  # nothing usable: restart cleanly
        return 0
    state = torch.load(path, map_location=run.device, weights_only=False)
    run.model.load_state_dict(state["model"])
    run.optimizer.load_state_dict(state["optimizer"])
    run.generator.set_state(state["generator"].cpu())
    torch.set_rng_state(state["cpu_rng"])
    epoch = state["epoch"]
    keep = lambda df: [] if df is None else df[df["epoch"] <= epoch].to_dict("records")  # noqa
    run.epochs = keep(run.store.read("epochs", run.run_id))
    run.layers = keep(run.store.read("layers", run.run_id))
    run.saved = keep(run.store.read("checkpoints", run.run_id))
    previous = run.store.read("runs", run.run_id)
    run.info["created_at"] = previous["created_at"].iloc[0]
    run.info["epochs_done"] = epoch
    return epoch


def _save_resume(run: Run, epoch: int) -> None:
    ck.atomic_save({"epoch": epoch, "model": run.model.state_dict(),
                    "optimizer": run.optimizer.state_dict(),
                    "generator": run.generator.get_state(), "cpu_rng": torch.get_rng_state()},
                   run.store.resume_path(run.run_id))


# ---------------------------------------------------------------------- the loop
def _train(run: Run, start: int, progress: bool, position: int) -> str:
    cfg = run.cfg
    _write(run)
    previous = metrics.flat_params(run.model)
    if start == 0:
        _record_epoch(run, 0, _initial_row(run), previous, previous)
    bar = tqdm(range(start + 1, cfg.epochs + 1), desc=run.run_id[:40], position=position,
               leave=False, disable=not progress, unit="epoch", dynamic_ncols=True)
    try:
        for epoch in bar:
            row = _train_epoch(run, epoch)
            current = metrics.flat_params(run.model)
            diverged = not (math.isfinite(row["train_loss"])
                            and math.isfinite(row["train_loss_running"])
                            and torch.isfinite(current).all())
            row["diverged"] = diverged
            _record_epoch(run, epoch, row, current, previous)
            previous = current
            bar.set_postfix(loss=f"{row['train_loss']:.3g}", val_acc=f"{row['val_acc']:.3f}")
            if diverged:
                return _finish(run, DIVERGED, diverged_epoch=epoch)
        return _finish(run, FINISHED)
    except KeyboardInterrupt:
        _finish(run, INTERRUPTED)
        raise
    except LandscapeError:
        raise
    except Exception as exc:  # a bug or an OOM in one run must not stop the grid
        _finish(run, FAILED, error=f"{type(exc).__name__}: {exc}")
        traceback.print_exc()
        return FAILED
    finally:
        bar.close()


def lr_at(cfg: RunConfig, epoch: int) -> float:
    """Per-epoch schedule: linear warm-up, then constant or cosine decay to 0 at the end."""
    if epoch <= cfg.warmup_epochs:
        return cfg.lr * epoch / (cfg.warmup_epochs + 1)
    if cfg.schedule == "cosine":
        span = max(1, cfg.epochs - cfg.warmup_epochs)
        done = (epoch - 1 - cfg.warmup_epochs) / span
        return cfg.lr * 0.5 * (1 + math.cos(math.pi * done))
    return cfg.lr


def _train_epoch(run: Run, epoch: int) -> dict:
    cfg, device, model = run.cfg, run.device, run.forward
    lr = lr_at(cfg, epoch)
    for group in run.optimizer.param_groups:
        group["lr"] = lr
    spec = get_spec(cfg.optimizer)
    params = [p for p in run.model.parameters() if p.requires_grad]
    loss_sum = torch.zeros((), device=device, dtype=torch.float64)
    correct = torch.zeros((), device=device, dtype=torch.int64)
    grad_sum = torch.zeros((), device=device, dtype=torch.float64)
    seen = steps = 0
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    started = time.perf_counter()
    model.train()
    for x, y in run.data.train_batches(cfg.batch_size, run.generator, augment=run.augment):
        first = {}

        def closure():
            run.optimizer.zero_grad(set_to_none=True)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=run.amp):
                logits = model(x)
            loss = nn.functional.cross_entropy(logits.float(), y,
                                               label_smoothing=cfg.label_smoothing)
            loss.backward(create_graph=spec.create_graph)
            if not first:  # measure the gradient at the step's starting weights
                grads = [p.grad for p in params if p.grad is not None]
                first["grad_norm"] = torch.nn.utils.get_total_norm(grads)
                first["logits"] = logits.detach()
            if cfg.grad_clip:
                torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            return loss

        loss = optimizer_step(run.optimizer, spec, closure, model=run.model)
        loss_sum += loss.detach().double() * y.numel()
        correct += (first["logits"].argmax(1) == y).sum()
        grad_sum += first["grad_norm"].double()
        seen += y.numel()
        steps += 1
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    train_seconds = time.perf_counter() - started
    measured = _measure(run)
    peak, kind = metrics.peak_memory_mb(device)
    return {**measured, "train_loss_running": (loss_sum / max(seen, 1)).item(),
            "train_acc_running": (correct.double() / max(seen, 1)).item(),
            "grad_norm": (grad_sum / max(steps, 1)).item(),
            "lr": lr, "images_per_s": seen / train_seconds, "peak_mem_mb": peak, "mem_kind": kind,
            "epoch_time": time.perf_counter() - started}


def _measure(run: Run) -> dict:
    """train_loss/acc on the fixed training sample and val_loss/acc on the test split, in eval
    mode: the same measurement at every epoch (see the module doc)."""
    train = metrics.evaluate(run.forward, run.data.eval_batches("train", EVAL_BATCH,
                                                                run.train_eval), amp=run.amp)
    val = metrics.evaluate(run.forward, run.data.eval_batches("test", EVAL_BATCH), amp=run.amp)
    return {"train_loss": train[0], "train_acc": train[1], "val_loss": val[0], "val_acc": val[1]}


def _initial_row(run: Run) -> dict:
    """Epoch 0: the model as initialised, before any step, measured like every later epoch."""
    started = time.perf_counter()
    measured = _measure(run)
    peak, kind = metrics.peak_memory_mb(run.device)
    return {**measured, "lr": lr_at(run.cfg, 1), "peak_mem_mb": peak, "mem_kind": kind,
            "epoch_time": time.perf_counter() - started, "diverged": False}


def _record_epoch(run: Run, epoch: int, row: dict, current: torch.Tensor,
                  previous: torch.Tensor) -> None:
    """Derived metrics, weights to disk, then rows, then the resume state (in that order, so a
    kill at any point leaves rows <= the resume epoch, and a resume re-does at most one epoch)."""
    layers = metrics.layer_rows(run.model) if torch.isfinite(current).all() else []
    last = run.epochs[-1] if run.epochs else None
    row.update(run_id=run.run_id, epoch=epoch, weight_norm=current.norm().item(),
               param_change=(current - previous).norm().item() if epoch else None,
               loss_improvement=(last["train_loss"] - row["train_loss"]) if last else None,
               wall_time=(last["wall_time"] if last else 0.0) + row["epoch_time"],
               **metrics.averages(layers))
    _save_weights(run, epoch, current)
    run.epochs.append(row)
    run.layers.extend({"run_id": run.run_id, "epoch": epoch, **layer} for layer in layers)
    run.info.update(epochs_done=epoch, updated_at=datetime.now())
    _write(run)
    _save_resume(run, epoch)


def _save_weights(run: Run, epoch: int, flat: torch.Tensor) -> None:
    if epoch in run.cfg.resolved_checkpoint_epochs():
        path = run.store.checkpoint_path(run.run_id, epoch)
        ck.atomic_save(run.model.state_dict(), path)
        run.saved.append({"run_id": run.run_id, "epoch": epoch, "kind": "checkpoint",
                          "path": str(path.relative_to(run.store.root)), "n_values": flat.numel()})
    if run.trajectory != "off":
        vec = run.sketch(flat) if run.sketch is not None else flat
        path = run.store.trajectory_path(run.run_id, epoch)
        ck.atomic_save(vec.cpu(), path)
        run.saved.append({"run_id": run.run_id, "epoch": epoch, "kind": run.trajectory,
                          "path": str(path.relative_to(run.store.root)), "n_values": vec.numel()})


def _write(run: Run) -> None:
    rid, store = run.run_id, run.store
    if run.epochs:
        store.write("epochs", rid, run.epochs)
    if run.layers:
        store.write("layers", rid, run.layers)
    if run.saved:
        store.write("checkpoints", rid, run.saved)
    store.write("runs", rid, [run.info])


def _finish(run: Run, status: str, *, diverged_epoch=None, error=None) -> str:
    last = run.epochs[-1] if run.epochs else {}
    best = max((r["val_acc"] for r in run.epochs if r.get("val_acc") == r.get("val_acc")),
               default=None)
    run.info.update(status=status, diverged_epoch=diverged_epoch, error=error,
                    updated_at=datetime.now(), finished_at=datetime.now(),
                    final_train_loss=last.get("train_loss"), final_train_acc=last.get("train_acc"),
                    final_val_loss=last.get("val_loss"), final_val_acc=last.get("val_acc"),
                    best_val_acc=best, total_time=last.get("wall_time"))
    if last.get("val_loss") is not None and last.get("train_loss") is not None:
        run.info["generalization_gap"] = last["val_loss"] - last["train_loss"]
    _write(run)
    return status
