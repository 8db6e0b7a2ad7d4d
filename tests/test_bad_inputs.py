"""Issue 12 item 9 / acceptance 4: every bad input gives one `error:` line and exit status 2
with the store unchanged (byte-identical tree; a store that did not exist still does not), or
is accepted because it is valid and documented. The inputs are the data of bad_inputs.py.

Each case runs `landscape_lib.cli.main(argv)` in a process forked from a fork server that
imported the library once (fast; a traceback is printed as the interpreter would);
LANDSCAPE_BADINPUT_SUBPROCESS=1 runs each through `python -m landscape_lib` instead.
LANDSCAPE_BADINPUT_REPORT=path appends one JSON line per case (`python tests/bad_input_table.py path` groups them).
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from pathlib import Path

import pytest

import faultcheck as fc
from bad_inputs import CASES, GRID, TINY, Case

SUBPROCESS = os.environ.get("LANDSCAPE_BADINPUT_SUBPROCESS") == "1"
REPORT = os.environ.get("LANDSCAPE_BADINPUT_REPORT")
ERROR_LINE = re.compile(r"(^|: )error: ")
EXCEPTION_LINE = re.compile(r"^[\w.]*(Error|Exception|Interrupt)\b")


def tree(root: Path) -> dict[str, str] | None:
    """Every file's sha256 and every folder under root; None when root does not exist."""
    if not root.exists():
        return None
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            if p.is_file() else "<dir>" for p in sorted(root.rglob("*"))}


@pytest.fixture(scope="module")
def seeded(tmp_path_factory):
    """A store holding one finished tiny run (written by the library itself)."""
    root = tmp_path_factory.mktemp("seeded")
    out = fc.launcher().run(["train", *TINY, "--store", root / "store", "--no-progress"],
                            root / "out", cwd=root)
    assert out.rc == 0, out.stderr[-2000:]
    return root / "store", out.stdout.split()[-1]


def _run(case: Case, argv: list[str], tmp: Path):
    env = {"LANDSCAPE_STORE": str(tmp / "default-store")}  # never the repository's runs/store
    if SUBPROCESS or case.isolate:
        if case.isolate and not SUBPROCESS:
            return fc.launcher().run(argv, tmp / "out", cwd=tmp, env=env, memory_gb=0.5,
                                     timeout=180)
        return fc.subprocess_run(argv, cwd=tmp, env=env, timeout=180)
    return fc.launcher().run(argv, tmp / "out", cwd=tmp, env=env, timeout=180)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: Case, seeded, tmp_path):
    store = tmp_path / "store"
    if case.store == "seeded":
        shutil.copytree(seeded[0], store)
    grid = tmp_path / "grid.toml"
    if case.body is not None:
        (grid.write_bytes if isinstance(case.body, bytes) else grid.write_text)(case.body)
    if "meta" in case.extra:
        meta = case.extra["meta"]
        (store / "meta.json").write_bytes(meta if isinstance(meta, bytes) else meta.encode())
    if case.body is None and "{grid}" in case.argv:
        grid.write_text(GRID)
    if "file" in case.extra:
        (tmp_path / case.extra["file"]).write_text("not a folder")
    subs = {"{store}": str(store), "{grid}": str(grid), "{tmp}": str(tmp_path),
            "{run}": seeded[1]}
    argv = [_sub(a, subs) for a in case.argv]
    before = tree(store)
    try:
        out = _run(case, argv, tmp_path)
    except TimeoutError:  # accepted, and still working: a wrongly accepted input
        out = fc.Outcome(0, "", "(killed after 180 s)")
    after = tree(store)
    errors = [line for line in out.stderr.splitlines() if ERROR_LINE.search(line)]
    problems = []
    if out.traceback or out.rc not in (0, 1, 2):
        raised = [ln for ln in out.stderr.splitlines() if EXCEPTION_LINE.match(ln)]
        problems.append(f"traceback: {(raised or [f'exit {out.rc}'])[-1][:160]}")
    if case.expect == "error":
        if out.rc == 0:
            problems.append("accepted")
        elif out.rc != 2 and not out.traceback:
            problems.append(f"exit {out.rc}")
        if not out.traceback and len(errors) != 1:
            problems.append(f"{len(errors)} error lines")
        if before != after:
            problems.append("store created" if before is None else "store changed")
        if errors and case.match and case.match.lower() not in errors[0].lower():
            problems.append(f"message lacks '{case.match}'")
    elif out.rc != 0:
        problems.append(f"valid input refused: exit {out.rc}: {(errors or [''])[0][:160]}")
    if (tmp_path / "pwned").exists():
        problems.append("a shell ran")
    if REPORT:
        with open(REPORT, "a") as f:
            f.write(json.dumps({"id": case.id, "expect": case.expect, "rc": out.rc,
                                "problems": problems, "stderr": out.stderr[-400:]}) + "\n")
    assert not problems, f"{case.id}: {problems}\n{out.stderr[-1500:]}"


def _sub(arg: str, subs: dict) -> str:
    for key, value in subs.items():
        arg = arg.replace(key, value)
    return arg
