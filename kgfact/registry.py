"""One registry mechanism for everything kgfact looks up by name.

Relations, prompt modes, sampling backends and answer matchers are all registered here, so a
component can be given either by name (``"P17"``, ``"few-shot"``) or as an instance, as in pykeen's
pipeline.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator
from typing import Any, Generic, TypeVar

from kgfact.errors import KgfactError

T = TypeVar("T")


class Registry(Generic[T]):
    """A named mapping from keys to components with helpful errors for unknown keys.

    Parameters
    ----------
    kind : str
        What the registry holds, used in error messages ("relation", "prompt mode", ...).

    Examples
    --------
    >>> modes = Registry[str]("prompt mode")
    >>> modes.register("zero-shot", "zs")
    'zs'
    >>> modes.get("zero-shot")
    'zs'
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str, item: T, *, replace: bool = False) -> T:
        """Add ``item`` under ``name``; re-registering a name needs ``replace=True``."""
        if name in self._items and not replace:
            raise KgfactError(f"{self.kind} {name!r} is already registered")
        self._items[name] = item
        return item

    def get(self, name: str) -> T:
        """Return the component registered under ``name`` or raise a :class:`KgfactError`."""
        try:
            return self._items[name]
        except KeyError:
            close = difflib.get_close_matches(str(name), self._items, n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise KgfactError(
                f"unknown {self.kind} {name!r}{hint} (known: {self._preview()})"
            ) from None

    def resolve(self, item: str | T) -> T:
        """Return ``item`` itself, or the registered component if ``item`` is a name."""
        return self.get(item) if isinstance(item, str) else item

    def _preview(self, limit: int = 30) -> str:
        names = list(self._items)
        more = f", ... ({len(names)} in all)" if len(names) > limit else ""
        return ", ".join(names[:limit]) + more

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def names(self) -> list[str]:
        """Registered names in registration order."""
        return list(self._items)


def load_target(target: str) -> Any:
    """The attribute that ``"module:attribute"`` names, its module imported on first use (lazy
    registrations, as rdflib's plugins: a backend class, a stage's config or runner)."""
    import importlib

    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)
