"""First render of every dashboard page in Chromium, on a large store (target: <= 2 s per page).

    python bench/bench_dashboard.py                          # 1,000 runs x 200 epochs, temp dir
    python bench/bench_dashboard.py --store /tmp/big         # generate there once, reuse after
    python bench/bench_dashboard.py --store runs/store --reuse   # any existing store (quick grid)

The large store clones the runs of dashboard.sample_store (tiny runs the library trained and
analysed) into --runs runs of --epochs epochs; the first --analysed clones keep their analyses.
A fresh `streamlit run` server is started; each page is then opened from its own URL in
headless Chromium and timed from navigation to fully rendered (every Vega and Plotly chart
drawn), in a new tab of one browser profile (a returning user: Streamlit's scripts in the HTTP
cache; --cold: a new profile per visit): the first visit of each page (cold query caches) and
--repeat - 1 more. Figures: best and median wall time, and the median CPU seconds of the tab's
renderer (DevTools' TaskDuration) and of the server meanwhile (on a machine shared with other
jobs the wall time inflates, the CPU time much less). The server-side AppTest time of each
page is printed next to it (--no-apptest to skip).
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
    from landscape_lib.store import Store, queries
    if Store(root).exists() and len(queries.run_list(Store(root), {}, arrow=True)):
        print(f"store: reusing {root}")
        return
    t0 = time.perf_counter()
    sample = sample_store.cached(work / "sample")
    sample_store.scale(sample, root, runs, epochs, analysed=analysed)
    print(f"store: wrote {runs} runs x {epochs} epochs to {root} in "
          f"{time.perf_counter() - t0:.0f} s")


def _renderer_seconds(cdp) -> float:
    """Main-thread busy seconds of a tab's renderer so far (DevTools' TaskDuration)."""
    metrics = cdp.send("Performance.getMetrics")["metrics"]
    return next(m["value"] for m in metrics if m["name"] == "TaskDuration")


def browser_times(root: Path, repeat: int, query: str, cold: bool) -> dict[str, dict]:
    """page -> {"wall": [...], "browser": [...], "server": [...]}: seconds from navigating
    to the page's URL in a new tab to fully rendered, the tab renderer's busy CPU seconds and
    the server's CPU seconds meanwhile. One browser profile (its HTTP cache warm after the
    first visit, as for a returning user) unless `cold` (a new profile per visit)."""
    from playwright.sync_api import sync_playwright

    from dashboard.server import (CHROMIUM, CHROMIUM_ARGS, cpu_seconds, page_urls,
                                  render_time, serve, server_pid)
    out: dict[str, dict] = {}
    with serve(root) as url, sync_playwright() as p:
        pid = server_pid(url)
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        profile = browser.new_context(viewport={"width": 1400, "height": 1000})
        warm = profile.new_page()
        render_time(warm, url + "/runs", 900_000)  # the server's imports and table snapshots
        warm.close()
        for _ in range(repeat):
            for name, link in page_urls(url, query).items():
                context = (browser.new_context(viewport={"width": 1400, "height": 1000})
                           if cold else profile)
                page = context.new_page()
                page.set_default_timeout(120_000)
                cdp = context.new_cdp_session(page)
                cdp.send("Performance.enable")
                before = cpu_seconds(pid)
                fig = out.setdefault(name, {"wall": [], "browser": [], "server": []})
                fig["wall"].append(render_time(page, link))
                fig["browser"].append(_renderer_seconds(cdp))
                fig["server"].append(cpu_seconds(pid) - before)
                page.close()
                if cold:
                    context.close()
        browser.close()
    return out


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
    parser.add_argument("--cold", action="store_true",
                        help="a new browser profile (empty HTTP cache) for every visit")
    parser.add_argument("--target", type=float, default=2.0, help="seconds per page")
    args = parser.parse_args(argv)
    logging.getLogger("streamlit").setLevel(logging.ERROR)

    tmp = tempfile.TemporaryDirectory()
    root = Path(args.store or Path(tmp.name) / "store")
    if not args.reuse:
        ensure_store(root, args.runs, args.epochs, args.analysed, Path(tmp.name))
    times = browser_times(root, args.repeat, args.query, args.cold)
    server = {} if args.no_apptest else apptest_times(root)
    print(f"{'page':<14}{'Chromium first render (best / median)':>40}{'browser CPU s':>15}"
          f"{'server CPU s':>14}{'AppTest':>10}")
    slow = []
    for page, fig in times.items():
        best, median = min(fig["wall"]), statistics.median(fig["wall"])
        flag = "" if best <= args.target else "  (over target)"
        extra = f"{server[page]:>9.2f}s" if page in server else ""
        print(f"{page:<14}{best:>26.2f} s / {median:5.2f} s{statistics.median(fig['browser']):>15.2f}"
              f"{statistics.median(fig['server']):>14.2f}{extra}{flag}")
        if best > args.target:
            slow.append(page)
    print(f"cpus: {os.cpu_count()}, load average {os.getloadavg()[0]:.1f}; "
          f"{'a new browser profile per visit' if args.cold else 'one browser profile'}; "
          f"target {args.target:.1f} s per page: "
          + ("all pages met it" if not slow else f"missed on {', '.join(slow)}"))
    tmp.cleanup()
    return 1 if slow else 0


if __name__ == "__main__":
    raise SystemExit(main())
