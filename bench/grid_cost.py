"""What a grid costs on one GPU, from per-run times measured on that GPU (issue 10 item 11).

Every run of a grid belongs to a cost class: (dataset, model label, step kind, batch size, train
subset), the step kind being "plain" (one forward/backward per step), "sam" (two: SAM's
perturbed pass) or "sophia" (a double backward for the Hutchinson Hessian diagonal). Runs of
one class cost the same per epoch whatever their initializer, seed, learning rate or (plain)
optimizer, and their analyses the same whatever the optimizer. A run of the grid costs

    startup_s + epochs * epoch_s + analyses_s

with epoch_s the steady-state seconds per epoch (median over epochs >= 2: epoch 1 carries
torch.compile's warm-up), startup_s the rest of the training time (epoch 0's measurement, the
compile warm-up; with `measure`, data loading and model building too) and analyses_s the wall
time of the grid's [analyses] on one run. Runs are sequential (`train-all -j auto` = one worker
per GPU, so one worker on one H200).

Times come from any mix of three sources (later ones fill only what earlier ones lack):
1. `--from-store STORE`: a store trained on the GPU, e.g. study A run for the issue's
   acceptance 7: each run's `epochs.epoch_time` (epochs 0..n) and the seconds of its done
   analyses of the kinds the grid schedules (`analyses.seconds`), median per class. The CIFAR-10
   JPEG copy (`dataset = "folder"`) counts as cifar10 (`--alias`).
2. `--timings FILE`: what `measure` wrote (timings.json), or a hand-written TOML of
   `[[class]]` tables (dataset, model, kind, batch_size, epoch_s, startup_s, analyses_s).
3. Derived, each said in the table: `--same-as "MODEL=MEASURED MODEL"` (an explicit
   assumption, e.g. a Post-LN ViT costs what the Pre-LN one does), and a SAM or Sophia class
   whose plain class is known gets the plain times scaled by the median sam/plain (or
   sophia/plain) ratio of the models where both were measured.

    python bench/grid_cost.py plan runs/grid.toml                 # classes, runs, what is known
    python bench/grid_cost.py measure runs/grid.toml --store /tmp/timing --epochs 2 \
        --from-store STUDY_A_STORE --device cuda                  # on the GPU; re-run until done
    python bench/grid_cost.py estimate runs/grid.toml --from-store STUDY_A_STORE \
        --timings /tmp/timing/timings.json                        # -> README's table

`measure` trains one representative per class not known yet (from --from-store, --timings,
--same-as, and with --derive-kinds the kind ratios; --class limits it to some classes) for
--epochs epochs (2 is enough: epoch 2 is steady state) with the grid's settings, then runs the grid's analyses once per (dataset, model)
(they do not depend on the optimizer), and writes <store>/timings.json after each class: a call
cut by a time limit loses at most the class it was timing, and a repeated call skips the
classes done. Data: by default every data set is replaced by synthetic images of the same
shape, count and classes (`PROXY_DATA`: the cost of an epoch depends only on those), so
nothing has to be carried to the GPU machine; --real-data uses the grid's own data sets.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path

from landscape_lib.analyses.context import run_config
from landscape_lib.config import RunConfig
from landscape_lib.grid import load_grid
from landscape_lib.models import model_label
from landscape_lib.optim import get_spec
from landscape_lib.store import Store, queries
from landscape_lib.store.schema import ANALYSIS_DONE, DONE_STATUSES

CLASS_FIELDS = ("dataset", "model", "kind", "batch_size", "train_subset")
KINDS = ("plain", "sam", "sophia")
ALIASES = {"folder": "cifar10"}  # a store's data set -> the grid's (the CIFAR-10 JPEG copy)
# Synthetic stand-ins with each data set's shape, size and classes (augmentation as the real
# set's default), for timing on a machine without the data.
_CIFAR = {"n_train": 50000, "n_test": 10000, "channels": 3, "size": 32}
_MNIST = {"n_train": 60000, "n_test": 10000, "channels": 1, "size": 28, "num_classes": 10}
PROXY_DATA = {"cifar10": ({**_CIFAR, "num_classes": 10}, True),
              "cifar100": ({**_CIFAR, "num_classes": 100}, True),
              "folder": ({**_CIFAR, "num_classes": 10}, True),  # the CIFAR-10 JPEG copy
              "fashion-mnist": (_MNIST, False), "mnist": (_MNIST, False)}


@dataclass(frozen=True)
class CostClass:
    dataset: str
    model: str
    kind: str
    batch_size: int
    train_subset: int = 0

    def analyses_key(self) -> tuple:
        return (self.dataset, self.model, self.train_subset)

    def with_(self, **changes) -> "CostClass":
        return CostClass(**{**{k: getattr(self, k) for k in CLASS_FIELDS}, **changes})

    def label(self) -> str:
        sub = f", first {self.train_subset}" if self.train_subset else ""
        return f"{self.dataset} / {self.model} / {self.kind} / batch {self.batch_size}{sub}"


@dataclass
class Timing:
    epoch_s: float
    startup_s: float
    analyses_s: float | None  # None: the analyses of this class were not timed
    source: str = "measured"


def step_kind(optimizer: str) -> str:
    spec = get_spec(optimizer)
    return "sam" if spec.needs_closure else "sophia" if spec.create_graph else "plain"


def cost_class(cfg: RunConfig, aliases: dict | None = None) -> CostClass:
    dataset = (ALIASES if aliases is None else aliases).get(cfg.dataset, cfg.dataset)
    return CostClass(dataset, model_label(cfg.arch, cfg.arch_options), step_kind(cfg.optimizer),
                     int(cfg.batch_size), int(cfg.train_subset))


def representatives(configs: list[RunConfig]) -> dict[CostClass, RunConfig]:
    """The first run of each class, in grid order."""
    out: dict[CostClass, RunConfig] = {}
    for cfg in configs:
        out.setdefault(cost_class(cfg), cfg)
    return out


# ---------------------------------------------------------------------- timings
def timing_from_epochs(epoch_times: dict[int, float], wall_s: float | None = None,
                       analyses_s: float | None = None, source: str = "measured") -> Timing:
    """A class's timing from one run's epoch times (epoch 0 = the initial measurement) and,
    when known, its whole training wall time (else the sum of its epoch times)."""
    trained = sorted(e for e in epoch_times if e >= 1)
    if not trained:
        raise ValueError("a timing needs at least one trained epoch")
    steady = [epoch_times[e] for e in trained if e >= 2] or [epoch_times[trained[-1]]]
    epoch_s = statistics.median(steady)
    wall = sum(epoch_times.values()) if wall_s is None else wall_s
    return Timing(epoch_s, max(wall - epoch_s * len(trained), 0.0), analyses_s, source)


def _median_timing(timings: list[Timing], source: str) -> Timing:
    analysed = [t.analyses_s for t in timings if t.analyses_s is not None]
    return Timing(statistics.median(t.epoch_s for t in timings),
                  statistics.median(t.startup_s for t in timings),
                  statistics.median(analysed) if analysed else None, source)


def timings_from_store(root, kinds: set[str] | None = None,
                       aliases: dict | None = None) -> dict[CostClass, Timing]:
    """Per class, the median over the store's done runs (see the module doc)."""
    store = Store(root)
    runs = queries.table_rows(store, "runs")
    epochs = queries.table_rows(store, "epochs")
    analyses = queries.table_rows(store, "analyses")
    analyses = analyses[(analyses.status == ANALYSIS_DONE)
                        & (analyses.kind.isin(kinds) if kinds else True)]
    per_class: dict[CostClass, list[Timing]] = {}
    for _, row in runs[runs.status.isin(DONE_STATUSES)].iterrows():
        rows = epochs[epochs.run_id == row.run_id]
        if (rows.epoch >= 1).sum() == 0:
            continue
        done = analyses[analyses.run_id == row.run_id]
        timing = timing_from_epochs(dict(zip(rows.epoch.astype(int), rows.epoch_time)),
                                    analyses_s=float(done.seconds.sum()) if len(done) else None,
                                    source=f"store {Path(root).name}")
        per_class.setdefault(cost_class(run_config(row), aliases), []).append(timing)
    return {key: _median_timing(ts, f"store {Path(root).name} (n={len(ts)})")
            for key, ts in per_class.items()}


def load_timings(path) -> dict[CostClass, Timing]:
    """`measure`'s timings.json or a hand-written TOML of [[class]] tables."""
    path = Path(path)
    if path.suffix == ".json":
        entries = json.loads(path.read_text())
        analysed = {CostClass(**{k: e[k] for k in CLASS_FIELDS}).analyses_key():
                    e["analyses_wall_s"] for e in entries if e.get("analyses_wall_s") is not None}
        out = {}
        for e in entries:
            key = CostClass(**{k: e[k] for k in CLASS_FIELDS})
            times = {int(k): v for k, v in e["epoch_times"].items()}
            out[key] = timing_from_epochs(times, e["train_wall_s"],
                                          analysed.get(key.analyses_key()), "measured")
        return out
    out = {}
    for e in tomllib.loads(path.read_text()).get("class", []):
        key = CostClass(e["dataset"], e["model"], e["kind"], int(e["batch_size"]),
                        int(e.get("train_subset", 0)))
        analyses = e.get("analyses_s")
        out[key] = Timing(float(e["epoch_s"]), float(e.get("startup_s", 0.0)),
                          None if analyses is None else float(analyses), f"table {path.name}")
    return out


def derive(classes, known: dict[CostClass, Timing],
           same_as: dict[str, str] | None = None) -> dict[CostClass, Timing]:
    """`known` plus derived timings for the unknown `classes` (module doc, source 3)."""
    out = dict(known)
    for key in classes:
        twin = key.with_(model=(same_as or {}).get(key.model, key.model))
        if key not in out and twin != key and twin in known:
            t = known[twin]
            out[key] = Timing(t.epoch_s, t.startup_s, t.analyses_s, f"as {twin.model} (assumed)")
    for kind in ("sam", "sophia"):
        pairs = [(t, out[k.with_(kind="plain")]) for k, t in known.items()
                 if k.kind == kind and k.with_(kind="plain") in out]
        if not pairs:
            continue
        ratio = statistics.median(t.epoch_s / p.epoch_s for t, p in pairs)
        start = statistics.median((t.startup_s + 1e-9) / (p.startup_s + 1e-9) for t, p in pairs)
        for key in classes:
            plain = out.get(key.with_(kind="plain"))
            if key.kind == kind and key not in out and plain is not None:
                out[key] = Timing(plain.epoch_s * ratio, plain.startup_s * start,
                                  plain.analyses_s,
                                  f"plain x {ratio:.2f} ({kind}/plain of {len(pairs)} models)")
    return out


# ---------------------------------------------------------------------- estimate
def estimate(configs: list[RunConfig], timings: dict[CostClass, Timing]):
    """Per study: runs, training and analysis seconds, derived runs; unmeasured classes."""
    studies: dict[str, dict] = {}
    missing: dict[CostClass, int] = {}
    for cfg in configs:
        key = cost_class(cfg)
        row = studies.setdefault(cfg.study, {"runs": 0, "train_s": 0.0, "analyses_s": 0.0,
                                             "unmeasured": 0, "analyses_unmeasured": 0,
                                             "derived": 0})
        row["runs"] += 1
        t = timings.get(key)
        if t is None:
            missing[key] = missing.get(key, 0) + 1
            row["unmeasured"] += 1
            continue
        row["train_s"] += t.startup_s + cfg.epochs * t.epoch_s
        row["derived"] += t.source.startswith(("plain x", "as "))
        if not cfg.analyses:
            continue
        if t.analyses_s is None:
            row["analyses_unmeasured"] += 1
        else:
            row["analyses_s"] += t.analyses_s
    return studies, missing


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:.2f}"


def markdown(studies: dict, missing: dict, gpu: str = "one H200") -> str:
    lines = [f"| study | runs | training (h) | analyses (h) | total on {gpu} (h) |",
             "|---|---:|---:|---:|---:|"]
    total = {"runs": 0, "train_s": 0.0, "analyses_s": 0.0}
    notes = (("unmeasured", "unmeasured"), ("analyses_unmeasured", "without analysis timing"),
             ("derived", "derived"))
    for name, r in studies.items():
        flag = "".join(f" ({r[k]} runs {what})" for k, what in notes if r[k])
        lines.append(f"| {name}{flag} | {r['runs']} | {_hours(r['train_s'])} | "
                     f"{_hours(r['analyses_s'])} | {_hours(r['train_s'] + r['analyses_s'])} |")
        for k in total:
            total[k] += r[k]
    both = total["train_s"] + total["analyses_s"]
    lines.append(f"| **whole grid** | {total['runs']} | {_hours(total['train_s'])} | "
                 f"{_hours(total['analyses_s'])} | **{_hours(both)}** |")
    if missing:
        lines += ["", "Not measured (time one run of each with `grid_cost.py measure`):"]
        lines += [f"- {k.label()}: {n} runs" for k, n in missing.items()]
    return "\n".join(lines)


def class_table(configs, timings) -> str:
    counts: dict[CostClass, int] = {}
    for cfg in configs:
        counts[cost_class(cfg)] = counts.get(cost_class(cfg), 0) + 1
    lines = ["| class | runs | s/epoch | startup (s) | analyses (s) | source |",
             "|---|---:|---:|---:|---:|---|"]
    for key, n in counts.items():
        t = timings.get(key)
        cells = ("-", "-", "-", "not measured") if t is None else (
            f"{t.epoch_s:.2f}", f"{t.startup_s:.0f}",
            "-" if t.analyses_s is None else f"{t.analyses_s:.0f}", t.source)
        lines.append(f"| {key.label()} | {n} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


# ---------------------------------------------------------------------- measure
def timing_config(cfg: RunConfig, epochs: int, proxy: bool) -> RunConfig:
    """The representative as it is timed: `epochs` epochs, seed 0, proxy data if asked."""
    overrides: dict = {"epochs": epochs, "seed": 0}
    if proxy and cfg.dataset in PROXY_DATA:
        options, augment = PROXY_DATA[cfg.dataset]
        overrides.update(dataset="synthetic", dataset_options=options,
                         augment=augment if cfg.augment is None else cfg.augment)
    return cfg.with_overrides(overrides)


def measure(configs: list[RunConfig], store_root, epochs: int = 2, *, device=None,
            data_root=None, proxy: bool = True, covered=lambda timed: {}, only=(),
            progress: bool = True) -> Path:
    """Train one representative per class (analyses once per dataset and model), appending
    each to <store>/timings.json as soon as it is timed. ``covered(timed)`` -> the timings
    (known elsewhere or derived) that need no run, given those timed so far; ``only``:
    substrings of the class labels to time (all when empty)."""
    from landscape_lib.pipeline import run_scheduled
    from landscape_lib.train.engine import train_run
    store = Store(store_root).ensure()
    out_path = Path(store_root) / "timings.json"
    results = json.loads(out_path.read_text()) if out_path.exists() else []
    for key, cfg in representatives(configs).items():
        timed = load_timings(out_path) if results else {}
        if key in timed or key in covered(timed) or (
                only and not any(part in key.label() for part in only)):
            continue
        analysed = {k.analyses_key() for k, t in {**timed, **covered(timed)}.items()
                    if t.analyses_s is not None}
        cfg = timing_config(cfg, epochs, proxy)
        store.remove_run(cfg.run_id())  # a run cut short by a time limit is timed afresh
        started = time.perf_counter()
        status = train_run(cfg, store, data_root=data_root, device=device, progress=progress)
        train_wall = time.perf_counter() - started
        analyses_wall = None
        if cfg.analyses and status == "finished" and key.analyses_key() not in analysed:
            started = time.perf_counter()
            run_scheduled(cfg, store, device=device, data_root=data_root)
            analyses_wall = time.perf_counter() - started
        rows = store.read("epochs", cfg.run_id())
        results.append({**{k: getattr(key, k) for k in CLASS_FIELDS}, "status": status,
                        "run_id": cfg.run_id(), "epochs": epochs,
                        "epoch_times": {int(e): float(t) for e, t in
                                        zip(rows.epoch, rows.epoch_time)},
                        "train_wall_s": train_wall, "analyses_wall_s": analyses_wall})
        out_path.write_text(json.dumps(results, indent=1))
        print(f"{key.label()}: {status}, {train_wall:.1f} s training, "
              f"{'-' if analyses_wall is None else f'{analyses_wall:.1f}'} s analyses",
              flush=True)
    return out_path


# ---------------------------------------------------------------------- CLI
def known_timings(args, configs) -> dict[CostClass, Timing]:
    """Times from --from-store and --timings (the first given wins for a class)."""
    aliases = {**ALIASES, **dict(a.split("=", 1) for a in args.alias)}
    kinds = {kind for cfg in configs for kind in cfg.analyses}
    known: dict[CostClass, Timing] = {}
    for path in args.timings:
        known = {**load_timings(path), **known}
    for root in args.from_store:
        known = {**timings_from_store(root, kinds, aliases), **known}
    return known


def _derived(args, configs, known, kinds=True) -> dict[CostClass, Timing]:
    classes = {cost_class(c) for c in configs}
    same_as = dict(s.split("=", 1) for s in args.same_as)
    out = derive(classes, known, same_as)
    return out if kinds else {k: t for k, t in out.items() if not t.source.startswith("plain x")}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("plan", "measure", "estimate"):
        p = sub.add_parser(name)
        p.add_argument("grid")
        p.add_argument("--study", action="append", help="only these studies (repeatable)")
        p.add_argument("--from-store", action="append", default=[], metavar="STORE")
        p.add_argument("--timings", action="append", default=[], metavar="FILE")
        p.add_argument("--same-as", action="append", default=[], metavar="MODEL=MODEL")
        p.add_argument("--alias", action="append", default=[], metavar="DATASET=DATASET")
    m = sub.choices["measure"]
    m.add_argument("--store", required=True, help="where the timing runs go (timings.json)")
    m.add_argument("--epochs", type=int, default=2)
    m.add_argument("--class", dest="only", action="append", default=[], metavar="TEXT",
                   help="time only classes whose label contains TEXT (repeatable)")
    m.add_argument("--derive-kinds", action="store_true", help="skip SAM/Sophia classes "
                   "whose times follow from a plain class and a measured ratio")
    m.add_argument("--device")
    m.add_argument("--data-root")
    m.add_argument("--real-data", action="store_true", help="the grid's data sets, no proxies")
    sub.choices["estimate"].add_argument("--gpu", default="one H200")
    args = parser.parse_args(argv)
    configs = load_grid(args.grid, studies=args.study)
    known = known_timings(args, configs)
    if args.command == "measure":
        covered = lambda timed: _derived(args, configs, {**timed, **known},  # noqa: E731
                                         args.derive_kinds)
        print(measure(configs, args.store, args.epochs, device=args.device,
                      data_root=args.data_root, proxy=not args.real_data, covered=covered,
                      only=args.only))
        return 0
    timings = _derived(args, configs, known)
    if args.command == "plan":
        print(f"{len(configs)} runs in {len(representatives(configs))} cost classes:\n")
        print(class_table(configs, timings))
    else:
        print(markdown(*estimate(configs, timings), args.gpu))
    return 0


if __name__ == "__main__":
    sys.exit(main())
