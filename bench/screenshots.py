"""Screenshots of the real dashboard (Playwright + Debian's Chromium) for the README.

    python bench/screenshots.py --store ROOT --out dashboard/screenshots
Without --store, dashboard.sample_store builds its tiny real runs in a temporary folder.
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from urllib.parse import urlencode

from dashboard.data import tables
from dashboard.server import CHROMIUM, CHROMIUM_ARGS, serve, wait_rendered

REPO = Path(__file__).resolve().parents[1]


def shoot(store_root: str, out: Path, width: int = 1500, only=()) -> list[Path]:
    from playwright.sync_api import sync_playwright
    out.mkdir(parents=True, exist_ok=True)
    study = tables.largest_study(store_root)
    shots = {
        "surfaces": ("surfaces", {"surf_runs": tables.runs_with_surfaces(store_root, 3),
                                  "surf_scale": "per panel"}),
        "training": ("training", {"compare": tables.seed_groups(store_root, 3)}),
        "curvature": ("curvature", {"study": study}),
        "paired": ("optimizers", {"optimizer_view": "Paired comparison"}),
        "report": ("report", {"report_study": study}),
    }
    written = []
    with serve(store_root) as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": width, "height": 1100})
        for name, (path, params) in shots.items():
            if only and name not in only:
                continue
            page.goto(f"{url}/{path}?{urlencode(params, doseq=True)}")
            wait_rendered(page)
            page.wait_for_timeout(1000)  # let WebGL finish drawing
            target = out / f"{name}.png"
            page.screenshot(path=str(target), full_page=False)
            written.append(target)
        browser.close()
    return written


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", help="store root (default: a generated synthetic store)")
    parser.add_argument("--out", default=str(REPO / "dashboard" / "screenshots"))
    parser.add_argument("--only", nargs="*", default=(),
                        help="surfaces training curvature paired report (default: all)")
    args = parser.parse_args(argv)
    if args.store:
        paths = shoot(args.store, Path(args.out), only=args.only)
    else:
        from dashboard.sample_store import cached
        with tempfile.TemporaryDirectory() as tmp:
            paths = shoot(str(cached(Path(tmp))), Path(args.out), only=args.only)
    for path in paths:
        print(path)


if __name__ == "__main__":
    main()
