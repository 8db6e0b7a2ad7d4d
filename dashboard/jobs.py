"""Work the dashboard starts in the background: Lab analyses and the quick training grid.

Each job is a subprocess of `python -m landscape_lib ...` (so Streamlit's threads never run
training code or call Streamlit from elsewhere); the pages poll it from a fragment. An analysis
reports progress as JSON lines {"fraction": 0..1, "message": str} in a file and, on failure,
exits non-zero with a one-line error on stderr.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "landscape_lib"]  # the project's command line
QUICK_GRID = "runs/quick.toml"


@dataclass
class Job:
    """A running (or finished) subprocess with its progress and stderr files."""
    proc: subprocess.Popen
    command: list[str]
    stderr_path: Path
    progress_path: Path | None = None
    started: float = field(default_factory=time.time)
    cancelled: bool = False

    @property
    def returncode(self) -> int | None:
        return self.proc.poll()

    @property
    def running(self) -> bool:
        return self.proc.poll() is None

    def progress(self) -> tuple[float, str]:
        """The last complete progress line (fraction, message); (0, "starting") before any."""
        if self.progress_path is None or not self.progress_path.exists():
            return 0.0, "starting"
        for line in reversed(self.progress_path.read_text(errors="replace").splitlines()):
            try:
                item = json.loads(line)
                return min(max(float(item.get("fraction", 0.0)), 0.0), 1.0), \
                    str(item.get("message", ""))
            except (ValueError, TypeError, AttributeError):
                continue  # a line still being written
        return 0.0, "starting"

    def error(self) -> str:
        """The last non-empty line the process wrote to stderr."""
        try:
            lines = self.stderr_path.read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return lines[-1] if lines else ""

    def cancel(self, grace: float = 5.0) -> None:
        """Interrupt the job's process group (Ctrl-C: the CLI records the analysis as failed
        and exits), then kill it if it has not ended after `grace` seconds."""
        if not self.running:
            return
        self.cancelled = True
        for sig, wait in ((signal.SIGINT, grace), (signal.SIGKILL, None)):
            try:
                os.killpg(self.proc.pid, sig)  # the group started with the job (own session)
            except ProcessLookupError:
                break
            try:
                self.proc.wait(timeout=wait)
                break
            except subprocess.TimeoutExpired:
                continue


def _start(args: list[str], *, progress: bool, name: str) -> Job:
    workdir = Path(tempfile.mkdtemp(prefix=f"landscape-{name}-"))
    stderr_path = workdir / "stderr.txt"
    progress_path = workdir / "progress.jsonl" if progress else None
    command = [*CLI, *args] + (["--progress-file", str(progress_path)] if progress else [])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)}
    with open(stderr_path, "wb") as err:
        proc = subprocess.Popen(command, cwd=REPO, env=env, stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=err, start_new_session=True)
    return Job(proc, command, stderr_path, progress_path)


def start_analysis(root: str, run_id: str, epoch: int, what: str, params: dict) -> Job:
    """`analyze RUN --epoch E --what WHAT --store ROOT --set k=v ... --progress-file F`."""
    args = ["analyze", run_id, "--epoch", str(epoch), "--what", what, "--store", root,
            "--no-progress"]
    for key, value in params.items():
        value = str(value).lower() if isinstance(value, bool) else value  # TOML booleans
        args += ["--set", f"{key}={value}"]
    return _start(args, progress=True, name="lab")


def start_quick_grid(root: str) -> Job:
    """`train-all runs/quick.toml --store ROOT`: the small demo grid."""
    return _start(["train-all", QUICK_GRID, "--store", root, "--no-progress"], progress=False,
                  name="quick")
