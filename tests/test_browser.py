"""The real dashboard in a real browser: `streamlit run` + Playwright driving Debian's Chromium.

Applies a sidebar filter, opens every page and downloads a CSV from each page that has one;
each CSV is checked against the store. Skipped when /usr/bin/chromium or playwright is missing.
"""
from __future__ import annotations

import io
import os
from pathlib import Path

import pandas as pd
import pytest

from dashboard.server import CHROMIUM, CHROMIUM_ARGS, serve, wait_for_app
from dashboard_store import make_store
from landscape_lib.store import Store

if not os.path.exists(CHROMIUM):
    pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium)", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is missing")

PAGES = ["Training", "Initializers", "Optimizers", "Architectures", "Curvature", "Surfaces",
         "Attention", "Lab"]


@pytest.fixture(scope="module")
def browser_page(tmp_path_factory):
    root = tmp_path_factory.mktemp("browser") / "store"
    make_store(root, n_runs=12, n_epochs=5, seed=3, n_analysed=12)
    with serve(root) as url, sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
        page.set_default_timeout(60_000)
        yield page, url, Store(root)
        browser.close()


def download_first_csv(page) -> pd.DataFrame:
    with page.expect_download() as info:
        page.get_by_role("button", name="Download CSV").first.click()
    return pd.read_csv(io.StringIO(Path(info.value.path()).read_text()))


def main_errors(page) -> list[str]:
    return [e.inner_text() for e in page.query_selector_all('[data-testid="stException"]')]


def test_filter_pages_and_downloads(browser_page):
    page, url, store = browser_page
    page.goto(url)
    wait_for_app(page)
    assert page.locator("h1").first.inner_text() == "Runs"

    # Sidebar filter: the optimizer of a transformer run (so every page has data), typed
    # into the multiselect like a user would.
    opt = store.query("SELECT r.optimizer FROM runs r JOIN attention_jsd a USING (run_id) "
                      "ORDER BY r.run_id LIMIT 1")["optimizer"].iloc[0]
    box = page.get_by_test_id("stSidebar").get_by_role("combobox", name="Optimizer")
    box.click()
    box.fill(opt)
    page.get_by_role("option", name=opt, exact=True).click()
    page.keyboard.press("Escape")
    page.wait_for_url(f"**opt={opt}**")
    wait_for_app(page)

    kept = set(store.query("SELECT run_id FROM runs WHERE optimizer = ?", [opt])["run_id"])
    runs_csv = download_first_csv(page)
    assert set(runs_csv["run_id"]) == kept and set(runs_csv["optimizer"]) == {opt}

    for title in PAGES:
        page.get_by_test_id("stSidebarNav").get_by_role("link", name=title).click()
        page.wait_for_function(
            "t => document.querySelector('[data-testid=\"stMainBlockContainer\"] h1')"
            "?.innerText === t", arg=title)
        wait_for_app(page)
        assert not main_errors(page), (title, main_errors(page))
        assert f"opt={opt}" in page.url, f"the filter was lost on {title}"
        if page.get_by_role("button", name="Download CSV").count() == 0:
            assert title == "Lab"  # nothing stored yet for the default run and epoch
            continue
        df = download_first_csv(page)
        assert len(df) > 0, title
        if "run_id" in df.columns:  # every page shows only the filtered runs
            assert set(df["run_id"]) <= kept, title
        if title == "Surfaces":  # the grid points drawn are the store's rows
            cols = ["analysis_id", "i", "j", "loss"]
            want = store.query(f"SELECT {', '.join(cols)} FROM surface_points WHERE "
                               "list_contains(?, analysis_id) ORDER BY ALL",
                               [sorted(set(df["analysis_id"]))])
            got = df[cols].sort_values(cols).reset_index(drop=True)
            pd.testing.assert_frame_equal(got, want, check_dtype=False)
