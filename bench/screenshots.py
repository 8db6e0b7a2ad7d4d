"""Screenshots of the real dashboard (Playwright + Debian's Chromium) for the README.

    python bench/screenshots.py --store ROOT --out dashboard/screenshots
Without --store, dashboard.sample_store builds its tiny real runs in a temporary folder.
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from urllib.parse import urlencode

from dashboard.server import CHROMIUM, CHROMIUM_ARGS, serve, wait_rendered
from landscape_lib.store import Store

REPO = Path(__file__).resolve().parents[1]


def _surfaces(store: Store, n: int) -> list[str]:
    """n finished runs with a surface, of different models where possible."""
    df = store.query("SELECT DISTINCT r.run_id, r.model_label FROM runs r JOIN surface_points t "
                     "USING (run_id) WHERE r.status = 'finished' ORDER BY r.run_id")
    picked = df.drop_duplicates("model_label")["run_id"].tolist()
    return (picked + [r for r in df["run_id"] if r not in picked])[:n]


def _seeds(store: Store, n_configs: int) -> list[str]:
    """Every seed of the first n_configs configurations that have several finished seeds."""
    df = store.query("""SELECT run_id, dataset || model_label || init || optimizer AS config
                        FROM runs WHERE status = 'finished' ORDER BY run_id""")
    configs = [c for c, g in df.groupby("config", sort=False) if len(g) > 1][:n_configs]
    return df[df["config"].isin(configs)]["run_id"].tolist()


def shoot(store_root: str, out: Path, width: int = 1500) -> list[Path]:
    from playwright.sync_api import sync_playwright
    store = Store(store_root)
    out.mkdir(parents=True, exist_ok=True)
    study = store.query("SELECT study FROM runs GROUP BY study ORDER BY count(*) DESC "
                        "LIMIT 1")["study"][0]
    shots = {
        "surfaces": ("surfaces", {"surf_runs": _surfaces(store, 3)}),
        "training": ("training", {"compare": _seeds(store, 3)}),
        "curvature": ("curvature", {"study": study}),
        "paired": ("optimizers", {}),
        "report": ("report", {"report_study": study}),
    }
    written = []
    with serve(store_root) as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": width, "height": 1100})
        for name, (path, params) in shots.items():
            page.goto(f"{url}/{path}?{urlencode(params, doseq=True)}")
            wait_rendered(page)
            if name == "paired":  # scroll to the paired table
                page.get_by_text("Paired comparison").first.scroll_into_view_if_needed()
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
    args = parser.parse_args(argv)
    if args.store:
        paths = shoot(args.store, Path(args.out))
    else:
        from dashboard.sample_store import cached
        with tempfile.TemporaryDirectory() as tmp:
            paths = shoot(str(cached(Path(tmp))), Path(args.out))
    for path in paths:
        print(path)


if __name__ == "__main__":
    main()
