"""Canonical encoding of every message that crosses a process boundary, and its strict decoder.

Why msgspec: it encodes and decodes typed structs in C, validating every field while it parses
(a PRE-PREPARE of 100 items: ~13 us to encode, ~60 us to decode; measure with
``python -m benchmarks.wire_codec``), msgpack has a native ``bin`` type (no base64 of signatures
and digests), and its output is deterministic once maps are written in sorted key order, which
the encoder here is told to do. A hand-written codec was ~50x slower and one more parser to harden.

The layout of a message is a positional msgpack array ``[kind, field_1, ..., field_k]``: a
``Message`` is a frozen ``msgspec.Struct`` with ``array_like=True`` whose integer ``tag`` is its
kind. Field names never travel, so the encoding is compact and there is exactly one encoding
per value. A message module declares ``class Request(Message, tag=10): client: str ...``.

Rules of this module:
- A field's type is one of ``int``, ``bool``, ``str``, ``bytes``, ``tuple[T, ...]``,
  ``T | None``, another message class, or ``Value`` (a bounded JSON-like value: operation
  arguments and read results). The bounds are added here, in one place, to every field of every
  message when its decoder is first built (``_bounded``): a ``str`` holds at most
  ``MAX_STR_CHARS`` characters, ``bytes`` at most ``MAX_FIELD_BYTES``, a tuple at most
  ``MAX_ITEMS`` items; integers are 64-bit by msgpack itself.
- ``decode`` trusts nothing: it rejects wrong types (``True`` is not an ``int`` here: msgspec is
  strict), wrong field counts, unknown kinds, oversized fields, integers outside 64 bits, Values
  nested too deep or holding anything but None/bool/int/str/bytes/list/str-keyed dict, trailing
  bytes and non-canonical encodings, always with ``DecodeError``. It never unpickles.
"""

from __future__ import annotations

import types
import typing
from typing import Annotated, Any, Union

import msgspec

from dtm_ray.errors import DecodeError, EncodeError

MAX_MESSAGE_BYTES = 8 * 1024 * 1024
MAX_FIELD_BYTES = 4 * 1024 * 1024
MAX_STR_CHARS = 64 * 1024
MAX_ITEMS = 100_000
MAX_VALUE_DEPTH = 8
INT_MIN, INT_MAX = -(2**63), 2**64 - 1


class Value:
    """Marker type for a bounded JSON-like value: None, bool, int, str, bytes, list, and dict
    with str keys, nested at most ``MAX_VALUE_DEPTH`` deep. Dicts encode with sorted keys.

    msgspec decodes it as ``Any`` (it cannot bound the depth of ``Any``), so the decoder walks
    the Value fields, and only those, after parsing (``_value_checker``)."""


class _Registered(type(msgspec.Struct)):  # type: ignore[misc]
    """Registers every message class under its kind once msgspec has made it."""

    def __new__(mcls, name: str, bases: tuple, namespace: dict, **kwargs: Any):
        cls = super().__new__(mcls, name, bases, namespace, **kwargs)
        if bases != (msgspec.Struct,):  # not ``Message`` itself
            _register(cls)
        return cls


class Message(msgspec.Struct, frozen=True, array_like=True, metaclass=_Registered):
    """Base of every wire message; a subclass names its kind: ``class Ping(Message, tag=5)``."""


_KIND_TO_CLASS: dict[int, type] = {}
_DECODERS: dict[Any, msgspec.msgpack.Decoder] = {}  # per ``expected``; None: every message
_ENCODER = msgspec.msgpack.Encoder(order="deterministic")  # sorted map keys: one encoding per value


def _register(cls: type) -> None:
    kind = cls.__struct_config__.tag
    if type(kind) is not int:
        raise EncodeError(f"message {cls.__name__} needs an integer tag (its kind), got {kind!r}")
    if kind in _KIND_TO_CLASS:
        raise EncodeError(f"message kind {kind} already used by {_KIND_TO_CLASS[kind].__name__}")
    _KIND_TO_CLASS[kind] = cls
    _DECODERS.clear()  # the union of all messages changed


def message(kind: int):
    """Class decorator for declarations written before ``Message``: ``@message(10) class X:``
    becomes ``class X(Message, tag=10)`` with the same fields and methods."""

    def wrap(cls: type) -> type:
        namespace = {k: v for k, v in vars(cls).items() if k not in ("__dict__", "__weakref__")}
        return _Registered(cls.__name__, (Message,), namespace, tag=kind)

    return wrap


def kind_of(cls_or_obj: Any) -> int:
    cls = cls_or_obj if isinstance(cls_or_obj, type) else type(cls_or_obj)
    return cls.__struct_config__.tag


# ---------------------------------------------------------------------------------------------
# Encoding


def encode(msg: Any) -> bytes:
    """The canonical bytes of ``msg`` (a ``Message``)."""
    if not isinstance(msg, Message):
        raise EncodeError(f"{type(msg).__name__} is not a registered message")
    try:
        return _ENCODER.encode(msg)
    except (TypeError, ValueError, OverflowError, RecursionError) as exc:
        raise EncodeError(f"cannot encode {type(msg).__name__}: {exc}") from exc


# ---------------------------------------------------------------------------------------------
# Decoding


def decode(data: bytes, expected: type | tuple[type, ...] | None = None) -> Any:
    """Decode untrusted bytes into a message; ``expected`` restricts the acceptable classes."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise DecodeError(f"payload must be bytes, not {type(data).__name__}")
    if len(data) > MAX_MESSAGE_BYTES:
        raise DecodeError(f"message of {len(data)} bytes exceeds {MAX_MESSAGE_BYTES}")
    decoder = _DECODERS.get(expected) or _decoder_for(expected)
    try:
        msg = decoder.decode(data)
    except msgspec.ValidationError as exc:
        raise DecodeError(f"invalid {_names(expected)}: {exc}") from None
    except msgspec.DecodeError as exc:  # truncated, trailing bytes, not msgpack at all
        raise DecodeError(f"not msgpack: {exc}") from None
    check = _VALUE_CHECKERS[type(msg)]
    if check is not None:
        check(msg)
    # One value, one encoding: msgpack admits wider-than-needed integer and length formats, and
    # msgspec ignores extra trailing fields of an array-like struct, so re-encode and compare.
    # Digests and equivocation checks can then work on bytes alone.
    if _ENCODER.encode(msg) != data:
        raise DecodeError("non-canonical encoding")
    return msg


def _names(expected: type | tuple[type, ...] | None) -> str:
    if expected in (None, object, Message):
        return "message"
    if isinstance(expected, tuple):
        return " or ".join(t.__name__ for t in expected)
    return expected.__name__



def _decoder_for(expected: type | tuple[type, ...] | None) -> msgspec.msgpack.Decoder:
    """Built once per ``expected`` (None: the tagged union of every message) and reused."""
    if expected in (None, object, Message):  # any message
        classes = tuple(_KIND_TO_CLASS.values())
    else:
        classes = expected if isinstance(expected, tuple) else (expected,)
    for cls in classes:
        if not (isinstance(cls, type) and issubclass(cls, Message)):
            raise EncodeError(f"{cls!r} is not a message class")
        _install_bounds(cls)
    decoder = msgspec.msgpack.Decoder(Union[classes] if len(classes) > 1 else classes[0])  # type: ignore[valid-type]
    _DECODERS[expected] = decoder
    return decoder


# ---------------------------------------------------------------------------------------------
# The bounds, added to every field's declared type


Str = Annotated[str, msgspec.Meta(max_length=MAX_STR_CHARS)]
Bytes = Annotated[bytes, msgspec.Meta(max_length=MAX_FIELD_BYTES)]
_VALUE_CHECKERS: dict[type, Any] = {}  # class -> check(msg) of its Value fields, or None
_DECLARED: dict[type, dict[str, Any]] = {}  # class -> its field types as declared (with Value)


def _declared(cls: type) -> dict[str, Any]:
    """The field types ``cls`` was declared with, read before ``_install_bounds`` replaces them."""
    hints = _DECLARED.get(cls)
    if hints is None:
        hints = _DECLARED[cls] = typing.get_type_hints(cls, globalns=_globals_of(cls))
    return hints


def _install_bounds(cls: type) -> None:
    """Replace ``cls``'s field annotations by their bounded forms, before msgspec reads them."""
    if cls in _VALUE_CHECKERS:
        return
    hints = _declared(cls)
    cls.__annotations__ = {name: _bounded(hints[name]) for name in cls.__struct_fields__}
    _VALUE_CHECKERS[cls] = _value_checker(cls, hints)
    for tp in hints.values():
        for inner in _message_classes_in(tp):
            _install_bounds(inner)


def _bounded(tp: Any) -> Any:
    if tp is str:
        return Str
    if tp is bytes:
        return Bytes
    if tp in (int, bool) or (isinstance(tp, type) and issubclass(tp, Message)):
        return tp
    if tp is Value:
        return Any
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        return Annotated[tuple[_bounded(args[0]), ...], msgspec.Meta(max_length=MAX_ITEMS)]
    if origin in _UNIONS and len(args) == 2 and type(None) in args:
        return Union[_bounded(_non_none(args)), None]
    raise EncodeError(f"unsupported field type {tp!r}")


def _message_classes_in(tp: Any) -> list[type]:
    if isinstance(tp, type) and issubclass(tp, Message):
        return [tp]
    return [c for arg in typing.get_args(tp) for c in _message_classes_in(arg)]


def _globals_of(cls: type) -> dict[str, Any]:
    import sys

    ns = dict(vars(sys.modules[cls.__module__]))
    ns.setdefault("Value", Value)
    return ns


_UNIONS = (Union, types.UnionType)  # Optional[T] and T | None


def _non_none(args: tuple) -> Any:
    return next(a for a in args if a is not type(None))


# ---------------------------------------------------------------------------------------------
# Value fields: checked after parsing, and only where a Value can be


def _value_checker(cls: type, hints: dict[str, Any]):
    """A function checking every Value reachable from a ``cls`` message, or None if none is."""
    checks = [(name, c) for name in cls.__struct_fields__ if (c := _checker_for(hints[name])) is not None]
    if not checks:
        return None

    def check(msg: Any) -> None:
        for name, c in checks:
            try:
                c(getattr(msg, name))
            except DecodeError as exc:
                raise DecodeError(f"{cls.__name__}.{name}: {exc}") from None

    return check


def _checker_for(tp: Any):
    if tp is Value:
        return _check_value_field
    if isinstance(tp, type) and issubclass(tp, Message):
        return _value_checker(tp, _declared(tp))  # the same check _install_bounds(tp) installs
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is tuple:
        inner = _checker_for(args[0])
        if inner is None:
            return None

        def check_each(xs: tuple) -> None:  # a loop, not a list of Nones: votes come by the hundred
            for x in xs:
                inner(x)

        return check_each
    if origin in _UNIONS:
        inner = _checker_for(_non_none(args))
        if inner is None:
            return None
        return lambda x: None if x is None else inner(x)
    return None


_SCALARS = frozenset((type(None), bool, int, bytes))


def _check_value_field(v: Any) -> None:
    t = type(v)
    if t in _SCALARS or (t is str and len(v) <= MAX_STR_CHARS):  # most Values: no walk
        return
    _check_value(v, 0)


def _check_value(v: Any, depth: int) -> None:
    if depth > MAX_VALUE_DEPTH:
        raise DecodeError(f"value nested deeper than {MAX_VALUE_DEPTH}")
    t = type(v)
    if v is None or t is bool or t is int or t is bytes:
        return
    if t is str:
        _check_str(v)
    elif t is list:
        for x in v:
            _check_value(x, depth + 1)
    elif t is dict:
        for k, x in v.items():
            if type(k) is not str:
                raise DecodeError(f"map key {type(k).__name__} is not a str")
            _check_str(k)
            _check_value(x, depth + 1)
    else:
        raise DecodeError(f"{t.__name__} is not a Value")


def _check_str(v: str) -> None:
    if len(v) > MAX_STR_CHARS:
        raise DecodeError(f"string of {len(v)} characters exceeds {MAX_STR_CHARS}")


def check_value(v: Any) -> Any:
    """Validate a locally built Value (e.g. an operation argument) with the decoder's rules;
    returns it as the decoder would (tuples become lists, dicts sorted)."""
    try:
        value = _VALUE_DECODER.decode(_ENCODER.encode(v))
    except (msgspec.DecodeError, TypeError, OverflowError, RecursionError) as exc:
        raise DecodeError(f"not a Value: {exc}") from None
    _check_value(value, 0)
    return value


_VALUE_DECODER = msgspec.msgpack.Decoder()
