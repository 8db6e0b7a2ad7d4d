"""The Ray backend of train-all and analyze-all: one Ray task per run, on any node of a cluster.

    counts = run_grid_ray(configs, store, RayOptions(address="auto"))   # like run_grid(...)

- Each run is one task with the resources it needs (`resources.plan_resources`: a whole GPU,
  or a share for small models, so that several run on one GPU); its scheduled analyses follow
  it in the same task. Ray places the tasks; nothing here schedules work across machines.
- The store (and a `folder` data set) must sit on a path that every node sees: a probe task on
  each node checks that, and that the node runs the same library code, before any run starts.
- Finished runs are skipped on the driver (`pipeline.pending`, as the local backend does, so a
  grid with nothing left to do never starts Ray) and again inside the task (the engine).
- A task whose worker or node dies is retried by Ray on another node (`max_retries`); the retry
  resumes from the run's last saved epoch (the engine's resume state and per-run lock), so no
  epoch is stored twice or lost. `RunBusy` (the lock still held, e.g. by the dead attempt on a
  shared filesystem that has not released it yet) is retried too.
- The driver shows one progress bar for the grid (the epochs stored so far and the statuses
  seen as its postfix) and a line per run as it ends (status, node, GPU share, seconds,
  analyses, error). Ctrl-C cancels the tasks left; their runs stay resumable.
- Without `address`, Ray's own rule applies: $RAY_ADDRESS if set, else a new one-machine Ray
  instance (every local GPU), started small and stopped at the end. A connection the caller
  made already is used as it is.

Nothing here imports Ray at module level: the local backend never loads it.
"""
from __future__ import annotations

import contextlib
import os
import time
import uuid
from collections import Counter
from dataclasses import dataclass

from tqdm.auto import tqdm

from ..config import RunConfig
from ..errors import ConfigError, LandscapeError
from ..pipeline import pending
from ..store import Store
from ..store.schema import ANALYSIS_DONE, ANALYSIS_FAILED, FAILED, RUNNING
from . import tasks
from .resources import ParamCounter, RunResources, check_amount, plan_resources

LOST = "lost"            # a task whose retries ran out (its worker or node died each time)
STATUS_EVERY_S = 5.0     # how often the bar's postfix re-reads the runs' rows
PRIVATE_OBJECT_STORE = 1 << 30  # tasks return small dicts: Ray's default takes 30% of the RAM


@dataclass(frozen=True)
class RayOptions:
    """Every option of the Ray backend with its default (a mistyped one is a TypeError)."""
    address: str | None = None          # Ray's rule: auto, host:port, $RAY_ADDRESS, else local
    data_root: str | None = None
    device: str | None = None           # auto, cuda or cpu: a task's GPU comes from Ray
    progress: bool = True
    gpus_per_run: float | None = None   # None: the share from the parameter count (GPU_SHARE)
    cpus_per_run: float = 1.0           # also the task's PyTorch threads
    max_retries: int = 3                # worker or node deaths survived per run
    lock_wait_s: float = 150.0          # > NFSv4's 90 s lease, after which a dead lock is freed

    def check(self) -> "RayOptions":
        """Every option, before anything is written or Ray is imported."""
        if self.device not in (None, "auto", "cpu", "cuda"):
            raise ConfigError(f"--device {self.device} cannot be used with the Ray backend: "
                              "each task gets its GPU from Ray (use auto, cuda or cpu)")
        check_amount("--gpus-per-run", self.gpus_per_run, allow_zero=True)
        check_amount("--cpus-per-run", self.cpus_per_run, allow_zero=False)
        if self.max_retries < 0:
            raise ConfigError(f"--max-retries {self.max_retries} must be 0 or more")
        if not self.lock_wait_s >= 0:
            raise ConfigError(f"--lock-wait {self.lock_wait_s} must be 0 or more seconds")
        return self


# ---------------------------------------------------------------------- entry points
def run_grid_ray(configs: list[RunConfig], store: Store, opts: RayOptions) -> dict[str, int]:
    """Train every pending run of `configs` as Ray tasks; a count per final status."""
    opts.check()
    todo = pending(configs, store)
    counts = Counter({tasks.SKIPPED: len(configs) - len(todo)})
    if todo:
        counts.update(_run_tasks(tasks.train_task, todo, store, opts, desc="grid [ray]",
                                 kwargs={"lock_wait_s": opts.lock_wait_s},
                                 retry_exceptions=[tasks.RunBusy]))
    return dict(counts)


def analyze_all_ray(configs: list[RunConfig], store: Store, opts: RayOptions) -> dict[str, int]:
    """The scheduled analyses of every trained run, one task per run; returns
    `{"done": analyses done or found stored, "failed": ..., "not-trained": runs}`."""
    opts.check()
    stored = {c.run_id() for c in configs if store.read("runs", c.run_id()) is not None}
    trained = [c for c in configs if c.analyses and c.run_id() in stored]
    totals = Counter({ANALYSIS_DONE: 0, ANALYSIS_FAILED: 0,
                      tasks.NOT_TRAINED: len({c.run_id() for c in configs} - stored)})
    if trained:
        totals.update(_run_tasks(tasks.analyze_task, trained, store, opts,
                                 desc="analyses [ray]", retry_exceptions=False,
                                 analyses_only=True))
    return dict(totals)


def _run_tasks(fn, configs: list[RunConfig], store: Store, opts: RayOptions, *, desc: str,
               retry_exceptions, kwargs: dict | None = None,
               analyses_only: bool = False) -> Counter:
    """Connect, probe the nodes, plan each run's resources, submit, wait."""
    with connected(opts.address) as ray:
        check_nodes(ray, store, _data_paths(configs))
        plan = plan_resources(configs, cluster_gpus=ray.cluster_resources().get("GPU", 0),
                              device=opts.device, gpus_per_run=opts.gpus_per_run,
                              cpus_per_run=opts.cpus_per_run,
                              counter=ParamCounter(opts.data_root))
        remote = ray.remote(fn)
        refs = {}
        for cfg in configs:
            res = plan[cfg.run_id()]
            ref = remote.options(**res.options(), max_retries=opts.max_retries,
                                 retry_exceptions=retry_exceptions, name=f"run:{cfg.run_id()}"
                                 ).remote(cfg.to_dict(), str(store.root), opts.data_root,
                                          opts.device, threads=res.threads, **(kwargs or {}))
            refs[ref] = cfg
        return drive(ray, refs, store, plan, progress=opts.progress, desc=desc,
                     analyses_only=analyses_only)


# ---------------------------------------------------------------------- the cluster
@contextlib.contextmanager
def connected(address: str | None = None):
    """Ray connected for the duration: an existing connection is kept as it is; otherwise
    `ray.init(address)` and, when this call connected, a shutdown at the end."""
    import ray
    if ray.is_initialized():
        yield ray
        return
    kwargs = {"log_to_driver": False}  # a failed run's error is read from its `runs` row
    if address is None and not os.environ.get("RAY_ADDRESS"):
        kwargs.update(include_dashboard=False, object_store_memory=PRIVATE_OBJECT_STORE)
    try:
        ray.init(address=address, **kwargs)
    except (ConnectionError, ray.exceptions.AuthenticationError) as exc:
        hint = "" if os.environ.get("RAY_AUTH_MODE") else (
            " (a cluster with token authentication needs RAY_AUTH_MODE=token and its token, "
            "RAY_AUTH_TOKEN_PATH or RAY_AUTH_TOKEN, in the driver's environment too)")
        raise ConfigError(f"cannot reach a Ray cluster at {address!r}: {exc}{hint}") from None
    try:
        yield ray
    finally:
        ray.shutdown()


def check_nodes(ray, store: Store, paths: list[str]) -> list[dict]:
    """One probe task per node that can run tasks: the store and data paths must be visible
    there, and its library code identical to the driver's. Raises ConfigError otherwise."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
    nodes = [n for n in ray.nodes() if n["Alive"] and
             (n["Resources"].get("CPU", 0) > 0 or n["Resources"].get("GPU", 0) > 0)]
    if not nodes:
        raise ConfigError("the Ray cluster has no node with CPUs or GPUs to run tasks on")
    token = store.root / f".probe-{uuid.uuid4().hex}"
    token.write_text("landscape probe")
    probe = ray.remote(tasks.probe_task)
    try:
        refs = [probe.options(num_cpus=0, scheduling_strategy=NodeAffinitySchedulingStrategy(
            n["NodeID"], soft=False)).remote(str(token), paths) for n in nodes]
        try:
            found = ray.get(refs, timeout=300)
        except ray.exceptions.RayError as exc:
            raise ConfigError("a Ray node cannot run landscape's tasks (is landscape_lib "
                              f"importable there, from the same environment?): {exc}") from None
    finally:
        token.unlink(missing_ok=True)
    digest = tasks.code_digest()
    for node, info in zip(nodes, found, strict=True):
        where = f"Ray node {node['NodeManagerAddress']} ({info['host']})"
        if not info["token"]:
            raise ConfigError(f"{where} does not see the store at {store.root}: put it on a "
                              "filesystem shared by every node (--store)")
        if info["missing"]:
            raise ConfigError(f"{where} does not see {', '.join(info['missing'])}")
        if info["digest"] != digest:
            raise ConfigError(f"{where} runs other landscape_lib code ({info['digest']}, driver "
                              f"{digest}): use one checkout or environment on every node")
    return found


def _data_paths(configs: list[RunConfig]) -> list[str]:
    return sorted({str(c.dataset_options["path"]) for c in configs
                   if c.dataset_options.get("path")})


# ---------------------------------------------------------------------- the driver's loop
def drive(ray, refs: dict, store: Store, plan: dict[str, RunResources], *, progress: bool,
          desc: str, analyses_only: bool = False) -> Counter:
    """Wait for the tasks with one progress bar; a line per run as it ends."""
    counts: Counter = Counter()
    waiting = list(refs)
    total_epochs = sum(c.epochs for c in refs.values())
    bar = tqdm(total=len(waiting), desc=desc, unit="run", disable=not progress,
               dynamic_ncols=True)
    last_status = 0.0
    try:
        while waiting:
            ready, waiting = ray.wait(waiting, num_returns=len(waiting), timeout=1.0)
            for ref in ready:
                cfg = refs[ref]
                result = _result(ray, ref, cfg, store)
                counts.update(result["analyses"] if analyses_only else [result["status"]])
                bar.update()
                if progress:
                    bar.write(_line(result, plan[cfg.run_id()]))
            if progress and not analyses_only and (
                    not waiting or time.monotonic() - last_status > STATUS_EVERY_S):
                last_status = time.monotonic()
                bar.set_postfix_str(_postfix(store, [refs[r] for r in waiting], total_epochs,
                                             counts))
    except KeyboardInterrupt:
        for ref in waiting:
            ray.cancel(ref, force=True)  # the runs stay resumable: the next train-all resumes
        raise
    finally:
        bar.close()
    return counts


def _result(ray, ref, cfg: RunConfig, store: Store) -> dict:
    """The task's dict, or one describing how it failed for good."""
    try:
        result = ray.get(ref)
    except ray.exceptions.RayTaskError as exc:  # an exception raised by the task itself
        cause = getattr(exc, "cause", None) or exc
        status = tasks.BUSY if isinstance(cause, tasks.RunBusy) else FAILED
        msg = str(cause).splitlines()[0] if str(cause) else type(cause).__name__
        if not isinstance(cause, (LandscapeError, tasks.RunBusy)):
            msg = f"{type(cause).__name__}: {msg}"
        return {"run_id": cfg.run_id(), "status": status, "analyses": {}, "error": msg}
    except ray.exceptions.RayError as exc:  # worker or node died more than max_retries times
        return {"run_id": cfg.run_id(), "status": LOST, "analyses": {},
                "error": f"{type(exc).__name__}: {str(exc).splitlines()[0]}"}
    if result["status"] == FAILED:
        row = store.read("runs", cfg.run_id())
        result["error"] = None if row is None else row["error"].iloc[0]
    return result


def _line(result: dict, res: RunResources) -> str:
    where = f" on {result['host']}" if result.get("host") else ""
    gpu = f", {res.num_gpus:g} GPU" if res.num_gpus else ""
    took = f", {result['seconds']:.0f} s" if result.get("seconds") is not None else ""
    an = result.get("analyses") or {}
    extra = (f", analyses {an.get(ANALYSIS_DONE, 0)} done {an.get(ANALYSIS_FAILED, 0)} failed"
             if an else "")
    err = f": {result['error']}" if result.get("error") else ""
    return f"{result['status']:>9}  {result['run_id']}{where}{gpu}{took}{extra}{err}"


def _postfix(store: Store, running: list[RunConfig], total_epochs: int, counts: Counter) -> str:
    """Epochs stored so far (ended runs count whole), runs training now, statuses seen."""
    done, training = total_epochs - sum(c.epochs for c in running), 0
    for cfg in running:
        row = store.read("runs", cfg.run_id())
        if row is not None:
            done += int(row["epochs_done"].iloc[0] or 0)
            training += row["status"].iloc[0] == RUNNING
    seen = " ".join(f"{k}={v}" for k, v in sorted({**counts, RUNNING: training}.items()) if v)
    return f"epochs {done}/{total_epochs} {seen}".strip()
