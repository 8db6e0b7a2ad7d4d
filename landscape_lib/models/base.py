"""The architecture registry, model construction and readable model labels."""
from __future__ import annotations

from typing import Any

from torch import nn

from ..registry import Registry

# Arguments every entrypoint takes from the data set; they are not user options.
DATA_ARGS = ("in_channels", "image_size", "num_classes")

MODELS = Registry("architecture", exclude=DATA_ARGS)
model_options = MODELS.options      # option names of an architecture -> defaults (signature order)
check_options = MODELS.check_options  # all options (defaults filled in); unknown ones fail


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

