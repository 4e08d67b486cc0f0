"""Settings: typed frozen dataclasses built from YAML or keyword arguments, checked once where they
enter.

A settings concept is a frozen dataclass deriving from `Settings`: its fields are the accepted keys,
their annotations the accepted types, and a field's `check` (metadata) the accepted values. A rule
between fields is the class's `check` method. `build(cls, mapping, where)` checks a mapping (unknown
keys, wrong types, values out of range, missing keys: one line each, naming `where`) and builds the
object, nested settings included; calling the class with keyword arguments runs the same checks.
`to_json()` gives back the mapping an object was built from, byte for byte, so that what a record
or a search directory stores does not change with the classes.

Plain Python only (no Keras): the GP engine's settings use it too.
"""

import math
import typing
from dataclasses import dataclass
from dataclasses import MISSING, fields, is_dataclass
from typing import Union

FLOAT32_MAX = 3.4028234663852886e38  # numpy.finfo("float32").max: where training's float32 overflows
SHOWN_LENGTH = 80  # characters of a user's value that an error message echoes


def shown(value, limit=SHOWN_LENGTH):
    """`repr(value)` for an error message: cut to `limit` characters, with its type and size when
    cut ("'aaa…' … (str of 50,000,000 characters)"). The work is bounded by `limit`, never by the
    value: a YAML list of aliases can stand for a billion items that no message may expand."""
    pieces, length = [], 0
    for piece in _repr_pieces(value, limit + 1):
        pieces.append(piece)
        length += len(piece)
        if length > limit:
            return f"{''.join(pieces)[:limit]}… ({_size(value)})"
    return "".join(pieces)


def _size(value):
    if isinstance(value, str):
        return f"str of {len(value):,} characters"
    if isinstance(value, (list, tuple, dict)):
        noun = ("key" if isinstance(value, dict) else "item") + ("" if len(value) == 1 else "s")
        return f"{'mapping' if isinstance(value, dict) else type(value).__name__} of {len(value):,} {noun}"
    return type(value).__name__


def _repr_pieces(value, budget):
    """repr(value) in pieces, lazily: the caller stops once it has `budget` characters."""
    if isinstance(value, str):
        yield repr(value[:budget])
    elif isinstance(value, (list, tuple, dict)):
        opening, closing = "{}" if isinstance(value, dict) else "()" if isinstance(value, tuple) else "[]"
        yield opening
        for i, item in enumerate(value.items() if isinstance(value, dict) else value):
            if i:
                yield ", "
            if isinstance(value, dict):
                yield from _repr_pieces(item[0], budget)
                yield ": "
                item = item[1]
            yield from _repr_pieces(item, budget)
        yield closing
    else:
        yield repr(value)[:budget]


@dataclass(frozen=True)
class Shown:
    """A value that formats as `shown(value)`: for messages written with `{value!r}`."""

    value: object

    def __repr__(self):
        return shown(self.value)


def check(test, accepted, message=None, covers_type=False):
    """Field metadata: `test(value)` must hold; `accepted` says what is accepted. `message`, if
    given, is the whole message (or a function of the value giving it), formatted with `key`,
    `value` (shortened: `shown`), `accepted` and `where` ("path: " or nothing); `covers_type`: it
    also answers a value of the wrong type (it names the type)."""
    return {"check": (test, accepted, message), "covers_type": covers_type}


def finite(test):
    """`test`, for numbers that float32 holds (finite, |v| <= FLOAT32_MAX): training computes in
    float32, where a larger setting is inf."""
    return lambda v: in_float32(v) and test(v)


def in_float32(value):
    """Whether number `value` is finite in float32 (an int too large for a float is not)."""
    try:
        return math.isfinite(value) and abs(float(value)) <= FLOAT32_MAX
    except OverflowError:
        return False


def integer_at_least(least, message="{where}{key} must be an integer >= {least}; got {value!r}."):
    """An integer >= `least`, with the GP engine's message (the key unquoted)."""
    return check(lambda v: v >= least, f"an integer >= {least}", message.replace("{least}", str(least)))


def _is_range(v):
    return len(v) == 2 and all(math.isfinite(x) for x in v) and v[0] < v[1]


RANGE = check(lambda v: _is_range(v) and all(abs(x) <= FLOAT32_MAX / 2 for x in v), "[low, high]",
              lambda v: "{key} must be [low, high], two finite numbers with low < high; got {value!r}."
              if not _is_range(v) else
              f"{{key}} must lie within ±{FLOAT32_MAX / 2:.3g} (half float32's largest number), so that "
              "its width high - low and every constant drawn from it stay finite in float32; got {value!r}.")
POSITIVE_INT = check(lambda v: v >= 1, "an integer >= 1")
POSITIVE = check(finite(lambda v: v > 0), "a finite number > 0")
NON_NEGATIVE = check(finite(lambda v: v >= 0), "a finite number >= 0")


class Settings:
    """Base of every settings dataclass: keyword construction checks each field, then `check`."""

    def __post_init__(self):
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None and f.default is None:
                continue  # not given: a section whose defaults live in the class that uses it
            _check_value(f, value, _hints(type(self))[f.name], "")
            if isinstance(value, list) and typing.get_origin(_bare(_hints(type(self))[f.name])) is tuple:
                object.__setattr__(self, f.name, tuple(value))  # a list given by keyword
        self.check()

    def check(self):
        """Rules between fields; raise ValueError with one line."""

    def to_json(self):
        """The mapping this object was built from (as given, key order included), or its fields."""
        given = getattr(self, "_given", None)
        if given is not None:
            return _copy(given)
        return {f.name: (getattr(self, f.name).to_json() if isinstance(getattr(self, f.name), Settings)
                         else _copy(getattr(self, f.name))) for f in fields(self)}

    def replace(self, **changes):
        """A copy with `changes` (JSON values, or settings objects), checked and built again."""
        given = self.to_json()
        given.update({k: v.to_json() if isinstance(v, Settings) else v for k, v in changes.items()})
        return build(type(self), given, type(self).__name__)


def _copy(value):
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_copy(v) for v in value]
    return value


_HINTS = {}


def _hints(cls):
    if cls not in _HINTS:
        _HINTS[cls] = typing.get_type_hints(cls)
    return _HINTS[cls]


def _bare(expected):
    """`expected` without Optional."""
    args = typing.get_args(expected)
    if typing.get_origin(expected) is Union and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return rest[0] if len(rest) == 1 else expected
    return expected


def _type_name(expected):
    origin, args = typing.get_origin(expected), typing.get_args(expected)
    if origin is Union:
        return " or ".join(_type_name(t) for t in args)
    if origin in (list, tuple):
        if not args:
            return "a list"
        return "a list of strings" if args[0] is str else f"a list of {_type_name(args[0])}"
    if is_dataclass(expected):
        return "a mapping"
    return {type(None): "null", float: "a number", int: "an integer", str: "a string",
            bool: "true/false", list: "a list", dict: "a mapping"}[expected]


def _matches(value, expected):
    origin, args = typing.get_origin(expected), typing.get_args(expected)
    if origin is Union:
        return any(_matches(value, t) for t in args)
    if origin in (list, tuple):
        return isinstance(value, (list, tuple)) and all(_matches(v, args[0]) for v in value) if args else \
            isinstance(value, (list, tuple))
    if is_dataclass(expected):
        return isinstance(value, (dict, expected))
    if expected is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if expected is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, expected)


def _check_value(f, value, expected, where):
    """One field's type and accepted values; `where` is "path" or "" (keyword construction)."""
    test, accepted, message = f.metadata.get("check", (None, None, None))
    prefix = f"{where}: " if where else ""
    if not _matches(value, expected):
        if f.metadata.get("covers_type"):
            message = message(value) if callable(message) else message
            raise ValueError(message.format(key=f.name, value=Shown(value), accepted=accepted, where=prefix))
        raise ValueError(f"{prefix}{f.name!r} must be {_type_name(expected)}; got {shown(value)}.")
    if test is not None and value is not None and not test(value):
        given = Shown(list(value) if isinstance(value, tuple) else value)
        if (isinstance(value, (int, float)) and not isinstance(value, bool) and not in_float32(value)
                and (isinstance(value, int) or math.isfinite(value))):
            raise ValueError(f"{prefix}{f.name!r} must lie within float32's range (|x| <= {FLOAT32_MAX:.4g}), "
                             f"where training computes; got {given!r}.")
        message = message(value) if callable(message) else message
        if message is not None:
            raise ValueError(message.format(key=f.name, value=given, accepted=accepted, where=prefix))
        raise ValueError(f"{prefix}{f.name!r} must be {accepted}; got {given!r}.")


def validate(data, cls, where, partial=False):
    """Check mapping `data` against settings class `cls`: keys, types, accepted values, and (unless
    `partial`) that every field without a default is given. Returns `data` unchanged."""
    if not isinstance(data, dict):
        raise ValueError(f"{where}: expected a mapping of settings, got "
                         f"{'nothing' if data is None else type(data).__name__}.")
    hints = _hints(cls)
    by_name = {f.name: f for f in fields(cls)}
    for key, value in data.items():
        if key not in by_name:
            raise ValueError(f"{where}: unknown key {shown(key)}; accepted keys: {', '.join(by_name)}.")
        _check_value(by_name[key], value, hints[key], where)
        nested = _bare(hints[key])
        if is_dataclass(nested) and isinstance(value, dict):
            validate(value, nested, f"{where}: {key}", partial)
    if not partial:
        missing = [f.name for f in fields(cls) if f.name not in data
                   and f.default is MISSING and f.default_factory is MISSING]
        if missing:
            raise ValueError(f"{where}: missing keys {missing}.")
    return data


def build(cls, data, where):
    """The `cls` object of mapping `data`, checked (see `validate`) and built, nested settings too;
    its `to_json()` is `data`."""
    validate(data, cls, where)
    hints = _hints(cls)
    values = {}
    for key, value in data.items():
        expected = _bare(hints[key])
        if is_dataclass(expected) and isinstance(value, dict):
            value = build(expected, value, f"{where}: {key}")
        elif typing.get_origin(expected) is tuple and isinstance(value, list):
            value = tuple(float(v) if typing.get_args(expected)[:1] == (float,) else v for v in value)
        elif expected is float and isinstance(value, int):
            value = float(value)
        values[key] = value
    built = cls(**values)
    object.__setattr__(built, "_given", _copy(data))
    return built
