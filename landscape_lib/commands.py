"""The CLI commands (argument parsing lives in cli.py)."""
from __future__ import annotations

import sys
import tomllib
from pathlib import Path

from .config import RunConfig, parse_overrides
from .errors import ConfigError, StoreError
from .store import TABLES, Store


def train(args) -> int:
    data = {}
    if args.config:
        try:
            data = tomllib.loads(Path(args.config).read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read config {args.config}: {exc}") from None
    cfg = RunConfig.from_dict(data).with_overrides(parse_overrides(args.overrides))
    cfg.validate_names()
    check_data([cfg], args.data_root)
    store = Store(args.store).ensure()
    from .train.grid import run_grid
    counts = run_grid([cfg], store, jobs=1, data_root=args.data_root, device=args.device,
                      progress=not args.no_progress)
    _report(counts, store, [cfg.run_id()])
    return 0 if "failed" not in counts else 1


def train_all(args) -> int:
    from .train.grid import load_grid, pending, resolve_jobs, run_grid
    overrides = parse_overrides(args.set)
    if args.epochs:
        overrides["epochs"] = args.epochs
    configs = load_grid(args.grid, overrides=overrides, studies=args.study)
    if args.dry_run:
        for cfg in configs:
            print(f"{cfg.run_id()}  study={cfg.study} dataset={cfg.dataset} arch={cfg.arch} "
                  f"init={cfg.init} optimizer={cfg.optimizer} epochs={cfg.epochs}")
        return 0
    check_data(configs, args.data_root)
    store = Store(args.store).ensure()
    jobs = resolve_jobs(args.jobs)
    print(f"{len(configs)} runs in {args.grid}, {len(pending(configs, store))} to train, "
          f"{jobs} worker(s); store: {store.root}", file=sys.stderr)
    counts = run_grid(configs, store, jobs=jobs, data_root=args.data_root, device=args.device,
                      progress=not args.no_progress)
    _report(counts, store)
    return 0 if "failed" not in counts else 1


def check_data(configs, data_root) -> None:
    """Load each data set once before anything is written, so a missing one fails cleanly."""
    import json
    from .data import load_dataset
    seen = set()
    for cfg in configs:
        key = (cfg.dataset, json.dumps(cfg.dataset_options, sort_keys=True))
        if key not in seen:
            seen.add(key)
            load_dataset(cfg.dataset, root=data_root, **cfg.dataset_options)


def _report(counts: dict, store: Store, run_ids=None) -> None:
    summary = ", ".join(f"{v} {k}" for k, v in sorted(counts.items()) if v)
    print(f"done: {summary or 'nothing to do'}. Store: {store.root}", file=sys.stderr)
    if run_ids:
        print("\n".join(run_ids))


def list(args) -> int:  # noqa: A001 - the command's name
    from .registries import REGISTRIES
    for kind, (registry, options) in REGISTRIES.items():
        if args.what not in ("all", kind):
            continue
        print(f"{kind}:")
        for entry in registry:
            opts = options(entry.name) if options else {}
            extra = ("  [" + ", ".join(f"{k}={v!r}" for k, v in opts.items()) + "]") if opts else ""
            print(f"  {entry.name:<20} {entry.doc}{extra}")
        if kind == "optimizers":
            print(f"  {'sam-<base>':<20} SAM (Foret et al. 2020) wrapping any optimizer above, "
                  "e.g. sam-adam  [rho=0.05]")
    return 0


def runs(args) -> int:
    store = Store(args.store)
    where, params = [], []
    for col in ("status", "dataset", "arch", "init", "optimizer", "study", "seed"):
        values = getattr(args, col)
        if values:
            where.append(f"list_contains(?, {col})")
            params.append(values)
    sql = ("SELECT run_id, status, study, dataset, model_label, init, optimizer, seed, "
           "epochs_done, epochs, final_val_acc, final_val_loss, generalization_gap FROM runs"
           + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY run_id")
    df = store.query(sql, params)
    if args.csv:
        df.to_csv(sys.stdout, index=False)
    else:
        import pandas as pd
        with pd.option_context("display.max_rows", None, "display.width", 200):
            print(df.to_string(index=False) if len(df) else "no runs match")
    return 0


def export(args) -> int:
    if args.table not in TABLES:
        raise StoreError(f"unknown table '{args.table}'; tables: {', '.join(TABLES)}")
    store = Store(args.store)
    sql, params = f'SELECT * FROM "{args.table}"', []
    if args.run:
        sql += " WHERE list_contains(?, run_id)"
        params.append(args.run)
    df = store.query(sql + " ORDER BY ALL", params)
    df.to_csv(args.out or sys.stdout, index=False)
    if args.out:
        print(f"{len(df)} rows -> {args.out}", file=sys.stderr)
    return 0


def analyze(args) -> int:
    from .analyses.schedule import analyze_command
    return analyze_command(args)


def analyze_all(args) -> int:
    from .analyses.schedule import analyze_all_command
    return analyze_all_command(args)
