"""Architectures: one registry, one way to build a model from a name and its options.

Each entrypoint is a small function registered with ``@MODELS.register("name")`` (timm style)
whose keyword-only signature *is* the list of options:

    @MODELS.register("mlp")
    def mlp(*, in_channels, image_size, num_classes, hidden=(256, 256), activation="relu"): ...

``create_model`` checks the options against that signature, so adding an option to an
entrypoint makes it available to configs, the CLI and the dashboard at once.
An entrypoint may give ``label=fn`` as registry meta; ``fn(options) -> list[str]`` receives all
options (defaults filled in) and returns the label parts after the name.
"""
from __future__ import annotations

import inspect
from typing import Any, Iterable

from torch import nn

from ..errors import ConfigError
from ..registry import Registry

MODELS = Registry("architecture")

# Arguments every entrypoint takes from the data set; they are not user options.
DATA_ARGS = ("in_channels", "image_size", "num_classes")


def model_options(name: str) -> dict[str, Any]:
    """Option names of architecture `name` mapped to their defaults (signature order)."""
    params = inspect.signature(MODELS.get(name)).parameters.values()
    return {p.name: p.default for p in params
            if p.name not in DATA_ARGS and p.default is not inspect.Parameter.empty}


def check_options(name: str, options: dict) -> dict[str, Any]:
    """Raise ConfigError for an option `name` does not accept; else return all options.

    The returned dict has the defaults filled in for options not given.
    """
    defaults = model_options(name)
    for key in options:
        if key not in defaults:
            accepted = ", ".join(defaults) or "none"
            raise ConfigError(f"architecture '{name}' has no option '{key}'; accepted: {accepted}")
    return {**defaults, **options}


def check_choice(option: str, value: Any, allowed: Iterable[str]) -> str:
    """Return `value` if it is one of `allowed`, else raise a one-line ConfigError."""
    allowed = list(allowed)
    if value not in allowed:
        raise ConfigError(f"{option}={value!r} is not allowed; choose from: {', '.join(allowed)}")
    return value


def create_model(name: str, *, in_channels: int, image_size: int, num_classes: int,
                 **options) -> nn.Module:
    """Build architecture `name` for (in_channels, image_size, image_size) inputs."""
    check_options(name, options)
    return MODELS.get(name)(in_channels=in_channels, image_size=image_size,
                            num_classes=num_classes, **options)


def _canonical(value: Any) -> Any:
    """Lists and tuples compare equal (configs give lists, signatures hold tuples)."""
    if isinstance(value, (list, tuple)):
        return tuple(_canonical(v) for v in value)
    return value


def _format(key: str, value: Any) -> str:
    if isinstance(value, bool):
        return key if value else f"no-{key}"
    if isinstance(value, str):
        return value
    if isinstance(value, (list, tuple)):
        return f"{key}={'x'.join(str(v) for v in value)}"
    return f"{key}={value}"


def model_label(name: str, options: dict | None = None) -> str:
    """Short human label, e.g. ``"vit p4 local postLN"``: the name plus non-default options."""
    opts = check_options(name, dict(options or {}))
    label_fn = MODELS.entry(name).meta.get("label")
    if label_fn is not None:
        return " ".join([name, *label_fn(opts)])
    defaults = model_options(name)
    parts = [_format(k, v) for k, v in opts.items() if _canonical(v) != _canonical(defaults[k])]
    return " ".join([name, *parts])


# Importing the modules registers their entrypoints (they import MODELS from here).
from . import cnn, mlp, resnet, vit  # noqa: E402,F401

__all__ = ["MODELS", "create_model", "model_options", "model_label", "check_options",
           "check_choice"]
