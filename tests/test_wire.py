"""The codec: round trips, one encoding per value, and a strict decoder for untrusted bytes."""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dtm_ray import wire
from dtm_ray.errors import DecodeError, EncodeError
from dtm_ray.wire import Message, Value, decode, encode, message


class Inner(Message, tag=900):
    name: str
    blob: bytes


class Inner2(Message, tag=903):
    x: int


class Leaf(Message, tag=904):
    value: Value


class Holder(Message, tag=905):
    leaves: tuple[Leaf, ...]
    maybe: Leaf | None


class Sample(Message, tag=901):
    number: int
    flag: bool
    label: str
    items: tuple[int, ...]
    inner: Inner
    maybe: Inner | None
    value: Value


def sample(**overrides) -> Sample:
    fields = dict(number=7, flag=True, label="x", items=(1, 2, 3), inner=Inner("a", b"\x00\x01"),
                  maybe=None, value={"b": [1, "two", None], "a": {"z": b"3"}})
    fields.update(overrides)
    return Sample(**fields)


def test_round_trip_and_equality():
    msg = sample()
    assert decode(encode(msg)) == msg
    assert decode(encode(msg), Sample) == msg


def test_dict_values_encode_canonically_whatever_the_insertion_order():
    assert encode(sample(value={"a": 1, "b": 2})) == encode(sample(value={"b": 2, "a": 1}))


def test_messages_are_frozen():
    with pytest.raises(AttributeError):
        sample().number = 8  # type: ignore[misc]


def raw(*fields) -> bytes:
    return msgspec.msgpack.encode([901, *fields])


GOOD = [7, True, "x", [1], [900, "a", b""], None, None]


@pytest.mark.parametrize(
    "payload, complaint",
    [
        (raw(*GOOD) + b"\x00", "trailing"),
        (raw(*GOOD)[:-3], "not msgpack"),
        (msgspec.msgpack.encode([999, 1]), r"Invalid value 999 - at `\$\[0\]`"),  # an unknown kind
        (msgspec.msgpack.encode({"kind": 901}), "Expected `array`, got `object`"),
        (msgspec.msgpack.encode([]), "Expected `array` of at least length 1"),
        (raw(*GOOD[:-1]), "Expected `array` of at least length 8, got 7"),
        (raw(*GOOD, 5), "non-canonical"),  # one field too many: msgspec skips it, re-encoding does not
        (raw(True, *GOOD[1:]), "Expected `int`, got `bool`"),
        (raw(7, 1, *GOOD[2:]), "Expected `bool`, got `int`"),
        (raw(7, True, b"x", *GOOD[3:]), "Expected `str`, got `bytes`"),
        (raw(7, True, "x", [1, "2"], *GOOD[4:]), "Expected `int`, got `str`"),
        (raw(7, True, "x", [True], *GOOD[4:]), "Expected `int`, got `bool`"),
        (raw(7, True, "x", [1], [901, "a", b""], *GOOD[5:]), r"Invalid value 901 - at `\$\[5\]\[0\]`"),
        (raw(7, True, "x", [1], [900, "a", "not bytes"], None, None), "Expected `bytes`, got `str`"),
        (raw(*GOOD[:-1], {"b": 1, "a": 2}), "canonical"),
        (raw(*GOOD[:-1], 1.5), "float is not a Value"),
        (raw(*GOOD[:-1], [1, msgspec.msgpack.Ext(1, b"x")]), "Ext is not a Value"),
        (raw(*GOOD[:-1], {"a": {1: 2}}), "map key int is not a str"),
        (raw(*GOOD[:-1], [[[[[[[[[[[1]]]]]]]]]]]), "deeper"),
        (raw(*GOOD[:-1], ["x" * (wire.MAX_STR_CHARS + 1)]), "exceeds"),
        (raw(7, True, "x" * (wire.MAX_STR_CHARS + 1), *GOOD[3:]), f"length <= {wire.MAX_STR_CHARS}"),
        (raw(7, True, "x", [0] * (wire.MAX_ITEMS + 1), *GOOD[4:]), f"length <= {wire.MAX_ITEMS}"),
        (raw(7, True, "x", [1], [900, "a", bytes(wire.MAX_FIELD_BYTES + 1)], None, None),
         f"length <= {wire.MAX_FIELD_BYTES}"),
        (msgspec.msgpack.encode(msgspec.msgpack.Ext(1, b"x")), "got `ext`"),
        (b"", "not msgpack"),
        (b"\xc1", "not msgpack"),
        # The field 7 written as a uint8 (0xcc 0x07) instead of a positive fixint: same value, other bytes.
        (raw(*GOOD).replace(b"\x07\xc3", b"\xcc\x07\xc3", 1), "non-canonical"),
    ],
)
def test_decoder_rejects_malformed_input(payload, complaint):
    with pytest.raises(DecodeError, match=complaint):
        decode(payload)


def test_decoder_rejects_oversized_messages_before_parsing():
    with pytest.raises(DecodeError, match="exceeds"):
        decode(b"\x00" * (wire.MAX_MESSAGE_BYTES + 1))


@pytest.mark.parametrize("expected", [None, Holder, Leaf])
def test_values_nested_in_other_messages_are_checked_too(expected):
    """Value fields are checked wherever they sit: in a tuple of messages, in an optional one,
    and whichever decoder (any message, or one class) saw its class first."""
    assert decode(encode(Leaf([1])), expected and Leaf) == Leaf([1])
    deep: object = 1
    for _ in range(wire.MAX_VALUE_DEPTH + 2):
        deep = [deep]
    for bad in (Holder((Leaf(1), Leaf(deep)), None), Holder((), Leaf(1.5))):
        with pytest.raises(DecodeError, match="deeper|float is not a Value"):
            decode(encode(bad), expected and Holder)


def test_decoder_rejects_the_wrong_expected_class():
    with pytest.raises(DecodeError, match=r"invalid Inner: Invalid value 901 - at `\$\[0\]`"):
        decode(encode(sample()), Inner)
    with pytest.raises(DecodeError, match="invalid Inner or Inner2"):
        decode(encode(sample()), (Inner, Inner2))
    assert decode(encode(Inner2(1)), (Inner, Inner2)) == Inner2(1)


def test_decoder_rejects_non_bytes():
    with pytest.raises(DecodeError):
        decode("text")  # type: ignore[arg-type]


def test_encoding_an_unregistered_object_is_a_local_error():
    with pytest.raises(EncodeError):
        encode(object())
    with pytest.raises(EncodeError):
        encode({"not": "a message"})
    with pytest.raises(EncodeError, match="cannot encode"):
        encode(sample(number=2**64))


def test_check_value_refuses_what_the_decoder_would_refuse():
    deep: object = 1
    for _ in range(100_000):  # beyond the interpreter's recursion limit, not only MAX_VALUE_DEPTH
        deep = [deep]
    for bad in (deep, [[[[[[[[[[[1]]]]]]]]]]], 1.5, {1: 2}, object(), 2**70, "x" * (wire.MAX_STR_CHARS + 1)):
        with pytest.raises(DecodeError):
            wire.check_value(bad)
    assert wire.check_value({"b": (1, 2), "a": None}) == {"a": None, "b": [1, 2]}


def test_a_kind_is_used_once():
    with pytest.raises(EncodeError, match="kind 900 already used by Inner"):
        class Twin(Message, tag=900):
            x: int


def test_the_message_decorator_makes_the_same_struct():
    @message(902)
    class Old:
        x: int

        def double(self) -> int:
            return 2 * self.x

    assert isinstance(Old(2), Message) and Old(2).double() == 4
    assert decode(encode(Old(2))) == Old(2) and encode(Old(2)) == msgspec.msgpack.encode([902, 2])


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_never_crash_the_decoder(data):
    try:
        decode(data)
    except DecodeError:
        pass


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_every_truncation_and_bit_flip_is_rejected_or_decodes_to_a_valid_message(data):
    good = encode(sample())
    cut = data.draw(st.integers(0, len(good) - 1))
    with pytest.raises(DecodeError):
        decode(good[:cut])
    pos = data.draw(st.integers(0, len(good) - 1))
    bit = data.draw(st.integers(0, 7))
    flipped = bytearray(good)
    flipped[pos] ^= 1 << bit
    try:
        msg = decode(bytes(flipped))
    except DecodeError:
        return
    # A flip that still decodes must give a well-typed message that re-encodes to the same bytes.
    assert encode(msg) == bytes(flipped)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text(max_size=20) | st.binary(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)


@settings(max_examples=200, deadline=None)
@given(json_values)
def test_values_round_trip(value):
    msg = sample(value=value)
    assert decode(encode(msg)).value == msg.value
