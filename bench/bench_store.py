"""The store at scale (issue 14 acceptance 3): `runs` in a new process, compaction, the
StoreReader's load / queries / incremental refresh, and DuckLake against it.

    python bench/gen_store.py /tmp/s10k --runs 10000 --epochs 100 --jobs 2   # ~50 min, 2.9 GB
    python bench/bench_store.py runs /tmp/s10k        # loose parts (before compaction)
    python bench/bench_store.py compact /tmp/s10k     # compaction of every done run (once)
    python bench/bench_store.py runs /tmp/s10k        # compacted: the 1 s target (2 cores)
    python bench/bench_store.py reader /tmp/s10k      # snapshot load, queries, refresh
    python bench/bench_store.py ducklake              # DuckLake: installable? + the note's figures

Each prints one JSON object. Wall times depend on the machine's load (printed beside them);
CPU seconds (user + sys of the process) are the figure to compare on a shared machine.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(REPO)}

# Measured in /work/scratch/store (NOTES.md, section 0) on 10,000 runs x 100 epochs, with
# duckdb 1.5.5 + duckdb-extension-ducklake 1.5.5 (SQLite catalog) in a separate venv: DuckLake
# does not load into the pinned duckdb 2.0.0. Load average 13-30 during these runs.
DUCKLAKE_NOTE = {
    "runs, new process (wall s)": "11.7-13.3 (attach 1.75, first runs query 5.5)",
    "runs query warm (s)": 0.26, "epoch curves of 10 runs warm (s)": 0.33,
    "factor aggregates warm (s)": 2.1, "hessian summary of 50 runs warm (s)": 0.93,
    "surface points of 2 analyses warm (s)": 0.28, "ingest of the store (wall s)": 888,
    "2 writer processes, 88 train-like commits": "104 conflict retries, commit median "
                                                  "5.5-6.6 s, p95 10-13.5 s",
    "merge_adjacent_files 153 -> 17 files (s)": 25.3,
    "DuckDB-file catalog, second writer process": "Could not set lock: Conflicting lock",
    "ours (same store, same load)": {"runs new process CPU s": 1.1, "runs query warm (s)": 0.27,
                                     "epoch curves of 10 runs (s)": 0.44,
                                     "factor aggregates (s)": 2.2,
                                     "hessian summary of 50 runs (s)": 0.63,
                                     "surface points of 2 analyses (s)": 1.45,
                                     "writers": "no lock, no catalog, no retries"},
}


def load() -> float:
    return round(os.getloadavg()[0], 1)


def runs(root: str, repeat: int = 5) -> dict:
    """`python -m landscape_lib runs` in a new process, `repeat` times: wall and CPU s."""
    walls, cpus = [], []
    for _ in range(repeat):
        c0, t0 = os.times(), time.perf_counter()
        out = subprocess.run([sys.executable, "-m", "landscape_lib", "runs", "--store", root],
                             env=ENV, capture_output=True, text=True)
        walls.append(time.perf_counter() - t0)
        c1 = os.times()
        cpus.append(c1.children_user - c0.children_user + c1.children_system - c0.children_system)
        if out.returncode:
            return {"error": out.stderr[-400:]}
    files = sum(len(f) for _, _, f in os.walk(Path(root) / "tables"))
    return {"store": root, "files": files, "lines": out.stdout.count("\n"),
            "wall_s_min": round(min(walls), 3), "wall_s_median": round(sorted(walls)[repeat // 2], 3),
            "cpu_s_min": round(min(cpus), 3), "cpu_s_median": round(sorted(cpus)[repeat // 2], 3),
            "load": load(), "target": "<= 1 s on 2 cores"}


def compact(root: str) -> dict:
    from landscape_lib.store import Store
    c0, t0 = time.process_time(), time.perf_counter()
    reports = Store(root).compact(min_age=0)
    return {"wall_s": round(time.perf_counter() - t0, 1), "cpu_s": round(time.process_time() - c0, 1),
            "load": load(), "tables": {r.table: r.summary() for r in reports}}


def reader(root: str) -> dict:
    from landscape_lib.store import Store, StoreReader, queries
    res, t0 = {"store": root, "load": load()}, time.perf_counter()
    r = StoreReader(root)
    for table in ("runs", "epochs", "hessian_summary", "analyses", "surface_summary"):
        r.table(table)
    res["first load of 5 tables (s)"] = round(time.perf_counter() - t0, 2)
    ids = queries.run_list(r, {"status": ["finished"]})["run_id"].tolist()[:50]
    calls = {"runs": lambda: queries.run_list(r, {}),
             "epoch curves of 10 runs": lambda: queries.table_rows(r, "epochs", ids[:10]),
             "hessian summary of 50 runs": lambda: queries.table_rows(r, "hessian_summary", ids),
             "surface seed spread of 50 runs": lambda: queries.surface_seed_spread(r, ids)}
    for name, call in calls.items():
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            call()
            times.append(time.perf_counter() - t0)
        res[f"{name} warm (s)"] = round(min(times), 3)
    t0 = time.perf_counter()
    r.refresh()
    res["refresh, nothing changed (s)"] = round(time.perf_counter() - t0, 3)
    store = Store(root)
    rid = queries.run_list(r, {"status": ["running"]})["run_id"]
    if len(rid):
        ep = store.read("epochs", rid.iloc[0])
        store.write("epochs", rid.iloc[0], ep)  # the same rows again: a new file version
        t0 = time.perf_counter()
        r.refresh()
        res["refresh after one run wrote an epoch (s)"] = round(time.perf_counter() - t0, 3)
    return res


def ducklake() -> dict:
    import duckdb
    con = duckdb.connect()
    try:
        con.execute("INSTALL ducklake; LOAD ducklake")
        status = "installed: re-measure with the ingest/query steps of the note"
    except duckdb.Error as exc:
        status = f"not available for duckdb {duckdb.__version__}: {str(exc).splitlines()[0][:160]}"
    return {"ducklake here": status, "measured (NOTES, 10,000 x 100)": DUCKLAKE_NOTE}


if __name__ == "__main__":
    what = sys.argv[1]
    fn = {"runs": runs, "compact": compact, "reader": reader, "ducklake": ducklake}[what]
    print(json.dumps(fn(*sys.argv[2:3]), indent=1, default=str))
