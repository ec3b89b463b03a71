"""PostgreSQL's binary numeric (base-10000 NumericVar) from Arrow decimals and unsigned integers."""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
from numpy.typing import NDArray

from ingest.stages.encode_layout import Fixed, Ints, empty


def decimal(arr: pa.Array, precision: int, scale: int) -> list[Fixed]:
    """Numeric parts of a decimal column: 64-bit math for p <= 18, 32-bit limbs above.

    Args:
        arr: the column as an Arrow decimal array (any width; widened to decimal128).
        precision: the column's precision.
        scale: the column's scale.
    """
    n = len(arr)
    if arr.type != pa.decimal128(precision, scale):  # e.g. a narrower decimal32/64 export
        arr = arr.cast(pa.decimal128(precision, scale))
    words = np.frombuffer(arr.buffers()[1], dtype=np.uint64)[2 * arr.offset : 2 * (arr.offset + n)]
    lo, hi = words[0::2], words[1::2]
    if arr.null_count:  # zero the (arbitrary) values under nulls
        valid = arr.is_valid().to_numpy(zero_copy_only=False)
        lo = np.multiply(lo, valid, out=empty(n, np.uint64))
        hi = np.multiply(hi, valid, out=empty(n, np.uint64))
    neg = np.less(hi.view(np.int64), 0, out=empty(n, np.bool_))
    frac_groups = math.ceil(scale / 4)
    pad = 10 ** (4 * frac_groups - scale)  # align the fraction to whole base-10000 digits
    if precision > 18 or scale > 16:  # beyond what 64-bit arithmetic holds after padding
        int_groups = max(0, math.ceil((precision - scale) / 4))
        matrix = _wide_digits(lo, hi, neg, pad, int_groups + frac_groups)
        return numeric(neg, list(matrix.T), int_groups, scale)
    magnitude: Ints = np.abs(lo.view(np.int64), out=empty(n, np.int64)).view(np.uint64)
    # Most batches' magnitudes fit 32 bits, where division is ~4x faster (the scale's power too).
    magnitude = _narrow(magnitude, max(int(magnitude.max()) + 1, 10**scale))
    kind = magnitude.dtype.type
    whole = np.floor_divide(magnitude, 10**scale, out=empty(n, kind))
    digits = base10000(whole, groups(int(whole.max())))
    # Not in place: with one integer digit, `digits` holds `whole` itself. (np.divmod would
    # do both in one call, at 4 times the CPU: it does not divide by a constant's reciprocal.)
    product = np.multiply(whole, 10**scale, out=empty(n, kind))
    fraction = np.subtract(magnitude, product, out=magnitude)
    if pad != 1:
        # The padded fraction stays below 10**(4 * frac_groups), which 32 bits hold up to 2 groups.
        if frac_groups > 2 and fraction.dtype != np.uint64:
            fraction = fraction.astype(np.uint64)
        fraction = np.multiply(fraction, pad, out=fraction)
    return numeric(neg, digits + base10000(fraction, frac_groups), len(digits), scale)


def numeric(
    neg: NDArray[np.bool_] | None, digits: list[Ints], int_groups: int | None, dscale: int
) -> list[Fixed]:
    """NumericVar parts with one digit count per batch: numeric_recv strips the zero digits."""
    int_groups = len(digits) if int_groups is None else int_groups
    while int_groups and digits and not digits[0].any():
        digits, int_groups = digits[1:], int_groups - 1
    while len(digits) > int_groups and not digits[-1].any():
        digits = digits[:-1]
    sign: int | Ints = 0
    if neg is not None and neg.any():
        sign = np.multiply(neg, np.uint16(0x4000), out=empty(len(neg), np.uint16))
    head = [len(digits), int_groups - 1 if digits else 0, sign, dscale]
    return [Fixed(">i2", v) for v in head] + [Fixed(">i2", d) for d in digits]


def groups(top: int) -> int:
    """How many base-10000 digits the integer `top` needs (0 for 0)."""
    count = 0
    while top:
        top, count = top // 10_000, count + 1
    return count


def _narrow(values: Ints, bound: int) -> Ints:
    """Values known to be below `bound` as uint32 when they fit, where division is ~4x faster."""
    if bound > 2**32 or values.dtype == np.uint32:
        return values
    narrow = empty(len(values), np.uint32)
    np.copyto(narrow, values, casting="unsafe")
    return narrow


def base10000(values: Ints, count: int) -> list[Ints]:
    """Split non-negative integers into `count` base-10000 digits, most significant first."""
    if count == 0:
        return []
    values = _narrow(values, 10_000**count)
    digits: list[Ints] = []
    n, kind = len(values), values.dtype.type
    for _ in range(count - 1):
        quotient = np.floor_divide(values, 10_000, out=empty(n, kind))
        product = np.multiply(quotient, 10_000, out=empty(n, kind))
        digits.append(np.subtract(values, product, out=product))
        values = quotient
    return [values, *reversed(digits)]


def _wide_digits(lo: Ints, hi: Ints, neg: NDArray[np.bool_], shift: int, count: int) -> Ints:
    """Base-10000 digits of |128-bit two's complement| * shift, by long division on 32-bit limbs."""
    mask = np.uint64(0xFFFF_FFFF)
    lo_mag = np.where(neg, ~lo + np.uint64(1), lo)
    hi_mag = np.where(neg, ~hi + (lo == 0).astype(np.uint64), hi)
    # Five limbs (160 bits), most significant first: 10**38 * 1000 needs more than 128 bits.
    limbs = [np.zeros_like(lo), hi_mag >> 32, hi_mag & mask, lo_mag >> 32, lo_mag & mask]
    carry = np.zeros_like(lo)
    for i in range(len(limbs) - 1, -1, -1):
        product = limbs[i] * np.uint64(shift) + carry
        limbs[i], carry = product & mask, product >> 32
    digits = np.empty((count, len(lo)), dtype=np.uint64)
    for k in range(count - 1, -1, -1):
        rest = np.zeros_like(lo)
        for i, limb in enumerate(limbs):
            current = (rest << 32) | limb
            limbs[i] = current // 10_000
            rest = current - limbs[i] * 10_000
        digits[k] = rest
    return digits.T
