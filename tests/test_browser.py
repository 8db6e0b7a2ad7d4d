"""The real dashboard in a real browser: `streamlit run` + Playwright driving Debian's Chromium,
on the store the library wrote (dashboard.sample_store).

Opens every page from its own URL and measures navigation to fully rendered (printed, not
asserted: bench/bench_dashboard.py reports the figures); drives the study filter in the URL,
group-by and the paired table, the config diff and the column chooser; downloads CSV, PNG and
SVG files and opens them; reloads the Lab during an analysis and finds the same job (one
process). Skipped when /usr/bin/chromium or playwright is missing.
"""
from __future__ import annotations

import io
import os
import socket
import subprocess
import time
from pathlib import Path
from xml.etree import ElementTree

import pandas as pd
import pytest

from dashboard.pages import PAGES
from dashboard.server import CHROMIUM, CHROMIUM_ARGS, page_urls, serve, wait_rendered
from dashboard_store import copy_of, sample_root
from landscape_lib.store import Store

if not os.path.exists(CHROMIUM):
    pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium)", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is missing")


@pytest.fixture(scope="module")
def browser_page(tmp_path_factory):
    # A private copy: the Lab test writes (and cancels) an analysis.
    root = copy_of(sample_root(tmp_path_factory), tmp_path_factory.mktemp("browser"))
    with serve(root) as url, sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
        page.set_default_timeout(90_000)
        yield page, url, Store(root)
        browser.close()


def download(page, name: str) -> bytes:
    with page.expect_download() as info:
        page.get_by_role("button", name=name, exact=True).first.click()
    return Path(info.value.path()).read_bytes()


def view(page, label: str) -> None:
    """Open a page's view (its segmented control) and wait until it is drawn."""
    page.get_by_test_id("stButtonGroup").get_by_text(label, exact=True).click()
    page.wait_for_timeout(200)
    wait_rendered(page)


def main_errors(page) -> list[str]:
    return [e.inner_text() for e in page.query_selector_all('[data-testid="stException"]')]


def test_every_page_from_its_url_fully_rendered(browser_page):
    page, url, _ = browser_page
    titles = {name: title for name, title, _ in PAGES}
    times = {}
    for name, link in page_urls(url, "study=optimizers").items():
        start = time.perf_counter()
        page.goto(link)
        wait_rendered(page)
        times[name] = round(time.perf_counter() - start, 2)
        assert page.locator("h1").first.inner_text() == titles[name], name
        assert "Page not found" not in page.content(), name
        assert not main_errors(page), (name, main_errors(page))
        assert "study=optimizers" in page.url, f"the study filter was lost on {name}"
    print("first render in Chromium (s):", times)


def test_study_filter_group_by_paired_and_downloads(browser_page):
    page, url, store = browser_page
    page.goto(f"{url}/optimizers?study=optimizers")
    wait_rendered(page)
    assert page.get_by_test_id("stSidebar").get_by_text("optimizers", exact=True).count() >= 1
    assert page.get_by_text("Group by (besides the factor)").count() == 1
    table = pd.read_csv(io.BytesIO(download(page, "CSV")))
    want = store.query("SELECT count(*) AS n FROM runs WHERE study = 'optimizers'")["n"][0]
    assert table["runs"].sum() == want
    view(page, "Paired comparison")  # one view at a time: the open one only is drawn
    assert "optimizer_view=Paired" in page.url
    paired = pd.read_csv(io.BytesIO(download(page, "CSV")))
    assert set(paired["optimizer"]) == {"sam-adam", "sgd"} and paired["estimate"].notna().all()
    view(page, "Curves over epochs")
    assert page.get_by_test_id("stVegaLiteChart").count() == 2  # two metrics by default
    png = download(page, "PNG")
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    from PIL import Image
    assert Image.open(io.BytesIO(png)).size[0] > 100
    svg = download(page, "SVG")
    assert ElementTree.fromstring(svg).tag.endswith("svg")


def test_column_chooser_and_config_diff_from_the_url(browser_page):
    page, url, store = browser_page
    ids = store.query("SELECT run_id FROM runs WHERE study = 'optimizers' ORDER BY run_id "
                      "LIMIT 2")["run_id"].tolist()
    page.goto(f"{url}/runs?cols=final_val_acc&cols=optimizer&compare={ids[0]}&compare={ids[1]}")
    wait_rendered(page)
    runs_csv = pd.read_csv(io.BytesIO(download(page, "CSV")))
    assert list(runs_csv.columns) == ["run_id", "final_val_acc", "optimizer"]
    assert page.get_by_text("Config diff of the compared runs").count() == 1
    assert "cols=final_val_acc" in page.url


def _analyze_processes(run_id: str, root) -> list[str]:
    """The `analyze` processes of this run on this store."""
    out = subprocess.run(["ps", "-ww", "-eo", "pid,args"], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if "landscape_lib analyze" in line
            and run_id in line and str(root) in line]


def test_lab_reattaches_after_reload_without_a_second_process(browser_page):
    page, url, store = browser_page
    run_id = store.query("SELECT run_id FROM runs WHERE study = 'initializers' ORDER BY run_id "
                         "LIMIT 1")["run_id"][0]
    page.goto(f"{url}/lab?lab_run={run_id}")
    wait_rendered(page)
    extra = page.get_by_label("More parameters", exact=False)
    # Slow enough to be caught running (tens of seconds on a CPU), within the Lab's limits.
    extra.fill("samples=4096 top_k=20 tol=1e-9 trace_samples=200 layer_steps=50 "
               "density_vectors=8 density_steps=200 per_layer=true")
    extra.press("Enter")
    wait_rendered(page)
    page.get_by_role("button", name="Run", exact=True).click()
    page.get_by_text("Stages:").wait_for(timeout=60_000)
    page.reload()
    page.get_by_text("Stages:").wait_for(timeout=60_000)  # reattached after the reload
    assert len(_analyze_processes(run_id, store.root)) == 1
    page.get_by_role("button", name="Run", exact=True).click()  # the same analysis again
    page.get_by_text("already running").wait_for()
    assert len(_analyze_processes(run_id, store.root)) == 1
    page.get_by_role("button", name="Cancel").click()
    deadline = time.time() + 30
    while _analyze_processes(run_id, store.root) and time.time() < deadline:
        time.sleep(0.5)
    assert not _analyze_processes(run_id, store.root)


def test_not_reachable_on_other_interfaces(browser_page):
    _, url, _ = browser_page
    port = int(url.rsplit(":", 1)[1])
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("10.255.255.255", 1))  # no packet is sent: picks the outgoing address
            address = s.getsockname()[0]
        except OSError:
            pytest.skip("no non-loopback interface")
    if address.startswith("127."):
        pytest.skip("no non-loopback interface")
    with pytest.raises(OSError):
        socket.create_connection((address, port), timeout=2).close()
