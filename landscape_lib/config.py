"""Every setting of a training run, in one visible dataclass (nanoGPT style).

A run is fully determined by its `RunConfig`; the run id is a hash of the fields that change the
result (seed included), so the same config always maps to the same stored run. Unknown or
mistyped keys fail loudly with a suggestion.
"""
from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import re
import tomllib
from dataclasses import dataclass, field, fields
from typing import Any

from .errors import ConfigError, check_choice

SCHEDULES = ("constant", "cosine")
TRAJECTORIES = ("auto", "full", "sketch", "off")


@dataclass
class RunConfig:
    # --- what is trained -------------------------------------------------------------
    dataset: str = "digits"               # a name from the dataset registry
    dataset_options: dict = field(default_factory=dict)   # e.g. {path = "..."} for `folder`
    arch: str = "mlp"                     # a name from the architecture registry
    arch_options: dict = field(default_factory=dict)      # e.g. {patch_size = 4}
    init: str = "default"                 # a name from the initializer registry
    init_options: dict = field(default_factory=dict)
    optimizer: str = "adam"               # a name from the optimizer registry (sam-<base> too)
    lr: float = 1e-3
    weight_decay: float = 0.0
    momentum: float = 0.9                 # SGD momentum / Adam beta1; also L-Momentum's alpha
    optimizer_options: dict = field(default_factory=dict)
    # --- how it is trained -----------------------------------------------------------
    epochs: int = 10
    batch_size: int = 128
    seed: int = 0
    augment: bool | None = None           # None: the data set's default (crop+flip on CIFAR)
    schedule: str = "constant"            # constant | cosine (per epoch, after warm-up)
    warmup_epochs: int = 0
    label_smoothing: float = 0.0
    grad_clip: float = 0.0                # max global grad norm; 0 = off
    train_subset: int = 0                 # use only the first N training examples; 0 = all
    amp: bool = True                      # bf16 autocast on CUDA (ignored on the CPU)
    channels_last: bool = True            # memory format for conv nets on CUDA
    # --- what is kept ----------------------------------------------------------------
    checkpoint_epochs: list | None = None  # None: 0, log-spaced epochs and the last
    trajectory: str = "auto"              # full | sketch | off | auto (full up to 256 MiB a run)
    sketch_dim: int = 2048                # random-projection size when trajectory = sketch
    # --- not part of the run id ------------------------------------------------------
    train_eval_samples: int = 10000       # fixed training sample train_loss is measured on
    compile: bool = False                 # torch.compile the model (CUDA only)
    compile_mode: str = "default"         # torch.compile mode; reduce-overhead = CUDA graphs
    study: str = ""                       # the grid study this run belongs to
    tags: list = field(default_factory=list)
    analyses: dict = field(default_factory=dict)  # analyses scheduled after training

    # Fields that do not change what is learned: excluded from the run id.
    _NOT_IN_ID = ("train_eval_samples", "compile", "compile_mode", "study", "tags", "analyses")

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "RunConfig":
        names = {f.name for f in fields(cls)}
        for key in data:
            if key not in names:
                close = difflib.get_close_matches(key, sorted(names), n=1)
                hint = f" (did you mean '{close[0]}'?)" if close else ""
                raise ConfigError(f"unknown config key '{key}'{hint}")
        cfg = cls(**{k: _coerce(k, v) for k, v in data.items()})
        cfg.check_values()
        return cfg

    def check_values(self) -> None:
        if self.epochs < 1 or self.batch_size < 1:
            raise ConfigError("epochs and batch_size must be >= 1")
        check_choice("schedule", self.schedule, SCHEDULES)
        check_choice("trajectory", self.trajectory, TRAJECTORIES)
        if self.lr <= 0:
            raise ConfigError(f"lr must be > 0, not {self.lr}")

    def validate_names(self) -> None:
        """Check registry names and options early, before anything is written."""
        from .data import DATASETS
        from .inits import INITIALIZERS
        from .models import MODELS, check_options
        from .optim import OPTIMIZERS
        for registry, name in ((DATASETS, self.dataset), (MODELS, self.arch),
                               (INITIALIZERS, self.init), (OPTIMIZERS, self.optimizer)):
            registry.entry(name)  # raises UnknownNameError with the choices
        check_options(self.arch, self.arch_options)  # unknown model options fail here

    def with_overrides(self, overrides: dict[str, Any]) -> "RunConfig":
        merged = self.to_dict()
        for key, value in overrides.items():
            set_dotted(merged, key, value)
        return RunConfig.from_dict(merged)

    # ------------------------------------------------------------------ identity
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def identity(self) -> dict[str, Any]:
        return {k: v for k, v in self.to_dict().items() if k not in self._NOT_IN_ID}

    def run_id(self) -> str:
        from .models import model_label
        blob = json.dumps(self.identity(), sort_keys=True, default=str)
        # A readable prefix (model and its options, initializer, optimizer, seed), then the hash.
        model = re.sub(r"[^A-Za-z0-9.]+", "-", model_label(self.arch, self.arch_options)).strip("-")
        prefix = f"{model}-{self.init}-{self.optimizer}-s{self.seed}"
        return f"{prefix}-{hashlib.sha1(blob.encode()).hexdigest()[:10]}"

    def resolved_checkpoint_epochs(self) -> list[int]:
        if self.checkpoint_epochs is not None:
            return sorted({int(e) for e in self.checkpoint_epochs if 0 <= int(e) <= self.epochs}
                          | {self.epochs})
        epochs, e = {0, self.epochs}, 1
        while e < self.epochs:  # log-spaced: 1, 2, 4, 8, ...
            epochs.add(e)
            e *= 2
        return sorted(epochs)


_TYPES = {f.name: f.type for f in fields(RunConfig)}


def _coerce(key: str, value: Any) -> Any:
    """Check a value against the field's type (ints are accepted for floats)."""
    kind = _TYPES[key]
    ok = {
        "str": isinstance(value, str),
        "float": isinstance(value, (int, float)) and not isinstance(value, bool),
        "int": isinstance(value, int) and not isinstance(value, bool),
        "bool": isinstance(value, bool),
        "dict": isinstance(value, dict),
        "list": isinstance(value, list),
        "bool | None": value is None or isinstance(value, bool),
        "list | None": value is None or isinstance(value, list),
    }[kind]
    if not ok:
        raise ConfigError(f"config key '{key}' expects {kind}, got {value!r}")
    return float(value) if kind == "float" else value


def parse_value(text: str) -> Any:
    """A command-line value as TOML (numbers, booleans, lists, inline tables), else a string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """`key=value` strings (dotted keys reach into option dicts) -> a dict."""
    out = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"override '{item}' is not key=value")
        key, text = item.split("=", 1)
        out[key.strip()] = parse_value(text.strip())
    return out


def set_dotted(target: dict, key: str, value: Any) -> None:
    head, _, rest = key.partition(".")
    if not rest:
        target[head] = value
        return
    if head not in target:
        raise ConfigError(f"unknown config key '{head}'")
    if not isinstance(target[head], dict):
        raise ConfigError(f"config key '{head}' is not a table; cannot set '{key}'")
    set_dotted(target[head], rest, value)
