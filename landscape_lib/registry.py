"""One registry type: a name -> object table per concept (architectures, initializers, ...).

Every user-facing list (CLI `list`, grid validation, README tables, dashboard choices) reads
these, so a name registered once is available everywhere. A registry also says which options
each entry takes, with their defaults: read from the entry's signature (`signature_options`,
the one way options are read from code) or from the entry itself (`options=`).

`registries()` returns every registry by kind (architectures, initializers, optimizers,
datasets, analyses), importing the modules that define them on first use.
"""
from __future__ import annotations

import difflib
import importlib
import inspect
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

from .errors import ConfigError, UnknownNameError


def signature_options(fn: Callable, exclude=()) -> dict[str, Any]:
    """The named parameters of `fn` (not *args/**kwargs, not `exclude`) with their defaults.

    A parameter without a default maps to `inspect.Parameter.empty`.
    """
    return {p.name: p.default for p in inspect.signature(fn).parameters.values()
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name not in exclude}


def value_kind(default) -> str | None:
    """What a value must be, judged by its default: "true or false", "a number", "a string",
    "a list of integers", "a list of numbers", "a list"; None when the default says nothing
    (None, a mixed tuple...)."""
    if isinstance(default, bool):
        return "true or false"
    if isinstance(default, (int, float)):
        return "a number"
    if isinstance(default, str):
        return "a string"
    if isinstance(default, (list, tuple)):
        if default and all(isinstance(v, int) and not isinstance(v, bool) for v in default):
            return "a list of integers"
        if default and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                           for v in default):
            return "a list of numbers"
        if default and all(isinstance(v, str) for v in default):
            return "a list of strings"
        return "a list" if not default else None
    return None


def _is(value, kind: str) -> bool:
    def number(v):
        return isinstance(v, (int, float)) and not isinstance(v, bool)
    items = list(value) if isinstance(value, (list, tuple)) else None
    return {
        "true or false": lambda: isinstance(value, bool),
        "a number": lambda: number(value),
        "a string": lambda: isinstance(value, str),
        "a list": lambda: items is not None,
        "a list of integers": lambda: items is not None and all(
            isinstance(v, int) and not isinstance(v, bool) for v in items),
        "a list of numbers": lambda: items is not None and all(map(number, items)),
        "a list of strings": lambda: items is not None and all(isinstance(v, str) for v in items),
    }[kind]()


def check_value(owner: str, key: str, value, default) -> None:
    """ConfigError unless `value` is of the kind its default is (see `value_kind`)."""
    kind = value_kind(default)
    if kind is not None and not _is(value, kind):
        raise ConfigError(f"{owner}: {key} must be {kind}, not {value!r}")


@dataclass(frozen=True)
class Entry:
    name: str
    obj: Any
    meta: dict = field(default_factory=dict)

    @property
    def doc(self) -> str:
        """A one-line description for listings: `description`, else the docstring's first part."""
        text = (getattr(self.obj, "description", None) or getattr(self.obj, "__doc__", None)
                or "").strip()
        return text.split("\n\n")[0].replace("\n", " ") if text else ""


class Registry:
    """Entries of one kind. `exclude`: signature parameters that are not user options (e.g.
    the data shapes every architecture receives); `options`: a function entry -> options dict
    for entries whose options are not their signature (e.g. an analysis' `defaults`)."""

    def __init__(self, kind: str, *, exclude=(), options: Callable[[Entry], dict] | None = None):
        self.kind = kind
        self.exclude = tuple(exclude)
        self._options = options
        self._entries: dict[str, Entry] = {}
        # Resolvers handle families of names (e.g. "sam-<base>") without listing every member.
        self._resolvers: list[Callable[[str], Entry | None]] = []

    def register(self, name: str, obj: Any = None, **meta):
        """Register `obj` under `name`; used bare or as a decorator."""
        def add(o):
            if name in self._entries:
                raise ValueError(f"{self.kind} '{name}' registered twice")
            self._entries[name] = Entry(name, o, dict(meta))
            return o
        return add if obj is None else add(obj)

    def add_resolver(self, fn: Callable[[str], Entry | None]) -> None:
        self._resolvers.append(fn)

    def entry(self, name: str) -> Entry:
        if name in self._entries:
            return self._entries[name]
        for resolve in self._resolvers:
            found = resolve(name)
            if found is not None:
                return found
        close = difflib.get_close_matches(str(name), self.names(), n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise UnknownNameError(
            f"unknown {self.kind} '{name}'{hint}; choose from: {', '.join(self.names())}")

    def get(self, name: str) -> Any:
        return self.entry(name).obj

    def options(self, name: str) -> dict[str, Any]:
        """The options entry `name` accepts, mapped to their defaults."""
        entry = self.entry(name)
        if self._options is not None:
            return dict(self._options(entry))
        return signature_options(entry.obj, self.exclude)

    def check_options(self, name: str, given) -> dict[str, Any]:
        """All options of `name` (defaults filled in); ConfigError naming an unknown one, or
        one whose value is not of its default's kind (`check_value`)."""
        accepted = self.options(name)
        unknown = sorted(set(given) - set(accepted))
        if unknown:
            listed = ", ".join(f"'{key}'" for key in unknown)
            raise ConfigError(f"{self.kind} '{name}' has no option{'s' * (len(unknown) > 1)} "
                              f"{listed}; accepted: {', '.join(accepted) or 'none'}")
        for key, value in given.items():
            check_value(f"{self.kind} '{name}'", key, value, accepted[key])
        return {**accepted, **given}

    def names(self) -> list[str]:
        return list(self._entries)

    def __contains__(self, name: str) -> bool:
        try:
            self.entry(name)
            return True
        except UnknownNameError:
            return False

    def __iter__(self) -> Iterator[Entry]:
        return iter(self._entries.values())

    def __len__(self) -> int:
        return len(self._entries)


# Each listed kind: "module:name" of its registry. They are imported on demand, by name, so that
# this module stays below all of them.
LISTED = {"architectures": "landscape_lib.models:MODELS",
          "initializers": "landscape_lib.inits:INITIALIZERS",
          "optimizers": "landscape_lib.optim:OPTIMIZERS", "datasets": "landscape_lib.data:DATASETS",
          "analyses": "landscape_lib.analyses.registry:ANALYSES"}


def registries() -> dict[str, Registry]:
    """Every user-facing registry by kind (see `LISTED`)."""
    out = {}
    for kind, ref in LISTED.items():
        module, _, name = ref.partition(":")
        out[kind] = getattr(importlib.import_module(module), name)
    return out
