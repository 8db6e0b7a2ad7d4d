"""First render of every dashboard page in Chromium, on a large store (target: <= 2 s per page).

    python bench/bench_dashboard.py                          # 1,000 runs x 200 epochs, temp dir
    python bench/bench_dashboard.py --store /tmp/big         # generate there once, reuse after
    python bench/bench_dashboard.py --store runs/store --reuse   # any existing store (quick grid)

The large store clones the runs of dashboard.sample_store (tiny runs the library trained and
analysed) into --runs runs of --epochs epochs; the first --analysed clones keep their analyses.
A fresh `streamlit run` server is started; each page is then opened from its own URL in
headless Chromium and timed from navigation to fully rendered (every Vega and Plotly chart
drawn): the first visit of each page (cold query caches) and a second visit. Figures: best and
median over --repeat visits of fresh browser pages, and the CPU seconds the server and Chromium
used meanwhile (on a machine shared with other jobs the wall time inflates, the CPU time much
less). The server-side AppTest time of each page is printed next to it (--no-apptest to skip).
"""
from __future__ import annotations

import argparse
import logging
import os
import statistics
import tempfile
import time
from pathlib import Path


def ensure_store(root: Path, runs: int, epochs: int, analysed: int, work: Path) -> None:
    from dashboard import sample_store
    from landscape_lib.store import Store
    if Store(root).exists() and any((root / "tables" / "runs").glob("*/*.parquet")):
        print(f"store: reusing {root}")
        return
    t0 = time.perf_counter()
    sample = sample_store.cached(work / "sample")
    sample_store.scale(sample, root, runs, epochs, analysed=analysed)
    print(f"store: wrote {runs} runs x {epochs} epochs to {root} in "
          f"{time.perf_counter() - t0:.0f} s")


def browser_times(root: Path, repeat: int, query: str) -> tuple[dict, dict]:
    """page -> wall seconds to fully rendered (one per visit), and page -> CPU seconds the
    server and Chromium used meanwhile."""
    from playwright.sync_api import sync_playwright

    from dashboard.server import (CHROMIUM, CHROMIUM_ARGS, page_urls, render_time, serve,
                                  tree_cpu_seconds)
    out: dict[str, list[float]] = {}
    cpu: dict[str, list[float]] = {}
    with serve(root) as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        warm = browser.new_page(viewport={"width": 1400, "height": 1000})
        render_time(warm, url + "/runs", 900_000)  # the server's imports and table snapshots
        warm.close()
        for _ in range(repeat):
            for name, link in page_urls(url, query).items():
                page = browser.new_page(viewport={"width": 1400, "height": 1000})
                page.set_default_timeout(120_000)
                before = tree_cpu_seconds()
                out.setdefault(name, []).append(render_time(page, link))
                cpu.setdefault(name, []).append(tree_cpu_seconds() - before)
                page.close()
        browser.close()
    return out, cpu


def apptest_times(root: Path) -> dict[str, float]:
    """Server-side time of each page's first run (AppTest), for comparison."""
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    from dashboard.pages import PAGES
    os.environ["LANDSCAPE_STORE"] = str(root)
    st.cache_data.clear()
    app = str(Path(__file__).resolve().parents[1] / "dashboard" / "app.py")
    at = AppTest.from_file(app, default_timeout=300).run()
    out = {}
    for name, *_ in PAGES:
        t0 = time.perf_counter()
        at.switch_page(f"app_pages/{name}.py").run()
        out[name] = time.perf_counter() - t0
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", help="store folder to generate once and reuse")
    parser.add_argument("--reuse", action="store_true", help="--store exists: just measure it")
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--epochs", type=int, default=200)
    parser.add_argument("--analysed", type=int, default=50, help="clones with analyses")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--query", default="", help="query string of every page's URL")
    parser.add_argument("--no-apptest", action="store_true")
    parser.add_argument("--target", type=float, default=2.0, help="seconds per page")
    args = parser.parse_args(argv)
    logging.getLogger("streamlit").setLevel(logging.ERROR)

    tmp = tempfile.TemporaryDirectory()
    root = Path(args.store or Path(tmp.name) / "store")
    if not args.reuse:
        ensure_store(root, args.runs, args.epochs, args.analysed, Path(tmp.name))
    times, cpu = browser_times(root, args.repeat, args.query)
    server = {} if args.no_apptest else apptest_times(root)
    print(f"{'page':<14}{'Chromium first render (best / median)':>40}{'CPU s':>8}"
          f"{'AppTest':>10}")
    slow = []
    for page, values in times.items():
        best, median = min(values), statistics.median(values)
        flag = "" if best <= args.target else "  (over target)"
        extra = f"{server[page]:>9.2f}s" if page in server else ""
        print(f"{page:<14}{best:>26.2f} s / {median:5.2f} s{min(cpu[page]):>8.2f}{extra}{flag}")
        if best > args.target:
            slow.append(page)
    print(f"cpus: {os.cpu_count()}, load average {os.getloadavg()[0]:.1f}; target "
          f"{args.target:.1f} s per page: "
          + ("all pages met it" if not slow else f"missed on {', '.join(slow)}"))
    tmp.cleanup()
    return 1 if slow else 0


if __name__ == "__main__":
    raise SystemExit(main())
