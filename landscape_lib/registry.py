"""A small name -> object registry, one instance per concept (models, initializers, ...).

Every user-facing list (CLI `list`, grid validation, dashboard choices) reads these, so a name
registered once is available everywhere.
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

from .errors import UnknownNameError


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
    def __init__(self, kind: str):
        self.kind = kind
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
