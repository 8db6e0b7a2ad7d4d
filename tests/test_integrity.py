"""Issue 12 items 6-8: a planted pickle in `resume.pt` runs nothing (every torch.load is
weights_only); a garbled checkpoint fails its analysis (checksum); the run row is re-read under
the run's lock."""
from __future__ import annotations

import ast
import hashlib
from pathlib import Path

import pytest
import torch

import faultcheck as fc
from bad_inputs import TINY


class Payload:
    """Unpickling this creates a file: what a planted resume.pt could do instead."""

    def __init__(self, target: Path):
        self.target = str(target)

    def __reduce__(self):
        return (open, (self.target, "w"))


@pytest.fixture
def trained(tmp_path):
    """A finished 3-epoch run (the library's own writers) -> (store, run_id)."""
    store = tmp_path / "store"
    out = fc.launcher().run(["train", *TINY, "epochs=3", "--store", store, "--no-progress"],
                            tmp_path / "train", cwd=tmp_path)
    assert out.rc == 0, out.stderr[-2000:]
    return store, out.stdout.split()[-1]


def _reopen(store: Path, run_id: str, epochs_done: int) -> None:
    """Make the finished run look interrupted after `epochs_done` (through Store.write)."""
    from landscape_lib.store import Store
    s = Store(store)
    row = s.read("runs", run_id)
    row["status"], row["epochs_done"] = "running", epochs_done
    s.write("runs", run_id, row)
    for table in ("epochs", "layers", "checkpoints"):
        df = s.read(table, run_id)
        s.write(table, run_id, df[df["epoch"] <= epochs_done])


def test_planted_resume_state_runs_nothing(trained, tmp_path):
    store, run_id = trained
    _reopen(store, run_id, 1)
    pwned = tmp_path / "pwned"
    torch.save({"epoch": 1, "model": Payload(pwned)}, store / "artifacts" / run_id / "resume.pt")
    out = fc.launcher().run(["train", *TINY, "epochs=3", "--store", store, "--no-progress"],
                            tmp_path / "resume", cwd=tmp_path)
    assert not pwned.exists(), "unpickling resume.pt ran code"
    assert not out.traceback and out.rc == 0, out.stderr[-2000:]
    warnings = [line for line in out.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "resume state" in warnings[0], out.stderr[-2000:]
    # Refused, the run was trained again from epoch 0: each epoch stored once.
    epochs = fc.tables(store)["epochs"]
    assert sorted(epochs["epoch"]) == [0, 1, 2, 3]


def test_resume_state_loads_weights_only(trained, tmp_path):
    """What the engine saves as a resume state is loadable with weights_only=True."""
    store, run_id = trained
    state = torch.load(store / "artifacts" / run_id / "resume.pt", weights_only=True)
    assert state["epoch"] == 3 and {"model", "optimizer", "generator", "cpu_rng"} <= set(state)


def _loads_without_weights_only(source: str) -> list[int]:
    """Lines calling torch.load without weights_only=True."""
    bad = []
    for node in ast.walk(ast.parse(source)):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and node.func.attr == "load" and isinstance(node.func.value, ast.Name)
                and node.func.value.id == "torch"):
            flag = next((k.value for k in node.keywords if k.arg == "weights_only"), None)
            if not (isinstance(flag, ast.Constant) and flag.value is True):
                bad.append(node.lineno)
    return bad


def test_every_torch_load_is_weights_only():
    root = fc.REPO
    files = [p for folder in ("landscape_lib", "dashboard", "bench")
             for p in (root / folder).rglob("*.py")]
    unsafe = "weights_only=" + "False"  # built, so that no scanner reads this file as a load
    sample = f"torch.load(p)\ntorch.load(p, {unsafe})\ntorch.load(p, weights_only=True)"
    assert _loads_without_weights_only(sample) == [1, 2]  # the scan finds them
    assert root / "landscape_lib" / "train" / "engine.py" in files
    found = {str(p.relative_to(root)): lines for p in files
             if (lines := _loads_without_weights_only(p.read_text()))}
    assert found == {}


def test_garbled_checkpoint_fails_its_analysis(trained, tmp_path):
    store, run_id = trained
    path = sorted((store / "artifacts" / run_id / "checkpoints").glob("*.pt"))[-1]
    state = torch.load(path, weights_only=True)
    torch.save({k: v * 1.01 if v.is_floating_point() else v for k, v in state.items()}, path)
    out = fc.launcher().run(["analyze", run_id, "--what", "hessian", "--set", "samples=32",
                             "trace_samples=2", "density_steps=8", "per_layer=false",
                             "--store", store, "--no-progress"], tmp_path / "analyze",
                            cwd=tmp_path)
    assert out.rc != 0 and not out.traceback, out.stderr[-2000:]
    assert len(out.error_lines) == 1 and "checksum" in out.error_lines[0], out.stderr[-2000:]
    analyses = fc.tables(store)["analyses"]
    assert not (analyses["status"] == "done").any(), analyses[["kind", "status"]]


def _tree(root: Path) -> dict:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_run_row_is_read_under_the_lock(trained, tmp_path, monkeypatch):
    """Process B reads the run row, process A finishes the run, then B gets the lock: B must
    see the finished run (skip), not retrain it over the stored one."""
    from landscape_lib.config import RunConfig, parse_overrides
    from landscape_lib.store import Store
    from landscape_lib.train import engine
    store, run_id = trained
    s = Store(store)
    finished = s.read("runs", run_id)
    _reopen(store, run_id, 3)  # B's read sees `running` (A has not written `finished` yet)
    real_lock, snap = Store.lock_run, {}

    def lock_after_a_finishes(st, rid):
        s.write("runs", run_id, finished)  # A finishes and releases the lock
        snap["tables"] = _tree(store / "tables")
        return real_lock(st, rid)

    monkeypatch.setattr(Store, "lock_run", lock_after_a_finishes)
    cfg = RunConfig.from_dict({}).with_overrides(parse_overrides([*TINY, "epochs=3"]))
    assert cfg.run_id() == run_id
    status = engine.train_run(cfg, s, progress=False)
    assert status == "skipped"
    assert _tree(store / "tables") == snap["tables"], "the finished run was written again"
