"""Screenshots of the real dashboard (Playwright + Debian's Chromium) for the README.

    python bench/screenshots.py --store ROOT --out dashboard/screenshots
Without --store, a synthetic store is generated in a temporary folder (tests/dashboard_store.py).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from urllib.parse import urlencode

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from dashboard.server import CHROMIUM, CHROMIUM_ARGS, serve, wait_for_app  # noqa: E402
from landscape_lib.store import Store  # noqa: E402


def _surfaces(store: Store, n: int) -> list[str]:
    """n finished runs with a surface, of different models where possible."""
    df = store.query("SELECT DISTINCT r.run_id, r.model_label FROM runs r JOIN surface_points t "
                     "USING (run_id) WHERE r.status = 'done' ORDER BY r.run_id")
    picked = df.drop_duplicates("model_label")["run_id"].tolist()
    return (picked + [r for r in df["run_id"] if r not in picked])[:n]


def _seeds(store: Store, n_configs: int) -> list[str]:
    """Every seed of the first n_configs configurations that have several finished seeds."""
    df = store.query("""SELECT run_id, dataset || model_label || init || optimizer AS config
                        FROM runs WHERE status = 'done' ORDER BY run_id""")
    configs = [c for c, g in df.groupby("config", sort=False) if len(g) > 1][:n_configs]
    return df[df["config"].isin(configs)]["run_id"].tolist()


def shoot(store_root: str, out: Path, width: int = 1500) -> list[Path]:
    from playwright.sync_api import sync_playwright
    store = Store(store_root)
    out.mkdir(parents=True, exist_ok=True)
    shots = {
        "surfaces": ("surfaces", {"surf_runs": _surfaces(store, 3)}),
        "training": ("training", {"compare": _seeds(store, 3)}),
    }
    written = []
    with serve(store_root) as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": width, "height": 1100})
        for name, (path, params) in shots.items():
            page.goto(f"{url}/{path}?{urlencode(params, doseq=True)}")
            wait_for_app(page)
            page.wait_for_timeout(2500)  # let WebGL / Vega finish drawing
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
        from dashboard_store import make_store
        with tempfile.TemporaryDirectory() as tmp:
            make_store(Path(tmp) / "store", n_runs=45, n_epochs=30, seed=0, n_analysed=30)
            paths = shoot(str(Path(tmp) / "store"), Path(args.out))
    for path in paths:
        print(path)


if __name__ == "__main__":
    main()
