"""Time the first render of every dashboard page on a large store (target: <= 2 s per page).

    python bench/bench_dashboard.py                      # 1,000 runs x 200 epochs in a temp dir
    python bench/bench_dashboard.py --store /tmp/big     # generate there once, reuse afterwards

The store is synthetic (tests/dashboard_store.py): every table filled, 3 layers per epoch, the
first --analysed runs with every analysis. Python's imports are warmed up first on a tiny store.
Then, as for the first visitor of a freshly started server, every Streamlit cache is cleared and
the pages are opened one after the other with AppTest: each figure is that page's first render
(the table snapshots that earlier pages or the background preload already loaded are reused,
as in a real server process). The second render of each page (caches warm) is timed too.
Figures: best and median of --repeat such sessions.
"""
from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

APP = str(REPO / "dashboard" / "app.py")
PAGES = ["runs", "training", "initializers", "optimizers", "architectures", "curvature",
         "surfaces", "attention", "lab"]


def ensure_store(root: Path, runs: int, epochs: int, analysed: int) -> None:
    from dashboard_store import make_store
    from landscape_lib.store import Store
    if Store(root).exists() and any((root / "tables" / "runs").glob("r*")):
        print(f"store: reusing {root}")
        return
    t0 = time.perf_counter()
    make_store(root, n_runs=runs, n_epochs=epochs, seed=0, n_analysed=analysed)
    print(f"store: wrote {runs} runs x {epochs} epochs to {root} in "
          f"{time.perf_counter() - t0:.0f} s")


def session(timeout: float = 120) -> dict[str, tuple[float, float, list]]:
    """page -> (first render s, warm re-render s, problems) for one fresh visitor session."""
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    st.cache_data.clear()
    st.cache_resource.clear()
    at = AppTest.from_file(APP, default_timeout=timeout)
    out = {}
    for page in PAGES:
        if page != "runs":
            at.switch_page(f"app_pages/{page}.py")
        t0 = time.perf_counter()
        at.run()
        first = time.perf_counter() - t0
        t0 = time.perf_counter()
        at.run()
        warm = time.perf_counter() - t0
        out[page] = (first, warm, [e.value for e in at.exception] + [e.value for e in at.error])
    return out


def warm_imports() -> None:
    """Render every page once on a tiny store, so imports do not count against page times."""
    from dashboard_store import make_store
    with tempfile.TemporaryDirectory() as tmp:
        make_store(Path(tmp) / "s", n_runs=3, n_epochs=3, seed=0, n_analysed=3)
        os.environ["LANDSCAPE_STORE"] = str(Path(tmp) / "s")
        session()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", help="store folder to generate once and reuse")
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--epochs", type=int, default=200)
    parser.add_argument("--analysed", type=int, default=50, help="runs with every analysis")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--target", type=float, default=2.0, help="seconds per page")
    args = parser.parse_args(argv)
    logging.getLogger("streamlit").setLevel(logging.ERROR)

    tmp = None if args.store else tempfile.TemporaryDirectory()
    root = Path(args.store or Path(tmp.name) / "store")
    ensure_store(root, args.runs, args.epochs, args.analysed)

    warm_imports()
    os.environ["LANDSCAPE_STORE"] = str(root)
    sessions = [session() for _ in range(args.repeat)]
    print(f"{'page':<14}{'first render (best / median)':>30}{'warm rerun':>13}")
    slow = []
    for page in PAGES:
        first = [s[page][0] for s in sessions]
        warm = min(s[page][1] for s in sessions)
        problems = sessions[-1][page][2]
        best, median = min(first), statistics.median(first)
        flag = "" if best <= args.target else "  (over target)"
        print(f"{page:<14}{best:>17.2f} s / {median:5.2f} s{warm:>11.2f} s{flag}"
              + (f"  PROBLEMS: {problems}" if problems else ""))
        if best > args.target or problems:
            slow.append(page)
    print(f"cpus: {os.cpu_count()}, load average {os.getloadavg()[0]:.1f}; target "
          f"{args.target:.1f} s per page: "
          + ("all pages met it" if not slow else f"missed on {', '.join(slow)}"))
    if tmp:
        tmp.cleanup()
    return 1 if slow else 0


if __name__ == "__main__":
    sys.exit(main())
