"""Config checking in one place: every config dataclass validates its fields with
:func:`check_fields`, whether it was built from CLI flags, a TOML file or Python.

A field states its constraints in its metadata, beside its help line:

- ``"min"`` / ``"max"``: inclusive bounds; ``"above"`` / ``"below"``: exclusive bounds. They apply
  to a number, or to every number of a tuple.
- ``"name": True``: the value (or every value of a tuple) is a name that becomes part of a file
  path, such as a fine-tuning set's: see :func:`check_name`.
- ``"nonempty": True``: the value, a tuple or a string, must not be empty (where nothing would
  be done, such as evaluating under no prompt mode).

Beyond what the metadata states, every value must have its field's declared type (an ``int`` is
not a ``bool``; an ``int`` is accepted for a ``float``), every number must be finite and every
integer must fit in 64 bits (what torch, numpy and Parquet hold; seeds reach torch), and a
tuple must not list a value twice (a set named twice would be trained or evaluated twice). Checks
that relate several fields stay in the config's own ``__post_init__``, after this one.
"""

from __future__ import annotations

import math
import re
import types
from dataclasses import fields, is_dataclass
from functools import cache
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

from kgfact.errors import KgfactError

NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_INT64 = {"min": -(2**63), "max": 2**63 - 1}
_BOUNDS = {"min": (lambda v, b: v >= b, ">="), "max": (lambda v, b: v <= b, "<="),
           "above": (lambda v, b: v > b, ">"), "below": (lambda v, b: v < b, "<")}


def check_name(name: Any, what: str = "name") -> str:
    """``name`` if it is safe inside a file path: letters, digits, ``.``, ``_`` and ``-``, not
    starting with a dot or dash, at most 64 characters (so never ``..`` or a ``/``).

    >>> check_name("mix-50")
    'mix-50'
    """
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise KgfactError(f"{what}: {name!r} is not a valid name: use letters, digits, '.', '_' "
                          "and '-', starting with a letter or digit (at most 64 characters)")
    return name


@cache
def _hints(cls: type) -> dict[str, Any]:
    return get_type_hints(cls)


def check_fields(config: Any) -> None:
    """Check every field of dataclass instance ``config`` (see the module docstring).

    Raises
    ------
    KgfactError
        Naming the field, its value and what it must be.
    """
    hints = _hints(type(config))
    for f in fields(config):
        value = getattr(config, f.name)
        if not _has_type(hints[f.name], value):
            raise KgfactError(f"{f.name} must be {_describe(hints[f.name])}, got {value!r}")
        if f.metadata.get("nonempty") and value is not None and len(value) == 0:
            raise KgfactError(f"{f.name} must not be empty")
        items = value if isinstance(value, tuple) else (value,)
        twice = [item for i, item in enumerate(items) if item in items[:i]]
        if twice:
            raise KgfactError(f"{f.name} lists {twice[0]!r} twice")
        for item in items:
            if isinstance(item, float) and not math.isfinite(item):
                raise KgfactError(f"{f.name} must be a finite number, got {item!r}")
            for key, (ok, sign) in _BOUNDS.items():
                bound = f.metadata.get(key, _INT64.get(key) if isinstance(item, int) else None)
                if (bound is not None and isinstance(item, (int, float))
                        and not isinstance(item, bool) and not ok(item, bound)):
                    raise KgfactError(f"{f.name} must be {sign} {bound}, got {item!r}")
            if f.metadata.get("name") and item is not None:
                check_name(item, f.name)


def _has_type(tp: Any, value: Any) -> bool:
    origin, args = get_origin(tp), get_args(tp)
    if origin in (Union, types.UnionType):
        return any(_has_type(a, value) for a in args)
    if origin is Literal:
        return value in args
    if origin is tuple:
        if not isinstance(value, tuple):
            return False
        items = args[:1] * len(value) if args[1:] == (Ellipsis,) else args
        return len(items) == len(value) and all(_has_type(t, v) for t, v in zip(items, value))
    if tp is Any:
        return True
    if tp is type(None):
        return value is None
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is Path:
        return isinstance(value, (str, Path))
    return isinstance(value, tp) if isinstance(tp, type) else True


def _describe(tp: Any) -> str:
    origin, args = get_origin(tp), get_args(tp)
    if origin in (Union, types.UnionType):
        return " or ".join(_describe(a) for a in args)
    if origin is tuple:
        return f"a tuple of {_describe(args[0])}"
    if origin is Literal:
        return "one of " + ", ".join(map(repr, args))
    if is_dataclass(tp):
        return f"a {tp.__name__}"
    return {str: "a string", int: "an integer", float: "a number", bool: "true or false",
            type(None): "None"}.get(tp, getattr(tp, "__name__", str(tp)))
