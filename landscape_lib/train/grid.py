"""Grid files (TOML) -> run configs, and running a grid with several workers.

    [defaults]                     # any RunConfig key, shared by every study
    dataset = "digits"
    epochs = 8

    [analyses.hessian]             # analyses scheduled after each run (see `list analyses`)
    epochs = ["last"]

    [[study]]
    name = "initializers"          # stored as the runs' `study`
    init = ["lecun", "xavier"]     # a list on a scalar key sweeps it (cartesian product)
    seed = [0, 1]
    variants = [                   # optional: explicit combinations, crossed with the sweeps
      { arch = "mlp" },
      { arch = "vit", arch_options = { patch_size = 2 } },
    ]
    variants_opt = [               # more variant axes (any key starting with `variants`) are
      { optimizer = "sgd", lr = 0.1 },   # crossed with each other
      { optimizer = "adam", lr = 1e-3 },
    ]

A list of tables on a table-valued key (arch_options, optimizer_options, ...) sweeps it too.
"""
from __future__ import annotations

import itertools
import multiprocessing as mp
import os
import queue
import tomllib
from dataclasses import fields
from pathlib import Path

from tqdm.auto import tqdm

from ..config import RunConfig
from ..errors import ConfigError, LandscapeError
from ..store import Store

_KINDS = {f.name: f.type for f in fields(RunConfig)}
_LIST_VALUED = {k for k, t in _KINDS.items() if t.startswith("list")}


def load_grid(path: str | os.PathLike, *, overrides: dict | None = None,
              studies: list[str] | None = None) -> list[RunConfig]:
    """Parse and validate a grid file; every run config is checked before anything runs."""
    path = Path(path)
    try:
        spec = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"grid file {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"grid file {path} is not valid TOML: {exc}") from None
    unknown = set(spec) - {"defaults", "study", "analyses"}
    if unknown:
        raise ConfigError(f"grid file {path}: unknown section(s) {sorted(unknown)}; "
                          "expected [defaults], [analyses] and [[study]]")
    defaults = dict(spec.get("defaults", {}))
    if "analyses" in spec:
        defaults["analyses"] = spec["analyses"]
    configs, seen = [], set()
    for study in spec.get("study", []):
        if studies and study.get("name") not in studies:
            continue
        for raw in expand_study(study, defaults):
            try:
                cfg = RunConfig.from_dict(raw).with_overrides(overrides or {})
                cfg.validate_names()
            except LandscapeError as exc:
                raise type(exc)(f"grid file {path}, study '{study.get('name', '?')}': {exc}") \
                    from None
            if cfg.run_id() not in seen:  # the same run listed twice trains once
                seen.add(cfg.run_id())
                configs.append(cfg)
    if not configs:
        raise ConfigError(f"grid file {path} defines no runs"
                          + (f" for studies {studies}" if studies else ""))
    return configs


def expand_study(study: dict, defaults: dict) -> list[dict]:
    study = dict(study)
    name = study.pop("name", "")
    axes = [study.pop(k) for k in sorted(study) if k.startswith("variants")]
    for axis in axes:
        if not isinstance(axis, list) or not axis or not all(isinstance(v, dict) for v in axis):
            raise ConfigError(f"study '{name}': variants must be a non-empty list of tables")
    sweeps = {k: v for k, v in study.items() if _is_sweep(k, v)}
    fixed = {k: v for k, v in study.items() if k not in sweeps}
    out = []
    for variant_combo in itertools.product(*axes):
        variant = {k: v for part in variant_combo for k, v in part.items()}
        for combo in itertools.product(*sweeps.values()):
            raw = {**defaults, **fixed, **variant, **dict(zip(sweeps, combo)), "study": name}
            out.append(raw)
    return out


def _is_sweep(key: str, value) -> bool:
    if not isinstance(value, list):
        return False
    if key in _LIST_VALUED:  # a list of lists sweeps a list-valued key
        return bool(value) and all(isinstance(v, list) for v in value)
    return True  # a list on a scalar key, or a list of tables on a table-valued key


# ---------------------------------------------------------------------- running
def pending(configs: list[RunConfig], store: Store) -> list[RunConfig]:
    """The configs whose run is not finished yet (a finished run is a no-op)."""
    out = []
    for cfg in configs:
        row = store.read("runs", cfg.run_id())
        if row is None or row["status"].iloc[0] not in ("finished", "diverged"):
            out.append(cfg)
    return out


def resolve_jobs(jobs: str | int) -> int:
    if str(jobs) == "auto":
        import torch
        return max(1, torch.cuda.device_count())
    return max(1, int(jobs))


def run_grid(configs: list[RunConfig], store: Store, *, jobs: int = 1, data_root=None,
             device=None, progress: bool = True) -> dict[str, int]:
    """Train every pending run; returns a count per final status."""
    todo = pending(configs, store)
    counts = {"skipped": len(configs) - len(todo)}
    bar = tqdm(total=len(todo), desc="grid", unit="run", disable=not progress, position=0)
    if jobs == 1 or len(todo) <= 1:
        for cfg in todo:
            status = _run_one(cfg.to_dict(), str(store.root), data_root, device, progress, 1)
            counts[status] = counts.get(status, 0) + 1
            bar.update()
    else:
        for status in _parallel(todo, store, jobs, data_root, device, progress):
            counts[status] = counts.get(status, 0) + 1
            bar.update()
    bar.close()
    return counts


def _run_one(cfg_dict, store_root, data_root, device, progress, position) -> str:
    from .engine import train_run
    cfg = RunConfig.from_dict(cfg_dict)
    store = Store(store_root)
    status = train_run(cfg, store, data_root=data_root, device=device, progress=progress,
                       position=position)
    if status == "finished" and cfg.analyses:
        from ..analyses.schedule import run_scheduled
        run_scheduled(cfg, store, device=device, progress=progress)
    return status


def _worker(tasks, results, store_root, data_root, device, progress, position, threads):
    import torch
    torch.set_num_threads(threads)
    while True:
        cfg_dict = tasks.get()
        if cfg_dict is None:
            return
        try:
            status = _run_one(cfg_dict, store_root, data_root, device, progress, position)
        except Exception as exc:  # the run is marked failed by the engine; keep the grid going
            print(f"run failed: {type(exc).__name__}: {exc}", flush=True)
            status = "failed"
        results.put(status)


def _parallel(todo, store, jobs, data_root, device, progress):
    """Spawned worker processes, one GPU each where there are several."""
    import torch
    ctx = mp.get_context("spawn")
    tasks, results = ctx.Queue(), ctx.Queue()
    for cfg in todo:
        tasks.put(cfg.to_dict())
    gpus = torch.cuda.device_count()
    threads = max(1, (os.cpu_count() or 1) // jobs)
    procs = []
    for i in range(jobs):
        tasks.put(None)
        env_before = os.environ.get("CUDA_VISIBLE_DEVICES")
        if gpus > 1:
            os.environ["CUDA_VISIBLE_DEVICES"] = str(i % gpus)  # inherited by the child
        p = ctx.Process(target=_worker, args=(tasks, results, str(store.root), data_root, device,
                                               progress, i + 1, threads))
        p.start()
        procs.append(p)
        if gpus > 1:
            if env_before is None:
                os.environ.pop("CUDA_VISIBLE_DEVICES", None)
            else:
                os.environ["CUDA_VISIBLE_DEVICES"] = env_before
    try:
        received = 0
        while received < len(todo):
            try:
                yield results.get(timeout=1.0)
                received += 1
            except queue.Empty:
                if not any(p.is_alive() for p in procs):
                    break  # workers died (killed): what they left is resumed next time
    finally:
        for p in procs:
            p.join(timeout=5)
            if p.is_alive():
                p.terminate()
