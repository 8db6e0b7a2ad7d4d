"""Every registry with its option lister, for the CLI, the README and the dashboard."""
from __future__ import annotations


def _load():
    from .analyses import runners  # noqa: F401  (registers the analyses)
    from .analyses.registry import ANALYSES, analysis_options
    from .data import DATASETS, dataset_options
    from .inits import INITIALIZERS, initializer_options
    from .models import MODELS, model_options
    from .optim import OPTIMIZERS, get_spec
    return {
        "architectures": (MODELS, model_options),
        "initializers": (INITIALIZERS, initializer_options),
        "optimizers": (OPTIMIZERS, lambda name: dict(get_spec(name).defaults)),
        "datasets": (DATASETS, dataset_options),
        "analyses": (ANALYSES, analysis_options),
    }


def __getattr__(name):
    if name == "REGISTRIES":
        return _load()
    raise AttributeError(name)
