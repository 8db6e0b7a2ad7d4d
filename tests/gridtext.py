"""Grid files for the tests, written from dicts by one small TOML writer (the library's own
reader reads them back), so that no test repeats a grid file's text."""
from __future__ import annotations

import json


def toml_value(value) -> str:
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + " }"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return json.dumps(value)


def table(head: str, values: dict) -> str:
    return f"{head}\n" + "".join(f"{k} = {toml_value(v)}\n" for k, v in values.items())


def grid_text(defaults: dict, *studies: dict, analyses: dict | None = None) -> str:
    """[defaults], then one [analyses.KIND] per entry of `analyses`, then one [[study]] each."""
    parts = [table("[defaults]", defaults)]
    parts += [table(f"[analyses.{kind}]", params) for kind, params in (analyses or {}).items()]
    parts += [table("[[study]]", study) for study in studies]
    return "\n".join(parts)


def tiny_mlp(dataset: str = "synthetic", hidden: int = 16, **fields) -> dict:
    """[defaults] of a tiny MLP grid (synthetic data unless `dataset` says otherwise)."""
    return {"dataset": dataset, "arch": "mlp", "arch_options": {"hidden": [hidden]}, **fields}
