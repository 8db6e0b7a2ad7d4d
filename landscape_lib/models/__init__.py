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
from . import cnn, mlp, resnet, vit  # noqa: F401  (each registers its entrypoints)
from .base import DATA_ARGS, MODELS, check_options, create_model, model_label, model_options

__all__ = ["MODELS", "DATA_ARGS", "create_model", "model_options", "model_label",
           "check_options"]
