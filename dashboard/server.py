"""Start the dashboard as a real Streamlit server in a subprocess (browser tests, screenshots).

    with serve(store_root) as url:
        ...  # open url in a browser
"""
from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


_PIDS: dict[str, int] = {}  # URL of a running server -> its process id


def server_pid(url: str) -> int:
    """The process id of the server `serve` started at `url` (to read its CPU time)."""
    return _PIDS[url]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(store_root, timeout: float) -> tuple[subprocess.Popen, str, object]:
    """One `streamlit run` on a port found free; (process, URL, log) once it answers, or
    RuntimeError. `PortTaken` when it exited because another process bound the port first."""
    port = free_port()
    log = tempfile.NamedTemporaryFile(prefix="streamlit-", suffix=".log", delete=False)
    # PYTHONPATH: the repository, for a checkout that is not pip-installed; the address comes
    # from .streamlit/config.toml (127.0.0.1), as for a user.
    env = {**os.environ, "LANDSCAPE_STORE": str(store_root), "PYTHONPATH": os.pathsep.join(
        p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", str(REPO / "dashboard" / "app.py"),
         "--server.headless", "true", "--server.port", str(port),
         "--browser.gatherUsageStats", "false"],
        cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                if r.status == 200 and proc.poll() is None:
                    return proc, url, log
        except OSError:
            pass
        if proc.poll() is not None or time.time() > deadline:
            _stop(proc, log)
            text = Path(log.name).read_text()
            if proc.returncode is not None and ("is not available" in text
                                                or "already in use" in text):
                raise PortTaken(port)
            raise RuntimeError(f"the Streamlit server did not start; see {log.name}:\n"
                               + text[-2000:])
        time.sleep(0.3)


class PortTaken(RuntimeError):
    """Another process bound the port between `free_port` and Streamlit's start."""


def _stop(proc: subprocess.Popen, log) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


@contextlib.contextmanager
def serve(store_root: str | os.PathLike, timeout: float = 60.0):
    """Run `streamlit run dashboard/app.py` on a free port with LANDSCAPE_STORE=store_root;
    yield its URL once /_stcore/health answers; stop it afterwards. A port taken by another
    process before Streamlit bound it is replaced by another (3 tries)."""
    for attempt in range(3):
        try:
            proc, url, log = _start(store_root, timeout)
            break
        except PortTaken:
            if attempt == 2:
                raise
    _PIDS[url] = proc.pid
    try:
        yield url
    finally:
        _PIDS.pop(url, None)
        _stop(proc, log)


def wait_for_app(page, timeout: float = 60_000) -> None:
    """Wait until a Streamlit page has finished running its script and shows its title."""
    page.wait_for_function(
        """() => {
            const app = document.querySelector('[data-testid="stApp"]');
            return app && app.getAttribute('data-test-script-state') === 'notRunning'
                && document.querySelector('[data-testid="stMainBlockContainer"] h1');
        }""", timeout=timeout)


# Every chart drawn: Vega charts hold their SVG or canvas, Plotly figures their main SVG; no
# skeleton or spinner left.
_RENDERED = """() => {
    const app = document.querySelector('[data-testid="stApp"]');
    if (!app || app.getAttribute('data-test-script-state') !== 'notRunning') return false;
    const main = document.querySelector('[data-testid="stMainBlockContainer"]');
    if (!main || !main.querySelector('h1')) return false;
    if (document.querySelector('[data-testid="stSkeleton"], [data-testid="stSpinner"]'))
        return false;
    for (const c of main.querySelectorAll('[data-testid="stVegaLiteChart"]'))
        if (!c.querySelector('svg, canvas')) return false;
    for (const c of main.querySelectorAll('[data-testid="stPlotlyChart"]'))
        if (!c.querySelector('.main-svg')) return false;
    return true;
}"""


def wait_rendered(page, timeout: float = 120_000) -> None:
    """Wait until the page has run its script and drawn every chart."""
    page.wait_for_function(_RENDERED, timeout=timeout, polling=50)


def render_time(page, url: str, timeout: float = 120_000) -> float:
    """Seconds from navigating to `url` to the page fully rendered (every chart drawn)."""
    start = time.perf_counter()
    page.goto(url, timeout=timeout)
    wait_rendered(page, timeout)
    return time.perf_counter() - start


def page_urls(url: str, query: str = "") -> dict[str, str]:
    """Each page's own URL (with an optional query string)."""
    from dashboard.pages import PAGES
    return {name: f"{url}/{name}{'?' + query if query else ''}" for name, *_ in PAGES}


def cpu_seconds(pid: int) -> float:
    """CPU seconds (user + system) the process `pid` has used so far."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
