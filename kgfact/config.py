"""Config checking in one place: every config dataclass validates its fields with
:func:`check_fields`, whether it was built from CLI flags, a TOML file or Python.

A field states its constraints in its metadata, beside its help line:

- ``"min"`` / ``"max"``: inclusive bounds; ``"above"`` / ``"below"``: exclusive bounds. They apply
  to a number, or to every number of a tuple.
- ``"name": True``: the value (or every value of a tuple) is a name that becomes part of a file
  path, such as a fine-tuning set's: see :func:`check_name`.
- ``"nonempty": True``: the value, a tuple or a string, must not be empty (where nothing would
  be done, such as evaluating under no prompt mode).
- ``"template": ("question", ...)``: the value is a :meth:`str.format` template of exactly these
  named fields, each used at least once: see :func:`check_template`.

Beyond what the metadata states, every value must have its field's declared type (an ``int`` is
not a ``bool``; an ``int`` is accepted for a ``float``), every number must be finite and every
integer must fit in 64 bits (what torch, numpy and Parquet hold; seeds reach torch), and a
tuple must not list a value twice (a set named twice would be trained or evaluated twice). Checks
that relate several fields stay in the config's own ``__post_init__``, after this one.

An error shows a user's value through :func:`show`, which shortens it to one readable line.
"""

from __future__ import annotations

import math
import re
import string
import types
from collections.abc import Sequence
from dataclasses import fields, is_dataclass
from functools import cache
from itertools import islice
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

from kgfact.errors import KgfactError

NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_INT64 = {"min": -(2**63), "max": 2**63 - 1}
_BOUNDS = {"min": (lambda v, b: v >= b, ">="), "max": (lambda v, b: v <= b, "<="),
           "above": (lambda v, b: v > b, ">"), "below": (lambda v, b: v < b, "<")}
SHOW_ITEMS, SHOW_CHARS = 5, 60  # the most of a user's value an error message shows
_BRACKETS = {list: "[]", tuple: "()", set: "{}", frozenset: "{}", dict: "{}"}


def clip(text: str) -> str:
    """``text`` cut to its first :data:`SHOW_CHARS` characters, saying how long it was.

    >>> clip("x" * 100)
    'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx... (100 characters)'
    """
    return text if len(text) <= SHOW_CHARS else f"{text[:SHOW_CHARS]}... ({len(text)} characters)"


def show(value: Any, depth: int = 2) -> str:
    """``repr(value)`` short enough for a one-line error: the first :data:`SHOW_ITEMS` items of a
    list, tuple, set or dict (``depth`` levels into nested ones), long strings and other reprs
    cut after :data:`SHOW_CHARS` characters.

    >>> show(tuple(range(200_000)))
    '(0, 1, 2, 3, 4, ... (200000 items))'
    """
    if isinstance(value, str):
        return repr(value) if len(value) <= SHOW_CHARS else \
            f"{value[:SHOW_CHARS]!r}... ({len(value)} characters)"
    if isinstance(value, int) and value.bit_length() > 4 * SHOW_CHARS:
        return f"an integer of {value.bit_length()} bits"  # whose repr may be refused, or long
    brackets = _BRACKETS.get(type(value))
    if brackets is None:
        return clip(repr(value))
    if depth == 0:
        return f"{brackets[0]}...{brackets[1]}"
    if isinstance(value, dict):
        shown = [f"{show(k, 0)}: {show(v, depth - 1)}"
                 for k, v in islice(value.items(), SHOW_ITEMS)]
    else:
        shown = [show(item, depth - 1) for item in islice(value, SHOW_ITEMS)]
    if len(value) > SHOW_ITEMS:
        shown.append(f"... ({len(value)} items)")
    comma = "," if isinstance(value, tuple) and len(value) == 1 else ""
    return f"{brackets[0]}{', '.join(shown)}{comma}{brackets[1]}"


def check_name(name: Any, what: str = "name") -> str:
    """``name`` if it is safe inside a file path: letters, digits, ``.``, ``_`` and ``-``, not
    starting with a dot or dash, at most 64 characters (so never ``..`` or a ``/``).

    >>> check_name("mix-50")
    'mix-50'
    """
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise KgfactError(f"{what}: {show(name)} is not a valid name: use letters, digits, '.', "
                          "'_' and '-', starting with a letter or digit (at most 64 characters)")
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
            raise KgfactError(f"{f.name} must be {_describe(hints[f.name])}, got {show(value)}")
        if f.metadata.get("nonempty") and value is not None and len(value) == 0:
            raise KgfactError(f"{f.name} must not be empty")
        items = value if isinstance(value, tuple) else (value,)
        if twice := _first_repeat(items):
            raise KgfactError(f"{f.name} lists {show(twice[0])} twice")
        if f.metadata.get("template") and value is not None:
            check_template(value, f.name, f.metadata["template"])
        for item in items:
            if isinstance(item, float) and not math.isfinite(item):
                raise KgfactError(f"{f.name} must be a finite number, got {show(item)}")
            for key, (ok, sign) in _BOUNDS.items():
                bound = f.metadata.get(key, _INT64.get(key) if isinstance(item, int) else None)
                if (bound is not None and isinstance(item, (int, float))
                        and not isinstance(item, bool) and not ok(item, bound)):
                    raise KgfactError(f"{f.name} must be {sign} {bound}, got {show(item)}")
            if f.metadata.get("name") and item is not None:
                check_name(item, f.name)


def check_template(template: str, what: str, names: Sequence[str]) -> None:
    """Refuse ``template`` unless it is a :meth:`str.format` template whose fields are exactly
    ``names``, each used at least once: no other or positional field (``{0}``, ``{}``), no
    attribute or index (``{question.x}``), a conversion of ``!r``, ``!s`` or ``!a`` only, balanced
    braces (``{{`` and ``}}`` write literal ones), and a format spec that fits a string (tried
    on dummy strings: the values are questions and answers), pads to fewer than 1000 characters
    and holds no field (an answer must not set a width).

    >>> check_template("Q: {question}\\nA:", "query", ("question",))
    >>> check_template("Q: {answer}", "query", ("question",))
    Traceback (most recent call last):
    ...
    kgfact.errors.KgfactError: query has an unknown field '{answer}': its field is {question}

    Raises
    ------
    KgfactError
        Naming ``what`` and the problem.
    """
    fields_are = (f"its field is {{{names[0]}}}" if len(names) == 1 else
                  "its fields are " + ", ".join(f"{{{n}}}" for n in names[:-1])
                  + f" and {{{names[-1]}}}")
    try:
        used = [(name, spec, conversion) for _, name, spec, conversion
                in string.Formatter().parse(template) if name is not None]
    except ValueError as exc:
        raise KgfactError(f"{what} is not a format template: {exc} (write a literal brace as "
                          "{{ or }})") from None
    for name, spec, conversion in used:
        field = show("{" + name + (f"!{conversion}" if conversion else "")
                     + (f":{spec}" if spec else "") + "}")
        if name == "" or name.isdigit():
            raise KgfactError(f"{what} has a positional field {field}: name it; {fields_are}")
        if name not in names:
            raise KgfactError(f"{what} has an unknown field {field}: {fields_are}")
        if conversion not in (None, "r", "s", "a"):
            raise KgfactError(f"{what} has an unknown conversion in {field}: use !r, !s, !a or "
                              "none")
        if "{" in spec:
            raise KgfactError(f"{what} has a field inside the format spec of {field}")
        if re.search(r"[1-9]\d{3}", spec):  # the trial below would allocate the padding
            raise KgfactError(f"{what} pads {field} to 1000 characters or more")
    named = {name for name, _, _ in used}
    missing = [n for n in names if n not in named]
    if missing:
        raise KgfactError(f"{what} must contain " + " and ".join(f"{{{n}}}" for n in missing))
    try:
        template.format(**dict.fromkeys(names, "x"))
    except ValueError as exc:  # a format spec a string does not take ("{question:d}")
        raise KgfactError(f"{what} cannot be formatted: {exc}") from None


def _first_repeat(items: Sequence[Any]) -> list[Any]:
    """``[item]`` for the first item equal to an earlier one, else ``[]``; one pass over
    hashable items (unhashable ones are compared with each other)."""
    seen, unhashable = set(), []
    for item in items:
        try:
            repeat = item in seen
            seen.add(item)
        except TypeError:
            repeat = item in unhashable
            unhashable.append(item)
        if repeat:
            return [item]
    return []


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
