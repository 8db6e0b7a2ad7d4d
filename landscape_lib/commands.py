"""The CLI commands (argument parsing lives in cli.py)."""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from tqdm.auto import tqdm

from .config import RunConfig, parse_overrides, read_toml
from .errors import ConfigError, LandscapeError
from .store import Store, queries
from .store.schema import ANALYSIS_DONE, ANALYSIS_FAILED, DONE_STATUSES


def train(args) -> int:
    data = read_toml(args.config, "config file") if args.config else {}
    cfg = RunConfig.from_dict(data).with_overrides(parse_overrides(args.overrides))
    cfg.validate_names()
    check_runs([cfg], args.data_root, args.device)
    store = _open_store(args.store)
    from .pipeline import run_grid
    counts = run_grid([cfg], store, jobs=1, data_root=args.data_root, device=args.device,
                      progress=not args.no_progress)
    _report(counts, store, [cfg.run_id()])
    return _exit_status([cfg], store)


def train_all(args) -> int:
    from .grid import load_grid
    from .pipeline import pending, resolve_jobs, run_grid
    ray = ray_options(args)
    overrides = parse_overrides(args.set)
    if args.epochs is not None:
        overrides["epochs"] = args.epochs
    configs = load_grid(args.grid, overrides=overrides, studies=args.study)
    if args.dry_run:
        for cfg in configs:
            print(f"{cfg.run_id()}  study={cfg.study} dataset={cfg.dataset} arch={cfg.arch} "
                  f"init={cfg.init} optimizer={cfg.optimizer} epochs={cfg.epochs}")
        return 0
    check_runs(configs, args.data_root, args.device)
    store = _open_store(args.store)
    todo = len(pending(configs, store))
    if ray is not None:
        from .scale.ray_backend import run_grid_ray
        where = ray.address or os.environ.get("RAY_ADDRESS") or "a new Ray instance here"
        print(f"{len(configs)} runs in {args.grid}, {todo} to train on Ray ({where}); "
              f"store: {store.root}", file=sys.stderr)
        counts = run_grid_ray(configs, store, ray)
    else:
        jobs = max(1, min(resolve_jobs(args.jobs), todo))
        print(f"{len(configs)} runs in {args.grid}, {todo} to train or complete, "
              f"{jobs} worker(s); store: {store.root}", file=sys.stderr)
        counts = run_grid(configs, store, jobs=jobs, data_root=args.data_root,
                          device=args.device, progress=not args.no_progress)
    _report(counts, store)
    _compact_if_large(store)
    left = unfinished(counts)
    if left:
        print(f"{left} run(s) left unfinished: re-run the same command to resume them",
              file=sys.stderr)
    return 1 if left else _exit_status(configs, store)


def unfinished(counts: dict[str, int]) -> int:
    """Runs a grid left without a final result (failed, busy, lost after retries...)."""
    from .scale.tasks import SKIPPED
    return sum(n for status, n in counts.items() if status not in (SKIPPED, *DONE_STATUSES))


# Options of the Ray backend (`cli._backend_args`), by attribute, with their flags.
RAY_FLAGS = {"address": "--address", "gpus_per_run": "--gpus-per-run",
             "cpus_per_run": "--cpus-per-run", "max_retries": "--max-retries",
             "lock_wait": "--lock-wait"}


def ray_options(args):
    """The Ray backend's options, checked (None for the local backend), before anything is
    written and before Ray is imported."""
    given = {key: getattr(args, key) for key in RAY_FLAGS if getattr(args, key, None) is not None}
    if getattr(args, "backend", "local") != "ray":
        if given:
            raise ConfigError(f"{', '.join(RAY_FLAGS[k] for k in given)} needs --backend ray")
        return None
    if str(getattr(args, "jobs", "auto")) != "auto":
        raise ConfigError("-j is the local backend's; on Ray each run is a task "
                          "(--gpus-per-run, --cpus-per-run)")
    from .scale.ray_backend import RayOptions
    if "lock_wait" in given:
        given["lock_wait_s"] = given.pop("lock_wait")
    return RayOptions(data_root=args.data_root, device=args.device,
                      progress=not args.no_progress, **given).check()


AUTO_COMPACT = 500  # loose `runs` parts (one per run) from which train-all compacts at its end


def _compact_if_large(store: Store) -> None:
    """Fold done runs' parts once the store holds many loose ones (see `compact`)."""
    from .store.layout import list_table
    if len(list_table(store.tables_dir, "runs").parts) >= AUTO_COMPACT:
        reports = store.compact()
        n = sum(r.compacted_parts for r in reports)
        print(f"compacted {n} part files of done runs", file=sys.stderr)


def _open_store(root):
    """The store, created or checked, with what killed writers left behind removed."""
    store = Store(root).ensure()
    store.sweep_temporaries()
    return store


def _exit_status(configs, store) -> int:
    """0 when every run of `configs` is done with its scheduled analyses (read back from the
    store), else 1: the unfinished ones were reported and the next train-all resumes them."""
    from .pipeline import pending
    return 1 if pending(configs, store) else 0


def check_runs(configs, data_root, device) -> None:
    """Everything the runs need, before anything is written: the device, each run's scheduled
    analyses (kinds, parameters, epochs), its data set, a dry build of model and optimizer."""
    from .train.build import check_builds
    from .train.environment import resolve_device
    resolve_device(device)
    check_schedules(configs)
    check_builds(configs, data_root)


def check_schedules(configs) -> None:
    from .analyses.registry import check_schedule
    for cfg in configs:
        try:
            check_schedule(cfg.analyses, cfg.resolved_checkpoint_epochs())
        except LandscapeError as exc:
            raise type(exc)(f"run {cfg.run_id()}: {exc}") from None


def _report(counts: dict, store: Store, run_ids=None) -> None:
    summary = ", ".join(f"{v} {k}" for k, v in sorted(counts.items()) if v)
    print(f"done: {summary or 'nothing to do'}. Store: {store.root}", file=sys.stderr)
    if run_ids:
        print("\n".join(run_ids))


def list(args) -> int:  # noqa: A001 - the command's name
    from .optim import SAM_PREFIX, SAM_RHO
    from .registry import registries
    for kind, registry in registries().items():
        if args.what not in ("all", kind):
            continue
        print(f"{kind}:")
        for entry in registry:
            opts = registry.options(entry.name)
            extra = ("  [" + ", ".join(f"{k}={v!r}" for k, v in opts.items()) + "]") if opts else ""
            print(f"  {entry.name:<20} {entry.doc}{extra}")
        if kind == "optimizers":
            print(f"  {SAM_PREFIX + '<base>':<20} SAM (Foret et al. 2020) wrapping any optimizer "
                  f"above, e.g. {SAM_PREFIX}adam  [rho={SAM_RHO!r}]")
    return 0


def runs(args) -> int:
    store = Store(args.store)
    filters = {col: getattr(args, col) for col in queries.RUN_FILTERS}
    if args.csv:
        queries.run_list(store, filters).to_csv(sys.stdout, index=False)
    else:  # Arrow and a plain formatter: no pandas import (1 s at 10,000 runs)
        tbl = queries.run_list(store, filters, arrow=True)
        print(format_table(tbl) if tbl.num_rows else "no runs match")
    _warn_skipped(store)
    return 0


def format_table(tbl) -> str:
    """An Arrow table as right-aligned text columns (floats to 6 significant digits)."""
    cols = []
    for name, col in zip(tbl.column_names, tbl.columns):
        cells = [("" if v is None else f"{v:.6g}" if isinstance(v, float) else str(v))
                 for v in col.to_pylist()]
        width = max(len(name), *map(len, cells))
        cols.append([name.rjust(width)] + [c.rjust(width) for c in cells])
    return "\n".join(" ".join(row) for row in zip(*cols))


def _warn_skipped(store: Store) -> None:
    """One warning per file the reader skipped (corrupt, foreign, stray)."""
    for path, why in sorted(store.reader().problems.items()):
        print(f"warning: skipped {path}: {why}", file=sys.stderr)


def export(args) -> int:
    if args.out:
        check_output(args.out, "-o/--out")
    store = Store(args.store)
    df = queries.table_rows(store, args.table, args.run)
    if not args.out:
        df.to_csv(sys.stdout, index=False)
        _warn_skipped(store)
        return 0
    try:
        df.to_csv(args.out, index=False)
    except OSError as exc:
        raise ConfigError(f"cannot write {args.out}: {exc.strerror or exc}") from None
    print(f"{len(df)} rows -> {args.out}", file=sys.stderr)
    _warn_skipped(store)
    return 0


def compact(args) -> int:
    """Fold done runs' parts into compacted files; one line per table that changed."""
    if not 0 <= args.min_age < float("inf"):
        raise ConfigError(f"--min-age {args.min_age} must be a number of seconds >= 0")
    store = Store(args.store)
    started = time.perf_counter()
    reports = store.compact(min_age=args.min_age)
    if any(r.busy for r in reports):
        print(f"another compaction of {store.root} is running: nothing done", file=sys.stderr)
        return 0
    for r in reports:
        if r.compacted_parts or r.retired_parts or r.merged_files:
            print(f"{r.table}: {r.compacted_parts} parts -> {r.files_written} file(s) "
                  f"({r.rows} rows), {r.retired_parts} loose parts retired, "
                  f"{r.merged_files} small files merged")
        for path, why in r.skipped:
            print(f"warning: left {path}: {why}", file=sys.stderr)
    print(f"compacted in {time.perf_counter() - started:.1f} s. Store: {store.root}",
          file=sys.stderr)
    return 0


def check_output(path, flag: str) -> None:
    """An output file can be made: its folder exists and it is not a folder itself."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{flag} {path} is a directory: give a file name")
    if not path.parent.is_dir():
        raise ConfigError(f"{flag} {path}: the directory {path.parent} does not exist")


# ---------------------------------------------------------------------- analyses
class ProgressWriter:
    """tqdm on the terminal and, for the dashboard, JSON lines in a file."""

    def __init__(self, path: str | None, show: bool, desc: str):
        self.file = open(path, "a", buffering=1) if path else None
        self.bar = tqdm(total=100, desc=desc, disable=not show, unit="%")

    def __call__(self, fraction: float, message: str) -> None:
        self.bar.n = int(100 * fraction)
        self.bar.set_postfix_str(message[:40])
        if self.file:
            self.file.write(json.dumps({"fraction": float(fraction), "message": message,
                                        "time": time.time()}) + "\n")

    def close(self) -> None:
        self.bar.close()
        if self.file:
            self.file.close()


def analyze(args) -> int:
    from .analyses.provenance import prepare, run_analysis
    from .analyses.registry import ANALYSES
    store = Store(args.store)
    params = parse_overrides(args.set)
    kinds = [k.strip() for k in args.what.split(",") if k.strip()]
    if not kinds:
        raise ConfigError("--what names no analysis (see `python -m landscape_lib list "
                          "analyses`)")
    if args.progress_file:
        check_output(args.progress_file, "--progress-file")
    own = {kind: {k: v for k, v in params.items() if k in ANALYSES.get(kind).defaults}
           for kind in kinds}  # unknown analysis names fail here, before anything runs
    unused = set(params) - {k for p in own.values() for k in p}
    if unused:
        raise ConfigError(f"no analysis in '{args.what}' takes parameter(s) {sorted(unused)}")
    for kind in kinds:  # every check of every analysis passes before the first one runs
        prepare(store, args.run, kind, args.epoch, own[kind], device=args.device,
                data_root=args.data_root, gpus=args.gpus)
    for kind in kinds:
        report = ProgressWriter(args.progress_file, not args.no_progress, kind)
        try:
            aid = run_analysis(store, args.run, kind, args.epoch, own[kind], device=args.device,
                               data_root=args.data_root, report=report, gpus=args.gpus)
        finally:
            report.close()
        print(aid)
    return 0


def analyze_all(args) -> int:
    from .grid import load_grid
    from .pipeline import analyze_all as run_all
    from .train.environment import resolve_device
    ray = ray_options(args)
    overrides = {"epochs": args.epochs} if args.epochs is not None else {}
    configs = load_grid(args.grid, overrides=overrides, studies=args.study)
    check_schedules(configs)
    resolve_device(args.device)
    store = _open_store(args.store)
    if ray is not None:
        from .scale.ray_backend import analyze_all_ray
        total = analyze_all_ray(configs, store, ray)
    else:
        total = run_all(configs, store, device=args.device, data_root=args.data_root,
                        progress=not args.no_progress)
    print(f"analyses: {total[ANALYSIS_DONE]} done or stored, {total[ANALYSIS_FAILED]} failed",
          file=sys.stderr)
    return 0 if not total[ANALYSIS_FAILED] else 1
