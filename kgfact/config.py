"""Configs in one place: every config dataclass validates its fields with
:func:`check_fields`, whether it was built from CLI flags, a TOML file or Python; TOML tables
become dataclasses through :func:`from_dict`, and a dataclass's fields become command-line flags
through :func:`add_config_flags` (read back by :func:`config_from_args`, which hands them to
:func:`from_dict`). All three walk a field's type once, through :func:`form`.

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

import argparse
import difflib
import math
import re
import string
import types
from collections.abc import Callable, Mapping, Sequence
from dataclasses import MISSING, fields, is_dataclass
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
        kind = form(hints[f.name])
        if not kind.holds(value):
            raise KgfactError(f"{f.name} must be {kind.python()}, got {show(value)}")
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


# -- type forms: the one walk over a field's type ------------------------------------------------
class _Form:
    """What kgfact does with the values of one type (a field's, or a part of one): check a
    Python value (:func:`check_fields`), read a TOML value (:func:`from_dict`), read a flag's
    text (:func:`add_config_flags`), and name the type in their errors. :func:`form` makes one
    per type: the one place that tells a union, a literal, a tuple and a dataclass apart."""

    table: type | None = None  # the dataclass a value is made of: a TOML table, flags by path

    def __init__(self, tp: Any) -> None:
        self.tp = tp

    def holds(self, value: Any) -> bool:
        """Whether the Python value ``value`` is of this type."""
        return isinstance(value, self.tp) if isinstance(self.tp, type) else True

    def read(self, value: Any, where: str) -> Any:
        """The TOML value ``value`` (of key ``where``) as a value of this type."""
        if not self.holds(value):
            raise self.wrong(value, where)
        return value

    def python(self) -> str:
        """This type as :func:`check_fields` names it (``a tuple of a string``)."""
        return _NAMES.get(self.tp, getattr(self.tp, "__name__", str(self.tp)))

    def toml(self) -> str:
        """This type as a TOML value (``an array of strings``)."""
        return self.python()

    def flag(self) -> tuple[Callable[[str], Any] | None, dict[str, Any]]:
        """How a flag's text becomes the value :meth:`read` takes: argparse's ``type`` (None:
        the flag takes no text) and its other options."""
        return self.tp, {}

    def wrong(self, value: Any, where: str) -> KgfactError:
        return KgfactError(f"{where} must be {self.toml()}, got {show_toml(value)}")


_NAMES = {str: "a string", int: "an integer", float: "a number", bool: "true or false",
          type(None): "None"}
_PLURAL = {str: "strings", int: "integers", float: "numbers", bool: "booleans"}


class _Scalar(_Form):
    # bool is an int subclass: true must not pass for 1; an integer passes for a float
    CHECKS: dict[Any, Callable[[Any], bool]] = {
        Any: lambda v: True, type(None): lambda v: v is None,
        int: lambda v: isinstance(v, int) and not isinstance(v, bool),
        float: lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
        Path: lambda v: isinstance(v, (str, Path))}
    CASTS: dict[Any, Callable[[Any], Any]] = {float: float, Path: Path}

    def holds(self, value: Any) -> bool:
        check = self.CHECKS.get(self.tp)
        return check(value) if check else super().holds(value)

    def read(self, value: Any, where: str) -> Any:
        return self.CASTS.get(self.tp, lambda v: v)(super().read(value, where))

    def toml(self) -> str:
        return "a path (a string)" if self.tp is Path else self.python()

    def flag(self) -> tuple[Callable[[str], Any] | None, dict[str, Any]]:
        if self.tp is bool:
            return None, {"action": argparse.BooleanOptionalAction}
        return self.tp, {}


class _Union(_Form):
    def __init__(self, tp: Any) -> None:
        super().__init__(tp)
        self.options = [form(a) for a in get_args(tp)]
        # TOML has no null: a value is one of the other options
        self.some = [o for o in self.options if o.tp is not type(None)]
        self.table = self.some[0].table

    def holds(self, value: Any) -> bool:
        return any(o.holds(value) for o in self.options)

    def read(self, value: Any, where: str) -> Any:
        for option in self.some:
            try:
                return option.read(value, where)
            except KgfactError:
                continue
        raise self.wrong(value, where)

    def python(self) -> str:
        return " or ".join(o.python() for o in self.options)

    def toml(self) -> str:
        return " or ".join(o.toml() for o in self.some)

    def flag(self) -> tuple[Callable[[str], Any] | None, dict[str, Any]]:
        if len(self.some) == 1:
            return self.some[0].flag()
        # a string or an array ("all-linear" or "q_proj,v_proj"): a list where there is a comma
        items = [o for o in self.some if isinstance(o, _Tuple)][0].flag()[0]
        return (lambda text: items(text) if "," in text else text), {}


class _Literal(_Form):
    def holds(self, value: Any) -> bool:
        return value in get_args(self.tp)

    def python(self) -> str:
        return "one of " + ", ".join(map(repr, get_args(self.tp)))

    def flag(self) -> tuple[Callable[[str], Any] | None, dict[str, Any]]:
        return str, {"choices": list(get_args(self.tp))}


class _Tuple(_Form):
    def __init__(self, tp: Any) -> None:
        super().__init__(tp)
        args = get_args(tp)
        self.variadic = args[1:] == (Ellipsis,)
        self.items = [form(a) for a in (args[:1] if self.variadic else args)]

    def _items(self, n: int) -> list[_Form]:
        return self.items * n if self.variadic else self.items

    def holds(self, value: Any) -> bool:
        if not isinstance(value, tuple):
            return False
        items = self._items(len(value))
        return len(items) == len(value) and all(t.holds(v) for t, v in zip(items, value))

    def read(self, value: Any, where: str) -> Any:
        if not isinstance(value, (list, tuple)):  # a tuple: an override given in Python
            raise self.wrong(value, where)
        items = self._items(len(value))
        if len(items) != len(value):
            raise KgfactError(f"{where} must have {len(items)} items, got {len(value)}")
        return tuple(t.read(v, f"{where}[{i}]") for i, (t, v) in enumerate(zip(items, value)))

    def python(self) -> str:
        return f"a tuple of {self.items[0].python()}"

    def toml(self) -> str:
        return f"an array of {_PLURAL.get(self.items[0].tp, self.items[0].toml())}"

    def flag(self) -> tuple[Callable[[str], Any] | None, dict[str, Any]]:
        item = self.items[0].flag()[0]
        return (lambda text: [item(x.strip()) for x in text.split(",") if x.strip()]), {
            "metavar": "A,B,..."}


class _Table(_Form):
    def __init__(self, tp: Any) -> None:
        super().__init__(tp)
        self.table = tp

    def read(self, value: Any, where: str) -> Any:
        return from_dict(self.tp, value, where)

    def python(self) -> str:
        return f"a {self.tp.__name__}"

    def toml(self) -> str:
        return "a table"


@cache
def form(tp: Any) -> _Form:
    """What kgfact does with values of type ``tp`` (a field's type), by its form."""
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        return _Union(tp)
    if origin is Literal:
        return _Literal(tp)
    if origin is tuple:
        return _Tuple(tp)
    if is_dataclass(tp):
        return _Table(tp)
    return _Scalar(tp)


# -- TOML -> dataclasses -------------------------------------------------------------------------
def from_dict(cls: type, data: Any, where: str = "") -> Any:
    """Build dataclass ``cls`` from a mapping (parsed TOML), checking keys and types.

    Nested dataclasses come from tables, tuples from arrays, ``X | None`` fields are set by
    giving an ``X`` (TOML has no null: leave the key out for the default).

    Raises
    ------
    KgfactError
        Naming the offending key (``where.key``) on an unknown key (with the valid keys and a
        did-you-mean), a missing required key, a wrong type or a value the dataclass rejects.
    """
    if not isinstance(data, dict):
        raise KgfactError(f"{where or 'the config'} must be a table, got {show_toml(data)}")
    hints = _hints(cls)
    known = {f.name: f for f in fields(cls) if f.init}
    for key in data:
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            # a quoted TOML key may hold a newline: repr keeps the message one line
            shown = clip(key) if key.isprintable() else show(key)
            raise KgfactError(f"unknown key {_key(where, shown)}{hint}; valid keys: "
                              f"{', '.join(known)}")
    for name, f in known.items():
        if name not in data and f.default is MISSING and f.default_factory is MISSING:
            raise KgfactError(f"missing required key {_key(where, name)} "
                              f"({f.metadata.get('help', form(hints[name]).toml())})")
    values = {k: form(hints[k]).read(v, _key(where, k)) for k, v in data.items()}
    try:
        return cls(**values)
    except (KgfactError, TypeError, ValueError) as exc:  # the dataclass's own checks
        raise KgfactError(f"[{where}]: {exc}" if where else str(exc)) from None


def _key(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def show_toml(value: Any) -> str:
    """A TOML value as an error names it: its kind and, for a scalar, :func:`show` of it.

    >>> show_toml(3), show_toml(["x"])
    ('integer 3', 'array')
    """
    kind = {bool: "boolean", int: "integer", float: "number", str: "string", list: "array",
            dict: "table"}.get(type(value), type(value).__name__)
    return f"{kind} {show(value)}" if not isinstance(value, (list, dict)) else kind


# -- dataclasses -> command-line flags -----------------------------------------------------------
SEP = ":"  # argparse dest of a config flag: "<section>:<dotted.field.path>"
# a tuple of strings as a field's help writes it, ('q_proj', 'v_proj'), and its items
_TUPLE = re.compile(r"\('[^']*'(?:, '[^']*')+\)")
_ITEM = re.compile(r"'([^']*)'")


def _flag(path: str) -> str:
    return "--" + path.replace(".", "-").replace("_", "-")


def add_config_flags(p: argparse.ArgumentParser, cls: type, section: str, prefix: str = "",
                     flag_prefix: str = "", aliases: Mapping[str, str] | None = None) -> None:
    """A flag per field of dataclass ``cls`` (nested dataclasses flattened with their path,
    ``--<flag_prefix><path>``, and ``aliases[path]`` beside it), its help and default from the
    field; only the flags given are set (their dest is ``section:path``), so defaults live in
    the dataclass alone and :func:`config_from_args` reads them as :func:`from_dict` reads
    TOML."""
    aliases = aliases or {}
    hints = _hints(cls)
    for f in fields(cls):
        path, kind = f"{prefix}{f.name}", form(hints[f.name])
        if kind.table:
            add_config_flags(p, kind.table, section, f"{path}.", flag_prefix, aliases)
            continue
        convert, extra = kind.flag()
        default = (f.default if f.default is not MISSING else
                   f.default_factory() if f.default_factory is not MISSING else None)
        shown = ",".join(map(str, default)) if isinstance(default, tuple) else default
        names = [_flag(flag_prefix + path), *([aliases[path]] if path in aliases else [])]
        kw = {"type": convert, "metavar": extra.pop("metavar", f.name.upper())} if convert \
            else {}
        if "choices" in extra:
            kw.pop("metavar")
        # a tuple in the field's help, written for Python, shown as the flag takes it: a,b
        text = _TUPLE.sub(lambda m: ",".join(_ITEM.findall(m[0])), f.metadata.get("help", ""))
        p.add_argument(*names, dest=f"{section}{SEP}{path}", default=argparse.SUPPRESS,
                       help=f"{text} (default: {shown})".replace("%", "%%"), **kw, **extra)


def config_from_args(cls: type, args: argparse.Namespace, section: str) -> Any:
    """Dataclass ``cls`` from the flags of ``section`` given on the command line
    (:func:`add_config_flags`), checked by the same reader as a TOML config's ``[section]``."""
    data: dict = {}
    for dest, value in vars(args).items():
        head, _, path = dest.partition(SEP)
        if head != section or not path:
            continue
        *parents, leaf = path.split(".")
        node = data
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    return from_dict(cls, data, where=section)
