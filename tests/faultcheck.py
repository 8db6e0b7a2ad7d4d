"""Running the CLI under a fault plan, and checking a store against an uninterrupted run.

`Launcher.run(argv, fault=...)` runs `landscape_lib.cli.main(argv)` in a child forked from a
fork server that imported the library once (no torch/sklearn import per run, and the child is a
real process: `kill:` plans SIGKILL it). `subprocess_run` does the same through
`python -m landscape_lib` (the plan reaches spawned grid workers through sitecustomize).
`problems(store, reference)` lists every missing, duplicated or phantom row, value mismatch,
unfinished run or analysis and stale temporary file.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import multiprocessing as mp
import os
import random
import re
import shutil
import subprocess
import sys
import traceback
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from gridtext import grid_text, tiny_mlp
from landscape_lib.locations import REPO_ROOT as REPO

HERE = Path(__file__).resolve().parent

# Two runs of a tiny MLP on the bundled digits, 3 epochs, each followed by two scheduled analyses.
GRID = grid_text(
    tiny_mlp("digits", epochs=3, batch_size=256, optimizer="sgd-momentum", lr=0.05),
    {"name": "faults", "init": ["default", "xavier"]},
    analyses={"hessian": {"samples": 64, "top_k": 1, "tol": 1e-2, "trace_samples": 2,
                          "per_layer": False, "density_vectors": 1, "density_steps": 8},
              "surface": {"samples": 64, "grid": 3}})

# Row identities: a key seen twice is a duplicate, a key absent from the reference is a phantom.
KEYS = {"runs": ("run_id",), "epochs": ("run_id", "epoch"),
        "layers": ("run_id", "epoch", "layer"), "checkpoints": ("run_id", "epoch", "kind"),
        "analyses": ("analysis_id",), "hessian_eigs": ("analysis_id", "which", "k"),
        "hessian_summary": ("analysis_id", "layer"), "surface_points": ("analysis_id", "i", "j")}
# Values that must equal the uninterrupted run's (rtol 1e-6).
VALUES = {"epochs": ("train_loss", "val_loss", "train_acc", "val_acc", "grad_norm",
                     "weight_norm", "param_change"),
          "hessian_summary": ("top_eig", "lam_min", "trace"), "surface_points": ("loss", "acc")}


@dataclass
class Outcome:
    rc: int           # exit status; -9 when killed
    stdout: str
    stderr: str

    @property
    def error_lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.startswith("error:")]

    @property
    def traceback(self) -> bool:
        return "Traceback (most recent call last)" in self.stderr


def raised(out: Outcome) -> str:
    """The exception line of a traceback in stderr (type: message), shortened."""
    lines = [ln for ln in out.stderr.splitlines() if re.match(r"^[\w.]*(Error|Exception)\b", ln)]
    return (lines[-1] if lines else "?")[:200]


# ---------------------------------------------------------------------- launching
def _child(argv, env, out_dir, cwd=None, memory_gb=None):
    os.environ.update(env)
    if cwd:
        os.chdir(cwd)
    if memory_gb:  # a runaway input (a 10^9-run grid) fails here instead of taking the machine
        import resource
        with open("/proc/self/status") as status:
            vm = next(int(line.split()[1]) for line in status if line.startswith("VmSize:"))
        limit = vm * 1024 + int(memory_gb * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    for fd, name in ((1, "stdout"), (2, "stderr")):
        handle = os.open(os.path.join(out_dir, name), os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        os.dup2(handle, fd)
    sys.stdout = open(1, "w", buffering=1, closefd=False)
    sys.stderr = open(2, "w", buffering=1, closefd=False)
    import torch
    torch.set_num_threads(1)
    import faults
    faults.install_from_env()
    from landscape_lib import cli
    try:
        rc = cli.main(argv)
    except SystemExit as exc:
        rc = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:  # noqa: BLE001 - what the interpreter would print
        traceback.print_exc()
        rc = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(rc)


class Launcher:
    PRELOAD = ["faults", "torch._dynamo", "landscape_lib.cli", "landscape_lib.commands",
               "landscape_lib.train.engine", "landscape_lib.pipeline",
               "landscape_lib.analyses.provenance", "sklearn.datasets", "duckdb", "pandas"]

    def __init__(self):
        self.ctx = mp.get_context("forkserver")
        self.ctx.set_forkserver_preload(self.PRELOAD)

    def run(self, argv, out_dir: Path, *, fault: str | None = None, log: Path | None = None,
            timeout: float = 300, cwd=None, env=None, memory_gb=None) -> Outcome:
        out_dir.mkdir(parents=True, exist_ok=True)
        env = {"LANDSCAPE_DEVICE": "cpu", "LANDSCAPE_FAULT": fault or "",
               "LANDSCAPE_FAULT_LOG": str(log or ""), **(env or {})}
        proc = self.ctx.Process(target=_child, args=([str(a) for a in argv], env, str(out_dir),
                                                     cwd and str(cwd), memory_gb))
        proc.start()
        proc.join(timeout)
        if proc.is_alive():
            proc.kill()
            proc.join()
            raise TimeoutError(f"{argv} under {fault} ran past {timeout} s")
        return Outcome(proc.exitcode, (out_dir / "stdout").read_text(errors="replace"),
                       (out_dir / "stderr").read_text(errors="replace"))


_LAUNCHER: Launcher | None = None


def launcher() -> Launcher:
    """The fork server of this (pytest worker) process, started on first use."""
    global _LAUNCHER
    if _LAUNCHER is None:
        _LAUNCHER = Launcher()
    return _LAUNCHER


def subprocess_run(argv, *, fault: str | None = None, log: Path | None = None, cwd=None,
                   timeout: float = 300, env=None, **popen) -> Outcome:
    """`python -m landscape_lib ARGV` with the fault plan in every process it starts."""
    env = {**os.environ, **(env or {}), "LANDSCAPE_DEVICE": "cpu",
           "PYTHONPATH": os.pathsep.join([str(HERE / "sitecustomize"), str(HERE), str(REPO)]),
           "LANDSCAPE_FAULT": fault or "", "LANDSCAPE_FAULT_LOG": str(log or "")}
    res = subprocess.run([sys.executable, "-m", "landscape_lib", *map(str, argv)],
                         cwd=cwd or HERE, env=env, capture_output=True, text=True,
                         timeout=timeout, **popen)
    return Outcome(res.returncode, res.stdout, res.stderr)


# ---------------------------------------------------------------------- the injection points
def recorded_points(launcher: Launcher, workdir: Path) -> tuple[list[dict], Path]:
    """Run the grid once with every write logged (this is also the uninterrupted reference).

    Cached per (grid, library and harness source, Python and package versions) under
    `workdir`, so pytest-xdist workers record once."""
    src = sorted((REPO / "landscape_lib").rglob("*.py")) + [
        HERE / "faults.py", HERE / "faultcheck.py", HERE / "sitecustomize" / "sitecustomize.py"]
    import duckdb
    import numpy
    import torch
    versions = f"{sys.version} {torch.__version__} {duckdb.__version__} {numpy.__version__}"
    digest = hashlib.sha1(GRID.encode() + versions.encode()
                          + b"".join(p.read_bytes() for p in src)).hexdigest()[:12]
    base = workdir / f"faults-{digest}"
    base.mkdir(parents=True, exist_ok=True)
    with open(base / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        log, done = base / "points.jsonl", base / "done"
        if not done.exists():
            log.unlink(missing_ok=True)  # what a failed recording left
            shutil.rmtree(base / "store", ignore_errors=True)
            grid = base / "grid.toml"
            grid.write_text(GRID)
            out = launcher.run(train_all_argv(grid, base / "store"), base / "out",
                               fault="record", log=log)
            assert out.rc == 0 and not out.traceback, out.stderr[-3000:]
            done.write_text("ok")
    return _read_points(log), base


def _read_points(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines() if line.strip()]


def target(points: list[dict], index: int) -> str:
    """The recorded write `index` as the plan names it: its label and occurrence
    ("part:gauss_fit#2"), which a write made meanwhile by another thread does not shift."""
    point = next(p for p in points if p["index"] == index)
    return f"{point['label']}#{point['occurrence']}"


def train_all_argv(grid: Path, store: Path, *extra) -> list:
    return ["train-all", grid, "--store", store, "--no-progress", "-j", "1", *extra]


def group(label: str) -> str:
    """Kinds of write that behave alike: the store's empty schema parts (Store.ensure) and the
    result tables of analyses (AnalysisContext.write) are one kind each."""
    if label.endswith(":schema"):
        return "part:schema"
    table = label.split(":")[1] if label.startswith("part:") else None
    if table and table not in ("runs", "epochs", "layers", "checkpoints", "analyses"):
        return "part:result"
    return label


def _phases(label: str, mode: str) -> tuple[str, ...]:
    if mode.startswith("enospc"):  # a full disk fails the write itself
        return ("during",)
    if label.startswith(("file:", "delete:", "remove_run")):  # not atomic: no temporary
        return ("before", "after")
    return ("before", "during", "after")


def cases(points: list[dict], modes: tuple[str, ...], *, budget: int | None, seed: int = 0,
          must: tuple[tuple[str, str, str], ...] = ()) -> list[tuple[str, str, int, str]]:
    """(mode, phase, index, label) to inject. `budget=None`: every point, phase and mode.

    Sampled: the `must` (mode, phase, label) windows at their first occurrence (the windows
    known to be bad), then seeded random (mode, kind of write) strata, one point and phase
    each, until `budget` cases."""
    if budget is None:
        return [(m, ph, p["index"], p["label"]) for m in modes for p in points
                for ph in _phases(p["label"], m)]
    rng = random.Random(seed)
    by_group: dict[str, list[dict]] = {}
    for p in points:
        by_group.setdefault(group(p["label"]), []).append(p)
    out = []
    for mode, phase, label in must:
        first = next(p for p in points if p["label"] == label)
        out.append((mode, phase, first["index"], label))
    strata = [(m, g) for m in modes for g in sorted(by_group)]
    rng.shuffle(strata)
    for mode, g in strata[:max(0, budget - len(out))]:
        p = rng.choice(by_group[g])
        out.append((mode, rng.choice(_phases(p["label"], mode)), p["index"], p["label"]))
    return out


# ---------------------------------------------------------------------- checking a store
def tables(root: Path) -> dict:
    """Every table as readers see it (the store's views); an unreadable table is a problem."""
    from landscape_lib.store import TABLES, Store
    store = Store(root)
    return {t: store.query(f'SELECT * FROM "{t}"') for t in TABLES}


def stale_temporaries(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")
                  if p.is_file() and (p.name.endswith(".tmp") or ".tmp" in p.suffixes))


def _counter(df, key) -> Counter:
    return Counter(tuple(row) for row in df[list(key)].astype(str).itertuples(index=False))


def row_problems(got: dict, ref: dict, *, subset: bool = False) -> list[str]:
    """Duplicated, phantom and (unless `subset`) missing rows, table by table."""
    out = []
    for table, ref_df in ref.items():
        df = got[table]
        key = KEYS.get(table, ("analysis_id",))
        have, want = _counter(df, key), _counter(ref_df, key)
        if table not in KEYS:  # no row identity: compare row counts per analysis
            extra, short = have - want, want - have
            out += [f"{table}: {n} rows too many for {k}" for k, n in extra.items()]
            out += [] if subset else [f"{table}: {n} rows missing for {k}" for k, n in short.items()]
            continue
        out += [f"{table}: duplicated {k} x{n}" for k, n in have.items() if n > 1]
        out += [f"{table}: phantom {k}" for k in have if k not in want]
        if not subset:
            out += [f"{table}: missing {k}" for k in want if k not in have]
    return out


def value_problems(got: dict, ref: dict, rtol: float = 1e-6) -> list[str]:
    import numpy as np
    out = []
    for table, cols in VALUES.items():
        key = list(KEYS[table])
        a = got[table].drop_duplicates(key).set_index(key).sort_index()
        b = ref[table].drop_duplicates(key).set_index(key).sort_index()
        common = a.index.intersection(b.index)
        for col in cols:
            x = a.loc[common, col].to_numpy(float)
            y = b.loc[common, col].to_numpy(float)
            bad = ~np.isclose(x, y, rtol=rtol, atol=0, equal_nan=True)
            if bad.any():
                out.append(f"{table}.{col}: {int(bad.sum())} values differ from the "
                           f"uninterrupted run (e.g. {x[bad][0]!r} vs {y[bad][0]!r})")
    return out


def completion_problems(got: dict) -> list[str]:
    runs, analyses = got["runs"], got["analyses"]
    out = [f"run {r.run_id} is {r.status} (epochs_done {r.epochs_done}/{r.epochs})"
           for r in runs.itertuples() if r.status != "finished" or r.epochs_done != r.epochs]
    out += [f"analysis {a.analysis_id} is {a.status}" for a in analyses.itertuples()
            if a.status != "done"]
    return out


def missing_files(root: Path, got: dict) -> list[str]:
    return [f"checkpoint file missing: {p}" for p in got["checkpoints"]["path"]
            if not (root / p).is_file()]


def problems(root: Path, ref: dict) -> list[str]:
    """Everything wrong with a store that should equal the uninterrupted reference."""
    try:
        got = tables(root)
    except Exception as exc:  # noqa: BLE001 - an unreadable store is the worst problem
        return [f"store unreadable: {type(exc).__name__}: {str(exc).splitlines()[0]}"]
    return (row_problems(got, ref) + completion_problems(got) + value_problems(got, ref)
            + missing_files(root, got) + [f"stale temporary {t}" for t in stale_temporaries(root)])


def incomplete_runs(got: dict, ref: dict) -> set[str]:
    """Runs of the reference that are not finished with every scheduled analysis done."""
    done_runs = set(got["runs"].query("status == 'finished'")["run_id"])
    want = ref["analyses"].groupby("run_id")["analysis_id"].apply(set).to_dict()
    have = got["analyses"].query("status == 'done'").groupby("run_id")["analysis_id"] \
        .apply(set).to_dict()
    return {r for r in ref["runs"]["run_id"]
            if r not in done_runs or not want.get(r, set()) <= have.get(r, set())}


def kept_problems(root: Path, ref: dict) -> list[str]:
    """After a failed invocation: readable, no duplicate or phantom row, and every run or
    analysis that says it is complete has all its rows (nothing stored was lost)."""
    try:
        got = tables(root)
    except Exception as exc:  # noqa: BLE001
        return [f"store unreadable: {type(exc).__name__}: {str(exc).splitlines()[0]}"]
    out = row_problems(got, ref, subset=True)
    finished = set(got["runs"].query("status == 'finished'")["run_id"])
    done = set(got["analyses"].query("status == 'done'")["analysis_id"])
    for table in ("epochs", "layers", "checkpoints"):
        ref_t = ref[table][ref[table]["run_id"].isin(finished)]
        got_t = got[table][got[table]["run_id"].isin(finished)]
        out += [f"{table}: finished run lost {k}" for k in _counter(ref_t, KEYS[table])
                if k not in _counter(got_t, KEYS[table])]
    for table, ref_t in ref.items():
        if "analysis_id" in ref_t.columns and table != "analyses":
            want = Counter(ref_t[ref_t["analysis_id"].isin(done)]["analysis_id"])
            have = Counter(got[table][got[table]["analysis_id"].isin(done)]["analysis_id"])
            out += [f"{table}: done analysis {k} lost rows" for k in want if have[k] < want[k]]
    return out + value_problems(got, ref)
