"""Packed sort keys: the ordering contract (docs/contract.md, csrc/common/order_key.h) in Triton.

Every kernel sorts a row's elements by one int64 per element::

    key = signed_order_key(bits) << 32 | column

``signed_order_key`` is order_key.h's transform shifted into signed-integer order (the
kernels compare int64, not uint64): canonicalise first (every NaN -> the quiet +NaN, so all
NaNs tie and sort after +inf; -0.0 -> +0.0, so the zeros tie), then flip the magnitude bits
of negatives. Signed order of the result is the contract's value order; order_key.h's
unsigned key is exactly this value XOR the sign bit.

The column in the low 32 bits makes keys unique, so an (unstable) ``tl.sort`` of the keys is
a *stable* argsort: ties come out in column order, as with ``torch.sort(stable=True)``.
Kernels read and write bit patterns only (row addresses are cast to int16/int32 pointers), so NaN
payloads in S land in W untouched.

``KIND`` (constexpr) selects the format: 0 float32, 1 float16, 2 bfloat16.
"""

import triton
import triton.language as tl

KIND_FLOAT32 = 0
KIND_FLOAT16 = 1
KIND_BFLOAT16 = 2

# Padding lanes get the largest key: they sort after every real element (a real key's top
# half is at most the +qNaN key, 0x7fc00000, below INT64_MAX's 0x7fffffff).
PAD_KEY = 0x7FFFFFFFFFFFFFFF


@triton.jit
def signed_order_key(bits, KIND: tl.constexpr):
    """int32 key whose signed order is the contract's order; ``bits`` are the raw int32
    (float32) or int16 (float16/bfloat16) patterns."""
    if KIND == 0:
        x = bits.to(tl.int32)
        mag = x & 0x7FFFFFFF
        x = tl.where(mag > 0x7F800000, 0x7FC00000, x)  # every NaN -> +qNaN
        x = tl.where(mag == 0, 0, x)  # -0.0 -> +0.0
        return x ^ ((x >> 31) & 0x7FFFFFFF)  # negatives: flip the magnitude bits
    else:
        x = bits.to(tl.int32)  # sign-extends the 16-bit pattern
        mag = x & 0x7FFF
        if KIND == 1:
            x = tl.where(mag > 0x7C00, 0x7E00, x)
        else:
            x = tl.where(mag > 0x7F80, 0x7FC0, x)
        x = tl.where(mag == 0, 0, x)
        return x ^ ((x >> 15) & 0x7FFF)


@triton.jit
def packed_keys(bits, cols, valid, KIND: tl.constexpr):
    """int64 keys ``signed_order_key(bits) << 32 | cols``; PAD_KEY where not ``valid``."""
    key = (signed_order_key(bits, KIND).to(tl.int64) << 32) | cols.to(tl.int64)
    return tl.where(valid, key, 0x7FFFFFFFFFFFFFFF)


@triton.jit
def key_column(keys):
    """The column packed in the low 32 bits of a key."""
    return (keys & 0xFFFFFFFF).to(tl.int32)
