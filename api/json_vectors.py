"""Vectors read straight from a request's JSON bytes into numpy, without a Python float each.

A 384-d vector in JSON is 384 numbers: orjson makes a Python float of each, pydantic checks
each one's type, numpy converts each, and the garbage collector frees each; about half of an
upsert's server time and a tenth of a query's (docs/benchmarks.md, "Serving"). `extract`
instead scans the body once in a compiled kernel: it finds the arrays that are the value of
a `"vector"` key at the depth where the request model has them (1 in a query's body, 3 in
an upsert's `points` or a batch's `queries`), parses their numbers into one float64 buffer,
and returns the body with each such array emptied (`[]`), which orjson then parses in
microseconds. `place` puts each parsed vector (a float64 view) where its `[]` is; `loads` does the
three. From the
body's bytes to the float32 matrix, in process: 40 -> 20 us per 384-d vector of an upsert,
29 -> 23 us for a query's whole body.

It only ever speeds up a body it reads exactly as orjson would: anything it cannot vouch
for makes it return None, and the caller parses the body the ordinary way, which accepts or
rejects (with its usual message) exactly as before. That covers numbers outside JSON's
grammar, empty or nested arrays, keys written with escapes at that depth (one could spell
`vector`), the vectors not all where the model reads them, integers of more
than 15 digits, more than 19 significant digits, values that are not normal doubles (zero
excepted).

Numbers are converted with the Eisel-Lemire algorithm (D. Lemire, "Number parsing at a
gigabyte per second", Software: Practice and Experience, 2021): the decimal significand
times a 128-bit truncated power of five gives the correctly rounded double, exact halves
rounded to even: the one orjson and Python's `float` give. The value is a double, as
orjson's is, so the request model and the server convert it to float32 exactly as they
convert a parsed list (`server.validation.vectors`). An integer token (`3`, `-0`) is what
orjson would make an int of, and pydantic a float: the same value, except that `-0` as an
int is plain 0.
"""

from __future__ import annotations

import logging
from typing import Any

import numba
import numpy as np
import orjson

log = logging.getLogger("shoal.app")

_SMALLEST_Q, _LARGEST_Q = -342, 308  # decimal exponents whose powers of five are tabled


def _powers_of_five() -> np.ndarray:
    """(651, 2) uint64: the 128 most significant bits of 5**q for q in -342..308 (the high
    word first), truncated for q >= 0 and rounded up for q < 0 (an approximation from
    above of the reciprocal, scaled)."""
    table = np.empty((_LARGEST_Q - _SMALLEST_Q + 1, 2), dtype=np.uint64)
    mask = (1 << 64) - 1
    for q in range(_SMALLEST_Q, _LARGEST_Q + 1):
        if q >= 0:
            power = 5**q
            while power < 1 << 127:
                power <<= 1
            while power >= 1 << 128:
                power >>= 1
        else:
            power5 = 5**-q
            z = power5.bit_length()
            b = z + 127 if q >= -27 else 2 * z + 128
            power = (1 << b) // power5 + 1
            while power >= 1 << 128:
                power >>= 1
        table[q - _SMALLEST_Q] = (power >> 64, power & mask)
    return table


_POWERS = _powers_of_five()
_FAIL = -1
_SIGN = np.uint64(1) << np.uint64(63)


@numba.njit(nogil=True, cache=True, inline="always")
def _multiply(a: np.uint64, b: np.uint64) -> tuple[np.uint64, np.uint64]:
    """The 128-bit product of two uint64, as (high, low)."""
    mask = np.uint64(0xFFFFFFFF)
    a_lo, a_hi = a & mask, a >> np.uint64(32)
    b_lo, b_hi = b & mask, b >> np.uint64(32)
    lo_lo = a_lo * b_lo
    hi_lo = a_hi * b_lo
    lo_hi = a_lo * b_hi
    hi_hi = a_hi * b_hi
    cross = (lo_lo >> np.uint64(32)) + (hi_lo & mask) + lo_hi
    high = hi_hi + (hi_lo >> np.uint64(32)) + (cross >> np.uint64(32))
    low = (cross << np.uint64(32)) | (lo_lo & mask)
    return high, low


@numba.njit(nogil=True, cache=True, inline="always")
def _to_double(w: np.uint64, q: int, negative: bool, powers: np.ndarray) -> tuple[np.uint64, bool]:
    """The bits of w * 10**q correctly rounded, for 0 < w < 2**64; (0, False) when not
    settled here."""
    fail = np.uint64(0), False
    if q < _SMALLEST_Q or q > _LARGEST_Q:
        return fail
    lz = 0
    for step in (32, 16, 8, 4, 2, 1):  # shift the top bit of w to bit 63
        if w < np.uint64(1) << np.uint64(64 - step):
            w <<= np.uint64(step)
            lz += step
    index = q - _SMALLEST_Q
    high, low = _multiply(w, powers[index, 0])
    precision_mask = np.uint64(0x1FF)
    if (high & precision_mask) == precision_mask:
        second_high, _ = _multiply(w, powers[index, 1])
        low_sum = low + second_high
        if low_sum < low:
            high += np.uint64(1)
        low = low_sum
    upper = int(high >> np.uint64(63))
    shift = np.uint64(upper + 9)
    mantissa = high >> shift
    # floor(q * log2(10)) + 63, exact over the tabled range (217706 = 65536 * log2(10)).
    power2 = ((217706 * q) >> 16) + 63 + upper - lz + 1023
    if power2 <= 0:
        return fail  # subnormal: the ordinary parse
    # Only here can w * 10**q lie exactly halfway between two doubles: when the bits dropped
    # below the rounding bit are all zero. Then round to even (down).
    halfway_possible = low <= np.uint64(1) and -4 <= q <= 23
    if (
        halfway_possible
        and (mantissa & np.uint64(3)) == np.uint64(1)
        and (mantissa << shift) == high
    ):
        mantissa &= ~np.uint64(1)
    mantissa += mantissa & np.uint64(1)
    mantissa >>= np.uint64(1)
    if mantissa >= np.uint64(1) << np.uint64(53):
        mantissa = np.uint64(1) << np.uint64(52)
        power2 += 1
    mantissa &= ~(np.uint64(1) << np.uint64(52))
    if power2 >= 0x7FF:
        return fail  # beyond a double: orjson refuses it, with its message
    bits = mantissa | (np.uint64(power2) << np.uint64(52))
    if negative:
        bits |= _SIGN
    return bits, True


@numba.njit(nogil=True, cache=True, inline="always")
def _skip_space(body: np.ndarray, i: int) -> int:
    n = len(body)
    while i < n and (body[i] == 32 or body[i] == 10 or body[i] == 13 or body[i] == 9):
        i += 1
    return i


@numba.njit(nogil=True, cache=True, inline="always")
def _digits(body: np.ndarray, i: int, w: np.uint64) -> tuple[np.uint64, int]:
    """Fold the digits from `i` on into w (wrapping past 19: the caller counts them)."""
    n = len(body)
    while i < n:
        digit = np.uint64(body[i]) - np.uint64(48)
        if digit > np.uint64(9):
            break
        w = w * np.uint64(10) + digit
        i += 1
    return w, i


@numba.njit(nogil=True, cache=True)
def _significant(body: np.ndarray, start: int, end: int) -> int:
    """Digits in body[start:end] from the first nonzero one on (the '.' skipped)."""
    i = start
    while i < end and (body[i] == 48 or body[i] == 46):
        i += 1
    count = 0
    while i < end:
        count += body[i] != 46
        i += 1
    return count


@numba.njit(nogil=True, cache=True, inline="always")
def _number(body: np.ndarray, i: int, powers: np.ndarray) -> tuple[np.uint64, int]:
    """Parse the JSON number at `i`; (its double's bits, index after it), or (0, -1) when
    not ours."""
    fail = np.uint64(0), _FAIL
    n = len(body)
    negative = i < n and body[i] == 45  # '-'
    if negative:
        i += 1
    start = i
    if i >= n or not 48 <= body[i] <= 57:
        return fail
    if body[i] == 48:  # '0': no other digit may follow it before '.', 'e' or the end
        w, i = np.uint64(0), i + 1
        if i < n and 48 <= body[i] <= 57:
            return fail
    else:
        w, i = _digits(body, i, np.uint64(0))
    digits = i - start
    exponent = 0
    integer = True
    if i < n and body[i] == 46:  # '.'
        integer = False
        fraction = i + 1
        w, i = _digits(body, fraction, w)
        if i == fraction:
            return fail
        exponent = fraction - i
        digits += i - fraction
    if digits > 19 and _significant(body, start, i) > 19:
        return fail  # w wrapped: the ordinary parse
    if i < n and (body[i] == 101 or body[i] == 69):  # 'e' / 'E'
        integer = False
        i += 1
        exponent_negative = False
        if i < n and (body[i] == 43 or body[i] == 45):
            exponent_negative = body[i] == 45
            i += 1
        if i >= n or not 48 <= body[i] <= 57:
            return fail
        written = 0
        while i < n and 48 <= body[i] <= 57:
            if written < 10000:
                written = written * 10 + (body[i] - 48)
            i += 1
        exponent += -written if exponent_negative else written
    if integer and digits > 15:
        return fail  # a large int: pydantic's own checks, the ordinary parse
    if w == np.uint64(0):
        # An int zero is +0 whatever its sign (Python's -0 == 0); a float keeps it.
        return (_SIGN if negative and not integer else np.uint64(0)), i
    bits, settled = _to_double(w, exponent, negative, powers)
    if not settled:
        return fail
    return bits, i


@numba.njit(nogil=True, cache=True)
def _grown(array: np.ndarray) -> np.ndarray:
    bigger = np.empty(2 * len(array), dtype=array.dtype)
    bigger[: len(array)] = array
    return bigger


@numba.njit(nogil=True, cache=True)
def _extract(
    body: np.ndarray, depth_wanted: int, powers: np.ndarray
) -> tuple[np.ndarray, int, np.ndarray, np.ndarray, int]:
    """(rewritten body, its length, values, vector ends in `values`, vectors) or a length
    of -1 when the body is not one this module may speed up."""
    n = len(body)
    out = np.empty(n, dtype=np.uint8)
    # Sized for numbers of 8 bytes or more with their commas (a float32 value's repr is
    # longer): 2 bytes per byte of body with `out`, where orjson's floats take about 3.
    values = np.empty(n // 8 + 16, dtype=np.uint64)  # bits of doubles
    ends = np.empty(16, dtype=np.int64)
    nothing = (out, _FAIL, values, ends, 0)
    written = 0
    count = 0
    vectors = 0
    depth = 0
    i = 0
    while i < n:
        c = body[i]
        if c == 34:  # '"': a string, copied whole; a key if ':' follows it
            start = i
            escaped = False
            i += 1
            while i < n and body[i] != 34:
                if body[i] == 92:  # '\\': skip the escaped character
                    escaped = True
                    i += 1
                i += 1
            if i >= n:
                return nothing
            i += 1
            for j in range(start, i):
                out[written] = body[j]
                written += 1
            if depth != depth_wanted:
                continue
            colon = _skip_space(body, i)
            if colon >= n or body[colon] != 58:  # ':' follows a key, not a value
                continue
            if escaped:
                return nothing  # a key spelt with escapes could be "vector": not vouched for
            if i - start != 8 or not (
                body[start + 1] == 118  # v
                and body[start + 2] == 101  # e
                and body[start + 3] == 99  # c
                and body[start + 4] == 116  # t
                and body[start + 5] == 111  # o
                and body[start + 6] == 114  # r
            ):
                continue
            opening = _skip_space(body, colon + 1)
            if opening >= n or body[opening] != 91:  # '[': another type, the model's business
                continue
            for j in range(i, opening + 1):
                out[written] = body[j]
                written += 1
            i = _skip_space(body, opening + 1)
            if i >= n or body[i] == 93:
                return nothing  # empty: its error is the ordinary parse's
            while True:
                bits, i = _number(body, i, powers)
                if i < 0:
                    return nothing
                if count == len(values):
                    values = _grown(values)
                values[count] = bits
                count += 1
                i = _skip_space(body, i)
                if i >= n:
                    return nothing
                if body[i] == 44:  # ','
                    i = _skip_space(body, i + 1)
                    continue
                if body[i] == 93:  # ']'
                    break
                return nothing
            out[written] = 93
            written += 1
            i += 1
            if vectors == len(ends):
                ends = _grown(ends)
            ends[vectors] = count
            vectors += 1
            continue
        if c == 123 or c == 91:  # '{' '['
            depth += 1
        elif c == 125 or c == 93:  # '}' ']'
            depth -= 1
            if depth < 0:
                return nothing
        out[written] = c
        written += 1
        i += 1
    return out, written, values, ends, vectors


class ParsedVector(np.ndarray):
    """A vector this module parsed (float64): the request model takes it as its checks of a
    list of JSON floats would (api/models/common.py); no JSON parser makes one."""


class Extracted:
    """A body with its vectors taken out: `body` to parse, `vectors` (float64 views) to put
    back in document order."""

    __slots__ = ("body", "vectors")

    def __init__(self, body: bytes, vectors: list[np.ndarray]):
        self.body = body
        self.vectors = vectors


def extract(raw: bytes, depth: int) -> Extracted | None:
    """The vectors at `depth` parsed (1: the body's own `vector`; 3: the `vector` of each
    member of a list in the body), or None when the body should be parsed the ordinary way
    (see the module's docstring)."""
    out, length, values, ends, vectors = _extract(
        np.frombuffer(raw, dtype=np.uint8), depth, _POWERS
    )
    if length < 0 or vectors == 0:
        return None
    bounds = [0, *ends[:vectors].tolist()]
    parsed = values.view(np.float64).view(ParsedVector)
    rows = [parsed[bounds[i] : bounds[i + 1]] for i in range(vectors)]
    return Extracted(out[:length].tobytes(), rows)


def place(body: Any, extracted: Extracted, items: str | None) -> bool:
    """Put the parsed vectors where their emptied arrays are: `body["vector"]` (`items`
    None) or `body[items][i]["vector"]`. False when they are not exactly there, one each in
    order (a duplicate key, an array elsewhere at that depth): parse the ordinary way."""
    if type(body) is not dict:
        return False
    vectors = extracted.vectors
    if items is None:
        if len(vectors) != 1 or body.get("vector") != []:
            return False
        body["vector"] = vectors[0]
        return True
    members = body.get(items)
    if type(members) is not list:
        return False
    placed = 0
    for member in members:
        if type(member) is dict and member.get("vector") == []:
            if placed == len(vectors):
                return False
            member["vector"] = vectors[placed]
            placed += 1
    return placed == len(vectors)


def loads(raw: bytes, items: str | None) -> Any:
    """The body parsed with its vectors as float64 arrays: `items` None for a body whose own
    `vector` it is, else the list whose members hold them. None: parse the body the
    ordinary way (which also answers every malformed body)."""
    extracted = extract(raw, 1 if items is None else 3)
    if extracted is None:
        return None
    try:
        body = orjson.loads(extracted.body)
    except orjson.JSONDecodeError:
        return None
    return body if place(body, extracted, items) else None


def warm_up() -> None:
    """Compile the kernel (or load it from numba's cache) before the first request needs it:
    seconds on a fresh cache. Only an optimisation: a failure is logged, and the first
    request compiles it instead."""
    try:
        extract(b'{"points":[{"vector":[1.5,-2e-3]}]}', 3)
    except Exception:
        log.warning("could not compile the JSON vector kernel ahead of use", exc_info=True)
