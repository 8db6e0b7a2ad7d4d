"""What a run is built from, in one place: its data on the device, its model, its optimizer and
the (possibly compiled) module its steps run. The training engine and the analysis context
both build through here, so an analysis sees exactly the data and model a run trained on."""
from __future__ import annotations

import json
from types import SimpleNamespace

import torch
from torch import nn

from ..config import RunConfig
from ..data import DeviceData, load_dataset
from ..errors import ConfigError
from ..models import create_model
from ..optim import create_optimizer, get_spec

# torch.optim classes with a fused CUDA kernel (one launch for all parameters).
FUSED_CUDA = ("sgd", "sgd-momentum", "adam", "adamw")


def build_data(cfg: RunConfig, device: torch.device, data_root=None, *,
               channels_last: bool = False) -> DeviceData:
    """Both splits of the run's data set (first `train_subset` training examples) on `device`."""
    splits = load_dataset(cfg.dataset, root=data_root, **cfg.dataset_options
                          ).first_train(cfg.train_subset)
    return DeviceData(splits, device, channels_last=channels_last)


def build_model(cfg: RunConfig, data: DeviceData) -> nn.Module:
    """The run's architecture for `data`'s input shape and classes (PyTorch's default init)."""
    return create_model(cfg.arch, in_channels=data.in_channels, image_size=data.image_size,
                        num_classes=data.num_classes, **cfg.arch_options)


def check_builds(configs: list[RunConfig], data_root=None) -> None:
    """Load each data set once and build every run's model (on the meta device: no memory, no
    compute) and optimizer, so that whatever their constructors refuse (a ViT patch that does
    not divide the image, a negative SAM radius...) fails now, before anything is written."""
    shapes = {}
    for cfg in configs:
        key = (cfg.dataset, json.dumps(cfg.dataset_options, sort_keys=True))
        if key not in shapes:
            splits = load_dataset(cfg.dataset, root=data_root, **cfg.dataset_options)
            shapes[key] = SimpleNamespace(in_channels=splits.in_channels,
                                          image_size=splits.image_size,
                                          num_classes=splits.num_classes)
        try:
            with torch.device("meta"):
                build_optimizer(cfg, build_model(cfg, shapes[key]), torch.device("cpu"))
        except ConfigError as exc:
            raise ConfigError(f"run {cfg.run_id()}: {exc}") from None
        except (ValueError, TypeError, RuntimeError) as exc:  # the constructors' own checks
            raise ConfigError(f"run {cfg.run_id()} ({cfg.arch}, {cfg.optimizer}): "
                              f"{str(exc).splitlines()[0]}") from None


def uses_channels_last(cfg: RunConfig, device: torch.device) -> bool:
    """Channels-last memory format: asked for, a convolutional net, and on CUDA."""
    return cfg.channels_last and cfg.arch != "mlp" and device.type == "cuda"


def build_optimizer(cfg: RunConfig, model: nn.Module, device: torch.device):
    """The run's optimizer over `model`'s parameters; fused kernels on CUDA where they exist."""
    fused = {"fused": True} if device.type == "cuda" and cfg.optimizer in FUSED_CUDA else {}
    return create_optimizer(cfg.optimizer, model.parameters(), lr=cfg.lr,
                            weight_decay=cfg.weight_decay, momentum=cfg.momentum,
                            **{**fused, **cfg.optimizer_options})


def compile_mode(cfg: RunConfig, device: torch.device) -> str | None:
    """The torch.compile mode of the run's steps, or None to stay eager.

    Only on CUDA, and never for optimizers whose closure keeps the graph for a double backward
    (Sophia's create_graph), which compiled graphs do not support. CUDA graphs replay one
    captured step; closure optimizers (SAM) run two forward passes per step and keep the first
    one's outputs, which a replay would overwrite, so they fall back to a mode without graphs.
    """
    spec = get_spec(cfg.optimizer)
    if not (cfg.compile and device.type == "cuda") or spec.create_graph:
        return None
    mode = cfg.compile_mode
    if spec.needs_closure and mode in ("reduce-overhead", "max-autotune"):
        mode = "max-autotune-no-cudagraphs" if mode == "max-autotune" else "default"
    return mode


def build_forward(cfg: RunConfig, model: nn.Module, device: torch.device) -> nn.Module:
    """The module the training steps call: `model` itself, or its compiled wrapper."""
    mode = compile_mode(cfg, device)
    return model if mode is None else torch.compile(model, mode=mode)
