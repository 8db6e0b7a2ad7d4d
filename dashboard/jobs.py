"""Work the dashboard starts in the background: Lab analyses and the quick training grid.

Each job is a subprocess of `python -m landscape_lib ...` (so Streamlit's threads never run
training code); the pages poll it from a fragment. An analysis reports progress as JSON lines
{"fraction": 0..1, "message": str} in a file and, on failure, exits non-zero with a one-line
error on stderr.

Lab jobs live in one registry per server process (`LabJobs`, shared by every session): a
reloaded tab finds its running job again, and a second request for the same run and analysis
while one runs gets that job instead of a new process. The registry also enforces the Lab's
parameter limits (whatever the page sent) and removes each job's temporary folder once the
job has ended.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "landscape_lib"]  # the project's command line
QUICK_GRID = "runs/quick.toml"
PREFIX = "landscape-job-"

# The Lab's limits, enforced here on every request (widgets and "More parameters" alike):
# analysis -> parameter -> (min, max). Parameters not listed keep the analysis' own checks.
LIMITS = {
    "hessian": {"samples": (8, 4096), "top_k": (1, 20), "bottom_k": (0, 5),
                "trace_samples": (1, 200), "layer_steps": (1, 50),
                "density_vectors": (1, 8), "density_steps": (4, 200)},
    "surface": {"grid": (3, 61), "span": (0.01, 10.0), "samples": (8, 4096),
                "bn_samples": (8, 4096)},
    "interpolation": {"points": (3, 201), "samples": (8, 4096)},
    "attention": {"samples": (8, 4096)},
    "paths": {"steps": (1, 2000)},
}


class LabRequestError(ValueError):
    """A Lab request the server refuses (above a limit, unknown parameter or analysis)."""


def check_request(what: str, params: dict, allowed: dict[str, dict]) -> dict:
    """The request's parameters if the analysis may run from the Lab with them, else
    LabRequestError. `allowed`: analysis name -> its defaults (the library's registry)."""
    if what not in allowed:
        raise LabRequestError(f"'{what}' is not an analysis of a run the Lab can start; "
                              f"choose from {', '.join(allowed)}")
    unknown = sorted(set(params) - set(allowed[what]))
    if unknown:
        raise LabRequestError(f"{what} has no parameter(s) {', '.join(unknown)}")
    for name, (lo, hi) in LIMITS.get(what, {}).items():
        if name not in params:
            continue
        try:
            value = float(params[name])
        except (TypeError, ValueError):
            raise LabRequestError(f"{name} must be a number, not {params[name]!r}") from None
        if not lo <= value <= hi:
            raise LabRequestError(f"{name}={params[name]} is outside the Lab's limits "
                                  f"[{lo:g}, {hi:g}]; run larger analyses from the command line")
    return params


@dataclass
class Job:
    """A running (or finished) subprocess with its progress and stderr files."""
    proc: subprocess.Popen
    command: list[str]
    workdir: Path
    progress_path: Path | None = None
    started: float = field(default_factory=time.time)
    cancelled: bool = False
    stages: list = field(default_factory=list)  # [(message, first seen, fraction)]
    info: dict = field(default_factory=dict)

    @property
    def stderr_path(self) -> Path:
        return self.workdir / "stderr.txt"

    @property
    def returncode(self) -> int | None:
        return self.proc.poll()

    @property
    def running(self) -> bool:
        return self.proc.poll() is None

    def progress(self) -> tuple[float, str]:
        """The last complete progress line (fraction, message); (0, "starting") before any.
        Each new message is recorded with the time it was first seen (the job's stages)."""
        fraction, message = 0.0, "starting"
        path = self.progress_path
        if path is not None and path.exists():
            for line in reversed(path.read_text(errors="replace").splitlines()):
                try:
                    item = json.loads(line)
                    fraction = min(max(float(item.get("fraction", 0.0)), 0.0), 1.0)
                    message = str(item.get("message", ""))
                    break
                except (ValueError, TypeError, AttributeError):
                    continue  # a line still being written
        if not self.stages or self.stages[-1][0] != message:
            self.stages.append((message, time.time(), fraction))
        return fraction, message

    def estimate(self, fraction: float) -> tuple[float, float | None]:
        """(seconds elapsed, seconds left or None) from the progress so far."""
        elapsed = time.time() - self.started
        left = elapsed * (1 - fraction) / fraction if fraction > 0.01 else None
        return elapsed, left

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

    def cleanup(self) -> None:
        """Remove the job's temporary folder once it has ended (its last error is kept)."""
        if not self.running and self.workdir.exists():
            self.info.setdefault("error", self.error())
            shutil.rmtree(self.workdir, ignore_errors=True)


def _start(args: list[str], *, progress: bool, name: str) -> Job:
    workdir = Path(tempfile.mkdtemp(prefix=f"{PREFIX}{name}-"))
    progress_path = workdir / "progress.jsonl" if progress else None
    command = [*CLI, *args] + (["--progress-file", str(progress_path)] if progress else [])
    with open(workdir / "stderr.txt", "wb") as err:
        proc = subprocess.Popen(command, cwd=REPO, stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=err, start_new_session=True)
    return Job(proc, command, workdir, progress_path)


def analysis_args(root: str, run_id: str, epoch: int, what: str, params: dict) -> list[str]:
    """`analyze RUN --epoch E --what WHAT --store ROOT --set k=v ...`."""
    args = ["analyze", run_id, "--epoch", str(epoch), "--what", what, "--store", root,
            "--no-progress"]
    for key, value in params.items():
        value = str(value).lower() if isinstance(value, bool) else value  # TOML booleans
        args += ["--set", f"{key}={value}"]
    return args


class LabJobs:
    """The server's Lab jobs: one at a time per (store, run, analysis)."""

    def __init__(self):
        self._jobs: dict[tuple, Job] = {}
        self._lock = threading.Lock()
        sweep_stale()

    def start(self, root: str, run_id: str, epoch: int, what: str, params: dict,
              allowed: dict[str, dict]) -> tuple[Job, bool]:
        """(job, started): the running job of this run and analysis if there is one (started
        False), else a new one after the request passed `check_request`."""
        check_request(what, params, allowed)
        key = (root, run_id, what)
        with self._lock:
            job = self._jobs.get(key)
            if job is not None and job.running:
                return job, False
            if job is not None:
                job.cleanup()
            job = _start(analysis_args(root, run_id, epoch, what, params), progress=True,
                         name="lab")
            job.info.update(root=root, run_id=run_id, epoch=epoch, what=what, params=params)
            self._jobs[key] = job
            return job, True

    def running(self, root: str, run_id: str | None = None) -> list[Job]:
        """Running jobs on this store (of one run), oldest first; the temporary folders of
        jobs that have ended meanwhile are removed."""
        with self._lock:
            for job in self._jobs.values():
                job.cleanup()
            return [j for (r, rid, _), j in self._jobs.items()
                    if r == root and (run_id is None or rid == run_id) and j.running]

    def get(self, root: str, run_id: str, what: str) -> Job | None:
        with self._lock:
            return self._jobs.get((root, run_id, what))

    def finish(self, job: Job) -> None:
        """Forget an ended job and remove its temporary folder."""
        with self._lock:
            for key, other in list(self._jobs.items()):
                if other is job and not job.running:
                    job.cleanup()
                    del self._jobs[key]


def sweep_stale(max_age: float = 24 * 3600) -> int:
    """Remove job folders left in the temp dir by a server that was killed (older than a day)."""
    removed = 0
    for path in Path(tempfile.gettempdir()).glob(f"{PREFIX}*"):
        try:
            if time.time() - path.stat().st_mtime > max_age:
                shutil.rmtree(path, ignore_errors=True)
                removed += 1
        except OSError:
            continue
    return removed


def start_quick_grid(root: str) -> Job:
    """`train-all runs/quick.toml --store ROOT`: the small demo grid."""
    return _start(["train-all", QUICK_GRID, "--store", root, "--no-progress"], progress=False,
                  name="quick")
