"""Canonical encoding of every message that crosses a process boundary, and its strict decoder.

Why msgpack: its C implementation encodes and decodes a typical protocol message in a few
microseconds (measure with ``python -m benchmarks.wire_codec``), it has a native ``bin`` type (no
base64 of signatures and digests), and its output is deterministic for a given value as long as
maps are written in a fixed key order, which this module enforces. A hand-written format would
be slower in Python and would be one more parser to harden.

The layout of a message is a positional msgpack array ``[kind, field_1, ..., field_k]``. Field
names never travel, so the encoding is compact and there is exactly one encoding per value.

Rules of this module:
- Messages are frozen, slotted dataclasses declared with ``@message(kind)``; a field's type is
  one of ``int``, ``bool``, ``str``, ``bytes``, ``tuple[T, ...]``, ``T | None``, another message
  class, or ``Value`` (a bounded JSON-like value: operation arguments and read results).
- ``decode`` trusts nothing: it rejects wrong types (``True`` is not an ``int`` here), wrong
  field counts, unknown kinds, oversized fields, integers outside 64 bits, nesting that is too
  deep, trailing bytes and non-canonical encodings, always with ``DecodeError``. It never
  unpickles.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, Callable

import msgpack

from dtm_ray.errors import DecodeError, EncodeError

MAX_MESSAGE_BYTES = 8 * 1024 * 1024
MAX_FIELD_BYTES = 4 * 1024 * 1024
MAX_STR_CHARS = 64 * 1024
MAX_ITEMS = 100_000
MAX_VALUE_DEPTH = 8
INT_MIN, INT_MAX = -(2**63), 2**64 - 1


class Value:
    """Marker type for a bounded JSON-like value: None, bool, int, str, bytes, list, and dict
    with str keys, nested at most ``MAX_VALUE_DEPTH`` deep. Dicts encode with sorted keys."""


_KIND_TO_CLASS: dict[int, type] = {}
_CLASS_TO_KIND: dict[type, int] = {}
_DECODERS: dict[type, list[tuple[str, Callable[[Any], Any]]]] = {}
_ENCODERS: dict[type, list[tuple[str, Callable[[Any], Any]]]] = {}


def message(kind: int):
    """Class decorator: make ``cls`` a frozen slotted dataclass registered under ``kind``."""

    def wrap(cls: type) -> type:
        if kind in _KIND_TO_CLASS:
            raise EncodeError(f"message kind {kind} already used by {_KIND_TO_CLASS[kind].__name__}")
        dc = dataclasses.dataclass(frozen=True, slots=True)(cls)
        _KIND_TO_CLASS[kind] = dc
        _CLASS_TO_KIND[dc] = kind
        return dc

    return wrap


def kind_of(cls_or_obj: Any) -> int:
    cls = cls_or_obj if isinstance(cls_or_obj, type) else type(cls_or_obj)
    return _CLASS_TO_KIND[cls]


# ---------------------------------------------------------------------------------------------
# Encoding


def encode(msg: Any) -> bytes:
    """The canonical bytes of ``msg`` (a registered message)."""
    try:
        return msgpack.packb(_to_wire(msg), use_bin_type=True)
    except (TypeError, ValueError, OverflowError) as exc:
        raise EncodeError(f"cannot encode {type(msg).__name__}: {exc}") from exc


def _to_wire(msg: Any) -> list:
    cls = type(msg)
    if cls not in _CLASS_TO_KIND:
        raise EncodeError(f"{cls.__name__} is not a registered message")
    out = [_CLASS_TO_KIND[cls]]
    for name, enc in _encoders(cls):
        out.append(enc(getattr(msg, name)))
    return out


def _encoders(cls: type) -> list[tuple[str, Callable[[Any], Any]]]:
    enc = _ENCODERS.get(cls)
    if enc is None:
        enc = [(name, _encoder_for(tp)) for name, tp in _field_types(cls)]
        _ENCODERS[cls] = enc
    return enc


def _encoder_for(tp: Any) -> Callable[[Any], Any]:
    if tp in (int, bool, str, bytes):
        return _identity
    if tp is Value:
        return _canonical_value
    if isinstance(tp, type) and tp in _CLASS_TO_KIND:
        return _to_wire
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is tuple:
        inner = _encoder_for(args[0])
        return lambda xs: [inner(x) for x in xs]
    if origin in (typing.Union, types.UnionType):
        inner = _encoder_for(_non_none(args))
        return lambda x: None if x is None else inner(x)
    raise EncodeError(f"unsupported field type {tp!r}")


def _identity(x: Any) -> Any:
    return x


def _canonical_value(v: Any) -> Any:
    if isinstance(v, dict):
        return {k: _canonical_value(v[k]) for k in sorted(v)}
    if isinstance(v, (list, tuple)):
        return [_canonical_value(x) for x in v]
    return v


# ---------------------------------------------------------------------------------------------
# Decoding


def decode(data: bytes, expected: type | tuple[type, ...] | None = None) -> Any:
    """Decode untrusted bytes into a message; ``expected`` restricts the acceptable classes."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise DecodeError(f"payload must be bytes, not {type(data).__name__}")
    if len(data) > MAX_MESSAGE_BYTES:
        raise DecodeError(f"message of {len(data)} bytes exceeds {MAX_MESSAGE_BYTES}")
    try:
        obj = msgpack.unpackb(
            data,
            raw=False,
            use_list=True,
            strict_map_key=True,
            max_bin_len=MAX_FIELD_BYTES,
            max_str_len=MAX_FIELD_BYTES,
            max_array_len=MAX_ITEMS,
            max_map_len=MAX_ITEMS,
            max_ext_len=0,
        )
    except msgpack.ExtraData as exc:
        raise DecodeError("trailing bytes after the message") from exc
    except Exception as exc:  # msgpack raises several unrelated types on garbage
        raise DecodeError(f"not msgpack: {type(exc).__name__}: {exc}") from exc
    msg = _from_wire(obj)
    if expected is not None and not isinstance(msg, expected):
        raise DecodeError(f"expected {_names(expected)}, got {type(msg).__name__}")
    # One value, one encoding: msgpack admits wider-than-needed integer and length formats, so
    # re-encode and compare. Digests and equivocation checks can then work on bytes alone.
    if encode(msg) != data:
        raise DecodeError("non-canonical encoding")
    return msg


def _names(expected: type | tuple[type, ...]) -> str:
    if isinstance(expected, tuple):
        return " or ".join(t.__name__ for t in expected)
    return expected.__name__


def _from_wire(obj: Any, expected: type | None = None) -> Any:
    if type(obj) is not list or not obj:
        raise DecodeError("a message must be a non-empty array")
    kind = obj[0]
    if type(kind) is not int or kind not in _KIND_TO_CLASS:
        raise DecodeError(f"unknown message kind {kind!r}")
    cls = _KIND_TO_CLASS[kind]
    if expected is not None and cls is not expected:
        raise DecodeError(f"expected {expected.__name__}, got {cls.__name__}")
    decoders = _decoders(cls)
    if len(obj) != len(decoders) + 1:
        raise DecodeError(f"{cls.__name__} needs {len(decoders)} fields, got {len(obj) - 1}")
    values = {}
    for (name, dec), raw in zip(decoders, obj[1:]):
        try:
            values[name] = dec(raw)
        except DecodeError as exc:
            raise DecodeError(f"{cls.__name__}.{name}: {exc}") from None
    return cls(**values)


def _decoders(cls: type) -> list[tuple[str, Callable[[Any], Any]]]:
    dec = _DECODERS.get(cls)
    if dec is None:
        dec = [(name, _decoder_for(tp)) for name, tp in _field_types(cls)]
        _DECODERS[cls] = dec
    return dec


def _decoder_for(tp: Any) -> Callable[[Any], Any]:
    if tp is int:
        return _check_int
    if tp is bool:
        return _check_bool
    if tp is str:
        return _check_str
    if tp is bytes:
        return _check_bytes
    if tp is Value:
        return lambda v: _check_value(v, 0)
    if isinstance(tp, type) and tp in _CLASS_TO_KIND:
        return lambda v: _from_wire(v, tp)
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is tuple:
        if len(args) != 2 or args[1] is not Ellipsis:
            raise EncodeError(f"only tuple[T, ...] is supported, not {tp!r}")
        inner = _decoder_for(args[0])
        return lambda v: _check_tuple(v, inner)
    if origin in (typing.Union, types.UnionType):
        inner = _decoder_for(_non_none(args))
        return lambda v: None if v is None else inner(v)
    raise EncodeError(f"unsupported field type {tp!r}")


def _check_int(v: Any) -> int:
    if type(v) is not int:
        raise DecodeError(f"expected int, got {type(v).__name__}")
    return v


def _check_bool(v: Any) -> bool:
    if type(v) is not bool:
        raise DecodeError(f"expected bool, got {type(v).__name__}")
    return v


def _check_str(v: Any) -> str:
    if type(v) is not str:
        raise DecodeError(f"expected str, got {type(v).__name__}")
    if len(v) > MAX_STR_CHARS:
        raise DecodeError(f"string of {len(v)} characters exceeds {MAX_STR_CHARS}")
    return v


def _check_bytes(v: Any) -> bytes:
    if type(v) is not bytes:
        raise DecodeError(f"expected bytes, got {type(v).__name__}")
    return v


def _check_tuple(v: Any, inner: Callable[[Any], Any]) -> tuple:
    if type(v) is not list:
        raise DecodeError(f"expected array, got {type(v).__name__}")
    return tuple(inner(x) for x in v)


def _check_value(v: Any, depth: int) -> Any:
    if depth > MAX_VALUE_DEPTH:
        raise DecodeError(f"value nested deeper than {MAX_VALUE_DEPTH}")
    t = type(v)
    if v is None or t in (bool, int, bytes):
        return v
    if t is str:
        return _check_str(v)
    if t is list:
        return [_check_value(x, depth + 1) for x in v]
    if t is dict:
        keys = list(v)
        if keys != sorted(keys):
            raise DecodeError("map keys are not in canonical (sorted) order")
        return {_check_str(k): _check_value(x, depth + 1) for k, x in v.items()}
    raise DecodeError(f"{t.__name__} is not a Value")


# ---------------------------------------------------------------------------------------------
# Shared helpers


def _field_types(cls: type) -> list[tuple[str, Any]]:
    hints = typing.get_type_hints(cls, globalns=_globals_of(cls), include_extras=False)
    return [(f.name, hints[f.name]) for f in dataclasses.fields(cls)]


def _globals_of(cls: type) -> dict[str, Any]:
    import sys

    ns = dict(vars(sys.modules[cls.__module__]))
    ns.setdefault("Value", Value)
    return ns


def _non_none(args: tuple) -> Any:
    rest = [a for a in args if a is not type(None)]
    if len(rest) != 1:
        raise EncodeError(f"only Optional[T] unions are supported, not {args!r}")
    return rest[0]


def check_value(v: Any) -> Any:
    """Validate a locally built Value (e.g. an operation argument) with the decoder's rules."""
    return _check_value(msgpack.unpackb(msgpack.packb(_canonical_value(v), use_bin_type=True), raw=False), 0)
