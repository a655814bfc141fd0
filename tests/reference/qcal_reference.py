"""Independent numpy reference of qcal's observer numerics (SPEC §2-§8, §10, §11).

Written from SPEC.md and from the PyTorch / compressed-tensors / llmcompressor
semantics it restates; it shares no code with the C++ implementation. Values of
every dtype are carried as float32 numpy arrays that hold exactly representable
values of the observed dtype; each elementwise step is done in float32 and then
rounded to the dtype of PyTorch's result (SPEC §8).

Decisions taken where the SPEC is open (each as PyTorch / compressed-tensors
would behave, unless noted):

D1  Python scalars in ops with f16/bf16 tensors are used in float32 ("opmath",
    modern PyTorch CPU: `x * p`, `x / 127.5`, `c * d`); with float32 tensors the
    scalar is converted to float32. Scalars are never rounded to bf16/f16 first
    (PyTorch 1.13 did that for mul; modern PyTorch does not).
D2  `q_min`, `q_max`, `bit_range` are float32 (SPEC §3); `bit_range / 2` and
    `bit_range` as divisors are float32 scalars (exact). The asymmetric clamp
    `clamp(zp, q_min, q_max)` on an f16/bf16 zero point rounds the result to that
    dtype, so e.g. int16 q_max 32767 becomes 32768 in bf16/f16.
D3  Zero-point casts to int8/int16/int32 follow PyTorch on x86: truncate to
    int32 (out of range or NaN -> INT32_MIN), then wrap to the width. So a bf16
    int16 zero point of 32768 is stored as -32768 and an int32 zero point of
    2^31 (float32 q_max of 32 bits) as INT32_MIN.
D4  Conversions to float8_e4m3fn round to nearest even; like c10's
    `fp8e4m3fn_from_fp32_value` they are not saturating: a value whose rounding
    reaches 480 (or inf/NaN) becomes NaN (0x7F, sign kept). Where the SPEC clamps
    to +-448 first this never happens; it can for §10's storage of an fp4 scale
    computed without a global scale (max/6 > 464).
D5  Fake quantization with a global scale follows PyTorch type promotion:
    `s' = float32(s) / g` is float32, so `x / s'`, the clamp, the rounding to
    the grid and the dequantization `(q - zp) * s'` are float32 (the quantized
    value q is not rounded to the observed dtype: compressed-tensors'
    vectorized group path passes _quantize's float32 result straight to
    _dequantize). `zp.to(x.dtype)` in the quantize step is rounded to the
    observed dtype before the float32 add; in the dequantize step the zero
    point is converted to float32 directly (`zp.to(scale.dtype)`). The group /
    tensor_group path then casts the result to the observed dtype
    (`output.to(output_dtype)`), so `fq(x) - x`, `|e|`, `|e|^norm` and the error
    sum are in the observed dtype, as without a global scale.
D6  The MSE `best` array has the observed dtype (`full_like(min, finfo.max)`);
    storing an error into it keeps it in that dtype.
D7  `|e|^norm`: the exponent is converted to the tensor's dtype for f16/bf16
    (2.4 -> 2.40625 bf16, 2.400390625 f16); float32 uses float32(norm) - see
    `_pow_exponent`. Exponents 2 (x*x), 3 (x*x*x, rounded after each product)
    and 0.5 (sqrt) are special-cased for float32/bfloat16 (not f16). Otherwise
    pow is computed in float64 and rounded to float32 and then to the dtype.
    PyTorch itself is not consistent for float32 tensors: its vectorized body
    uses SLEEF powf with float32(norm) (within 1 ulp, ~2% of values differ
    from the correctly rounded result for norm 2.4) and the scalar tail
    (numel % vector width) std::pow(float, double(norm)); checked with
    python3-torch 1.13. bf16/f16 results matched torch exactly on 10^6 values.
D8  Sums: PyTorch accumulates in float32 (cascade order) and rounds once to the
    dtype; here the sum is done in float64 (numpy pairwise), rounded to float32
    and then to the dtype. These can differ in the last float32 bit; the error
    sums only feed the strict `err < best` comparisons, so outputs differ only if
    a comparison flips (a near-tie between two candidates).
D9  Global scale (SPEC §5) as written there: `m` (exact in any dtype) is
    converted to float32, `m = max(m, FLT_MIN)`, `g = float32(2688) / m` in
    float32 (one rounding), non-finite -> 1.0. Upstream compressed-tensors
    instead clamps with finfo(dtype).tiny and computes `2688 / m` as
    `m.reciprocal() * 2688` in the observed dtype (Tensor.__rtruediv__); that
    variant is available with `gparam_mode="pytorch"` (not the default).
D10 `mse` with averaging_constant == 1.0 still keeps the running state and
    applies `run + 1.0 * (cur - run)` (the seed's MovingAverageMSEObserver has
    no short-cut; only MinMaxObserver returns early when c == 1.0). Option
    `mse_c1_shortcut=True` gives the other reading ("the same moving average as
    minmax", including its c == 1.0 short-cut).
D11 Observer global scale: minmax uses its moving-averaged min/max under the
    whole-tensor id (the seed's calculate_gparam calls
    calculate_updated_min_max); static_minmax its running min/max under the
    whole-tensor id; memoryless_minmax, mse and memoryless_mse the plain
    min/max of the current tensor (no statistics change).
D12 Tensor ids: the whole tensor (tensor, channel, token strategies and the
    global scale) uses id None; group k and block k use the integer k. Group 0
    is therefore distinct from None (SPEC §9.1), and so is block 0.
D13 Rank: tensors of rank > 2 are viewed as [prod(leading dims), last dim];
    rank 1 as [1, n]. Token counting uses the original rank (2-D only).
D14 A running statistic whose shape differs from the new observation raises
    `ShapeError`; so does a change of observed dtype between observations.
D15 g_idx: if absent or containing -1, column order. Otherwise columns are
    stably sorted by g_idx, the group sizes are the counts of each distinct
    index in increasing order, and group k (k-th distinct index) uses tensor id
    k. The number of distinct indices must equal ceil(cols / group_size).
D16 Empty tensors are not observed: `forward` returns the last qparams without
    recording tokens or touching statistics. In the tools an empty batch tensor
    leaves its module's count unchanged ("none" if never counted) and a module
    that was never observed has no qparams in `--output`.
D17 Non-finite input raises `NonFiniteError` naming the tensor and the first
    bad (row-major) index; the opt-in skipping mode is not modelled.
D18 fp4 symmetric without a global scale (e.g. strategy group/channel/tensor
    with type float 4 bits) computes `s = max(s, eps)` in the observed dtype;
    §10 storage rounds it to e4m3 (D4).
"""

import json
import math
import re

import numpy as np

F32 = "f32"
F16 = "f16"
BF16 = "bf16"
DTYPES = (F32, F16, BF16)

FLT_EPS = np.float32(2.0 ** -23)
FLT_MIN = np.float32(2.0 ** -126)
FP8_MAX = 448.0
FP4_MAX = 6.0

_FINFO_MAX = {
    F32: np.float32(np.finfo(np.float32).max),
    F16: np.float32(65504.0),
    BF16: np.float32(3.3895313892515355e38),  # 0x7F7F
}
_FINFO_TINY = {F32: FLT_MIN, F16: np.float32(2.0 ** -14), BF16: FLT_MIN}


class QcalError(Exception):
    """Base of the errors the reference raises."""


class ArgsError(QcalError):
    """Invalid QuantizationArgs / kwargs / scheme (a usage error, exit 2)."""


class ShapeError(QcalError):
    """A running statistic no longer matches the observation."""


class NonFiniteError(QcalError):
    """The observed tensor holds NaN or +-Inf."""


# ----------------------------------------------------------------------------
# Rounding to the storage dtypes.


def bf16_round(x):
    """float32 array -> float32 array rounded to bfloat16 (nearest even)."""
    x = np.ascontiguousarray(np.asarray(x, dtype=np.float32))
    b = x.view(np.uint32).astype(np.uint64)
    r = ((b + 0x7FFF + ((b >> 16) & 1)) >> 16) << 16
    r = (r & 0xFFFFFFFF).astype(np.uint32)
    out = r.view(np.float32).copy()
    nan = np.isnan(x)
    if nan.any():
        out[nan] = np.float32(np.nan)
    return out


def f16_round(x):
    """float32 array -> float32 array rounded to IEEE half (nearest even)."""
    with np.errstate(over="ignore"):
        return np.asarray(x, dtype=np.float32).astype(np.float16).astype(np.float32)


def rnd(x, dt):
    """Rounds float32 values to dtype `dt` (identity for float32)."""
    x = np.asarray(x, dtype=np.float32)
    if dt == F32:
        return x
    if dt == BF16:
        return bf16_round(x)
    if dt == F16:
        return f16_round(x)
    raise ValueError("unknown dtype %r" % (dt,))


def e4m3_round(x):
    """float32 -> nearest-even float8_e4m3fn value as float32 (NaN past 464, D4)."""
    x = np.asarray(x, dtype=np.float32)
    a = np.abs(x).astype(np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        _, e2 = np.frexp(a)
        e = np.maximum(e2.astype(np.int64) - 1, -6)  # exponent of the binade, >= min normal
        ulp = np.ldexp(1.0, (e - 3).astype(np.int64))  # 3 mantissa bits
        q = np.round(a / ulp) * ulp  # exact scaling; np.round is half-to-even
        q = np.where(np.isfinite(a) & (q < 480.0), q, np.nan)
    return np.copysign(q, x.astype(np.float64)).astype(np.float32)


def e4m3_encode(values):
    """float8_e4m3fn grid values (float32) -> uint8 codes."""
    v = np.asarray(values, dtype=np.float64)
    out = np.zeros(v.shape, dtype=np.uint8)
    flat_v = v.reshape(-1)
    flat_o = out.reshape(-1)
    for i, val in enumerate(flat_v):
        sign = 0x80 if math.copysign(1.0, val) < 0 else 0
        if math.isnan(val):
            flat_o[i] = 0x7F | sign
            continue
        a = abs(val)
        if a < 2.0 ** -6:
            mant = a / 2.0 ** -9
            assert mant == int(mant) and mant < 8, val
            flat_o[i] = sign | int(mant)
        else:
            _, e2 = math.frexp(a)
            e = e2 - 1
            mant = (a / 2.0 ** e - 1.0) * 8
            assert mant == int(mant) and 1 <= e + 7 <= 15, val
            code = ((e + 7) << 3) | int(mant)
            assert code != 0x7F, val
            flat_o[i] = sign | code
    return out


def e4m3_decode(codes):
    """uint8 codes -> float32 values (0x7F / 0xFF are NaN)."""
    c = np.asarray(codes, dtype=np.uint8).astype(np.int64)
    sign = np.where(c & 0x80, -1.0, 1.0)
    exp = (c >> 3) & 0xF
    mant = c & 7
    val = np.where(exp == 0, mant * 2.0 ** -9, (1.0 + mant / 8.0) * np.ldexp(1.0, exp - 7))
    val = np.where((c & 0x7F) == 0x7F, np.nan, val)
    return (sign * val).astype(np.float32)


def fp4_round(x):
    """The float4_e2m1 table of SPEC §6 (compressed-tensors cast_to_fp4)."""
    x = np.asarray(x, dtype=np.float32)
    a = np.abs(x)
    q = np.select(
        [a <= 0.25, a < 0.75, a <= 1.25, a < 1.75, a <= 2.5, a < 3.5, a <= 5.0],
        [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0],
        6.0,
    ).astype(np.float32)
    return (q * np.sign(x)).astype(np.float32)


def int_cast_x86(v, bits):
    """Float values -> signed ints of `bits` as PyTorch does on x86 (D3)."""
    v = np.asarray(v, dtype=np.float64)
    ok = np.isfinite(v) & (v >= -(2.0 ** 31)) & (v < 2.0 ** 31)
    i32 = np.where(ok, np.trunc(np.where(ok, v, 0.0)), -(2.0 ** 31)).astype(np.int64)
    half = 1 << (bits - 1)
    return ((i32 + half) % (1 << bits)) - half


# ----------------------------------------------------------------------------
# Elementwise ops in float32 rounded to a dtype (SPEC §8).


# IEEE special values propagate as in PyTorch (inf - inf = NaN, ...); numpy's
# warnings about them are silenced.


def add(a, b, dt):
    with np.errstate(all="ignore"):
        return rnd(np.asarray(a, np.float32) + np.asarray(b, np.float32), dt)


def sub(a, b, dt):
    with np.errstate(all="ignore"):
        return rnd(np.asarray(a, np.float32) - np.asarray(b, np.float32), dt)


def mul(a, b, dt):
    with np.errstate(all="ignore"):
        return rnd(np.asarray(a, np.float32) * np.asarray(b, np.float32), dt)


def div(a, b, dt):
    with np.errstate(all="ignore"):
        return rnd(np.asarray(a, np.float32) / np.asarray(b, np.float32), dt)


def _pow_exponent(norm, dt):
    """The exponent PyTorch's CPU pow uses for a tensor of dtype dt (D7)."""
    if dt == F32:
        return float(np.float32(norm))
    return float(rnd(np.float32(norm), dt))


def pow_scalar(a, norm, dt):
    """|e|^norm as torch.pow(tensor, python_float) on CPU (D7); a >= 0."""
    a = np.asarray(a, np.float32)
    e = _pow_exponent(norm, dt)
    if dt in (F32, BF16):
        if e == 2.0:
            return mul(a, a, dt)
        if e == 3.0:
            return mul(mul(a, a, dt), a, dt)
        if e == 0.5:
            return rnd(np.sqrt(a), dt)
    with np.errstate(all="ignore"):
        r = np.power(a.astype(np.float64), e).astype(np.float32)
    return rnd(r, dt)


def sum_rows(a, dt):
    """Per-row sums (last axis) accumulated beyond float32, rounded (D8)."""
    with np.errstate(all="ignore"):
        s = np.sum(np.asarray(a, np.float64), axis=-1).astype(np.float32)
    return rnd(s, dt)


# ----------------------------------------------------------------------------
# QuantizationArgs (SPEC §2, §3).

_ARG_KEYS = (
    "num_bits", "type", "symmetric", "group_size", "strategy", "block_structure",
    "dynamic", "actorder", "observer", "observer_kwargs",
)
_STRATEGIES = ("tensor", "channel", "group", "tensor_group", "block", "token")


class QuantArgs(object):
    """Validated QuantizationArgs."""

    def __init__(self):
        self.num_bits = 8
        self.type = "int"
        self.symmetric = True
        self.group_size = None
        self.strategy = None
        self.block_structure = None
        self.dynamic = False
        self.actorder = None
        self.observer = None
        self.observer_kwargs = {}

    def to_json(self):
        return {k: getattr(self, k) for k in _ARG_KEYS}

    @property
    def is_fp4(self):
        return self.type == "float" and self.num_bits == 4

    def q_range(self):
        """(q_min, q_max) as float32 (SPEC §3)."""
        if self.type == "int":
            return np.float32(-(2.0 ** (self.num_bits - 1))), np.float32(2.0 ** (self.num_bits - 1) - 1)
        if self.num_bits == 8:
            return np.float32(-FP8_MAX), np.float32(FP8_MAX)
        return np.float32(-FP4_MAX), np.float32(FP4_MAX)

    def zp_kind(self):
        """'i8' / 'i16' / 'i32' / 'f8' (SPEC §3)."""
        if self.type == "float":
            return "f8"
        if self.num_bits <= 8:
            return "i8"
        if self.num_bits <= 16:
            return "i16"
        return "i32"


def _lower(value, field):
    if not isinstance(value, str):
        raise ArgsError("%s: expected a string, got %r" % (field, value))
    return value.lower()


def _is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def parse_args(obj):
    """QuantizationArgs from a JSON object (dict), validated per SPEC §2."""
    if not isinstance(obj, dict):
        raise ArgsError("args: expected a JSON object")
    a = QuantArgs()
    for k, v in obj.items():
        if k not in _ARG_KEYS:
            raise ArgsError("unknown QuantizationArgs key %r" % k)
        if k == "num_bits":
            if not _is_int(v):
                raise ArgsError("num_bits: expected an integer")
            a.num_bits = v
        elif k == "type":
            a.type = _lower(v, k)
            if a.type not in ("int", "float"):
                raise ArgsError("type: %r" % v)
        elif k == "symmetric":
            if not isinstance(v, bool):
                raise ArgsError("symmetric: expected a bool")
            a.symmetric = v
        elif k == "group_size":
            if v is not None and not _is_int(v):
                raise ArgsError("group_size: expected an integer or null")
            a.group_size = v
        elif k == "strategy":
            a.strategy = None if v is None else _lower(v, k)
            if a.strategy is not None and a.strategy not in _STRATEGIES:
                raise ArgsError("strategy: %r" % v)
        elif k == "block_structure":
            if v is None:
                a.block_structure = None
            elif isinstance(v, str):
                m = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", v)
                if not m:
                    raise ArgsError("block_structure: %r" % v)
                a.block_structure = [int(m.group(1)), int(m.group(2))]
            elif isinstance(v, list) and len(v) == 2 and all(_is_int(t) for t in v):
                a.block_structure = list(v)
            else:
                raise ArgsError("block_structure: %r" % (v,))
        elif k == "dynamic":
            if isinstance(v, bool):
                a.dynamic = v
            elif isinstance(v, str) and v.lower() == "local":
                a.dynamic = "local"
            else:
                raise ArgsError("dynamic: %r" % (v,))
        elif k == "actorder":
            if v is None or v is False:
                a.actorder = None
            elif v is True:
                a.actorder = "group"
            else:
                a.actorder = _lower(v, k)
                if a.actorder not in ("group", "weight", "dynamic", "static"):
                    raise ArgsError("actorder: %r" % v)
        elif k == "observer":
            a.observer = None if v is None else _lower(v, k)
        elif k == "observer_kwargs":
            if not isinstance(v, dict):
                raise ArgsError("observer_kwargs: expected an object")
            a.observer_kwargs = dict(v)
    # Validation in SPEC order.
    if a.group_size is not None and a.group_size < -1:
        raise ArgsError("group_size: %d is invalid" % a.group_size)
    if a.strategy is None:
        if a.group_size is None:
            a.strategy = "tensor"
        elif a.group_size > 0:
            a.strategy = "group"
        elif a.group_size == -1:
            a.strategy = "channel"
        else:
            raise ArgsError("group_size: 0 is invalid")
    if a.strategy == "group" and (a.group_size is None or a.group_size <= 0):
        raise ArgsError("group_size: strategy group needs group_size > 0")
    if a.group_size is not None and a.group_size > 0 and a.strategy not in ("group", "tensor_group"):
        raise ArgsError("group_size: positive group_size needs strategy group or tensor_group")
    if a.actorder is not None and a.strategy != "group":
        raise ArgsError("actorder: needs strategy group")
    if a.dynamic:
        if a.strategy not in ("token", "tensor", "tensor_group", "group"):
            raise ArgsError("dynamic: not allowed with strategy %s" % a.strategy)
        if a.dynamic == "local" and a.strategy != "tensor_group":
            raise ArgsError("dynamic: 'local' needs strategy tensor_group")
        if a.dynamic is True:
            a.observer = None
        elif a.observer is None:
            a.observer = "minmax"
    if not a.dynamic and a.observer is None:
        a.observer = "minmax"
    if a.type == "float":
        if a.num_bits not in (4, 8):
            raise ArgsError("num_bits: float needs 4 or 8")
    elif not 1 <= a.num_bits <= 32:
        raise ArgsError("num_bits: int needs 1..32")
    if a.strategy == "block":
        bs = a.block_structure
        if bs is None or len(bs) != 2 or bs[0] <= 0 or bs[1] <= 0:
            raise ArgsError("block_structure: strategy block needs two positive ints")
    if a.strategy == "tensor_group" and (a.group_size is None or a.group_size <= 0):
        raise ArgsError("group_size: strategy tensor_group needs group_size > 0")
    return a


SCHEMES = {
    "W8A16": {"num_bits": 8, "type": "int", "symmetric": True, "strategy": "channel"},
    "W4A16": {"num_bits": 4, "type": "int", "symmetric": True, "strategy": "group", "group_size": 128},
    "W4A16_ASYM": {"num_bits": 4, "type": "int", "symmetric": False, "strategy": "group", "group_size": 128},
    "W8A8": {"num_bits": 8, "type": "int", "symmetric": True, "strategy": "channel"},
    "INT8": {"num_bits": 8, "type": "int", "symmetric": True, "strategy": "channel"},
    "W4A8": {"num_bits": 4, "type": "int", "symmetric": True, "strategy": "group", "group_size": 128},
    "FP8": {"num_bits": 8, "type": "float", "symmetric": True, "strategy": "tensor"},
    "FP8_DYNAMIC": {"num_bits": 8, "type": "float", "symmetric": True, "strategy": "channel"},
    "FP8_BLOCK": {"num_bits": 8, "type": "float", "symmetric": True, "strategy": "block",
                  "block_structure": [128, 128]},
    "NVFP4A16": {"num_bits": 4, "type": "float", "symmetric": True, "strategy": "tensor_group",
                 "group_size": 16},
    "NVFP4": {"num_bits": 4, "type": "float", "symmetric": True, "strategy": "tensor_group",
              "group_size": 16},
}


def scheme_args(name):
    """The weights' QuantizationArgs of a preset scheme (SPEC §2)."""
    if name not in SCHEMES:
        raise ArgsError("unknown scheme %r" % name)
    return parse_args(dict(SCHEMES[name]))


# ----------------------------------------------------------------------------
# calculate_qparams, generate_gparam, fake quantization (SPEC §4-§6).


class ZeroPoint(object):
    """Zero points: `kind` in i8/i16/i32 (int64 `values`) or f8 (float32 grid values)."""

    def __init__(self, kind, values):
        self.kind = kind
        self.values = values

    def as_float32(self):
        """zp.to(float32)."""
        return np.asarray(self.values).astype(np.float32)

    def to(self, dt):
        """zp.to(dt): int -> float32 (nearest even) -> dt; fp8 values are exact."""
        return rnd(self.as_float32(), dt)


def calculate_qparams(mn, mx, args, dt, global_scale=None):
    """Scale (float32 array of dt values, or e4m3 values for fp4 with g) and ZeroPoint.

    `mn`, `mx`: float32 arrays of dt values (one per unit). Returns
    (scale, zp, scale_is_fp8).
    """
    mn = np.minimum(np.asarray(mn, np.float32), np.float32(0))
    mx = np.maximum(np.asarray(mx, np.float32), np.float32(0))
    q_min, q_max = args.q_range()
    bit_range = np.float32(q_max - q_min)
    scale_is_fp8 = False
    if args.symmetric:
        mvp = np.maximum(np.abs(mn), np.abs(mx))
        if args.is_fp4 and global_scale is not None:
            t = div(mvp, np.float32(FP4_MAX), dt)
            s = np.float32(global_scale) * t  # [1] float32 tensor -> float32 result
            s = np.clip(s, np.float32(-FP8_MAX), np.float32(FP8_MAX)).astype(np.float32)
            s = e4m3_round(s)
            s = np.where(s == 0, np.float32(0.125), s).astype(np.float32)
            scale_is_fp8 = True
        else:
            s = div(mvp, np.float32(float(bit_range) / 2), dt)
            s = np.maximum(s, FLT_EPS)
        zp_val = np.zeros(s.shape, np.float32)
    else:
        if args.is_fp4:
            raise NotImplementedError("Asymmetric Quantization is not supported for FP4")
        s = div(sub(mx, mn, dt), bit_range, dt)
        s = np.maximum(s, FLT_EPS)
        zp_val = sub(q_min, div(mn, s, dt), dt)
        zp_val = rnd(np.clip(zp_val, q_min, q_max), dt)
    kind = args.zp_kind()
    if args.type == "int":
        zp_val = np.round(zp_val)  # half to even, exact in any dtype
        zp = ZeroPoint(kind, int_cast_x86(zp_val, int(kind[1:])))
    else:
        zp = ZeroPoint(kind, e4m3_round(zp_val))
    return s.astype(np.float32), zp, scale_is_fp8


def generate_gparam(mn, mx, dt, mode="spec"):
    """Global scale, float32 array of shape [1] (SPEC §5; D9)."""
    mn = np.minimum(np.asarray(mn, np.float32), np.float32(0))
    mx = np.maximum(np.asarray(mx, np.float32), np.float32(0))
    m = np.maximum(np.abs(mn), np.abs(mx)).reshape(-1)[:1]
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        if mode == "spec":
            m = np.maximum(m, FLT_MIN)
            g = np.float32(FP8_MAX * FP4_MAX) / m
        elif mode == "pytorch":
            m = np.maximum(m, _FINFO_TINY[dt])
            r = div(np.float32(1.0), m, dt)
            g = mul(r, np.float32(FP8_MAX * FP4_MAX), dt)
        else:
            raise ValueError(mode)
    g = np.where(np.isfinite(g), g, np.float32(1.0)).astype(np.float32)
    return g.reshape(1)


def fake_quantize(x, scale, zp, args, dt, global_scale=None):
    """Fake quantization of x ([U, E]) with per-unit scale/zp ([U, 1]) (SPEC §6).

    Returns the dequantized values, values of dt (D5).
    """
    q_min, q_max = args.q_range()
    x = np.asarray(x, np.float32)
    if global_scale is not None:
        cdt = F32
        sp = div(np.asarray(scale, np.float32), np.float32(global_scale), F32)
        scaled = div(x, sp, F32)
        scaled = add(scaled, zp.to(dt), F32)
        zp_c = zp.as_float32()
    else:
        cdt = dt
        sp = np.asarray(scale, np.float32)
        scaled = div(x, sp, dt)
        scaled = add(scaled, zp.to(dt), dt)
        zp_c = zp.to(dt)
    clamped = rnd(np.clip(scaled, q_min, q_max), cdt)
    if args.type == "int":
        q = np.round(clamped).astype(np.float32)
    elif args.num_bits == 8:
        q = e4m3_round(clamped)
    else:
        q = fp4_round(clamped)
    dq = mul(sub(q, zp_c, cdt), sp, cdt)
    return rnd(dq, dt)


# ----------------------------------------------------------------------------
# Observers (SPEC §7).

_KWARGS = {
    "minmax": {"averaging_constant": 0.01},
    "mse": {"maxshrink": 0.2, "patience": 5, "averaging_constant": 0.01, "grid": 100.0, "norm": 2.4},
    "memoryless_minmax": {},
    "static_minmax": {},
    "memoryless_mse": {"maxshrink": 0.2, "patience": 5, "grid": 100.0, "norm": 2.4},
}
OBSERVER_NAMES = tuple(sorted(_KWARGS))


def validate_kwargs(name, kwargs):
    """Kwargs with defaults filled in; ArgsError on unknown keys / bad values."""
    if name not in _KWARGS:
        raise ArgsError("unknown observer %r (known: %s)" % (name, ", ".join(OBSERVER_NAMES)))
    out = dict(_KWARGS[name])
    for k, v in (kwargs or {}).items():
        if k not in out:
            raise ArgsError("observer %s: unknown kwarg %r" % (name, k))
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ArgsError("observer %s: %s must be a number" % (name, k))
        out[k] = v
    if "averaging_constant" in out and not 0 < out["averaging_constant"] <= 1:
        raise ArgsError("averaging_constant must be in (0, 1]")
    if "maxshrink" in out and not 0 < out["maxshrink"] <= 1:
        raise ArgsError("maxshrink must be in (0, 1]")
    if "grid" in out and not out["grid"] > 0:
        raise ArgsError("grid must be > 0")
    if "patience" in out:
        if out["patience"] != int(out["patience"]) or out["patience"] < 1:
            raise ArgsError("patience must be an integer >= 1")
        out["patience"] = int(out["patience"])
    if "norm" in out and not out["norm"] > 0:
        raise ArgsError("norm must be > 0")
    return out


def _view2d(x):
    x = np.asarray(x, np.float32)
    if x.ndim == 0:
        return x.reshape(1, 1)
    if x.ndim == 1:
        return x.reshape(1, -1)
    return x.reshape(-1, x.shape[-1])


def check_finite(x, name="tensor"):
    """NonFiniteError naming the tensor and its first non-finite index (D17)."""
    x = np.asarray(x)
    bad = ~np.isfinite(x)
    if bad.any():
        idx = np.unravel_index(int(np.argmax(bad.reshape(-1))), x.shape)
        raise NonFiniteError("%s: non-finite value %r at index %s" % (name, float(x[idx]), list(idx)))


class Observer(object):
    """Base observer: strategy dispatch, token counting, last qparams."""

    def __init__(self, args, name, kwargs=None, gparam_mode="spec", mse_c1_shortcut=False):
        self.args = args
        self.name = name
        self.kw = validate_kwargs(name, kwargs)
        self.gparam_mode = gparam_mode
        self.mse_c1_shortcut = mse_c1_shortcut
        self.reset()

    # -- state -------------------------------------------------------------
    def reset(self):
        self.min_val = {}
        self.max_val = {}
        self.num_observed_tokens = None
        self.scale = None
        self.zero_point = None
        self.dtype = None

    def _check_dtype(self, dt):
        if dt not in DTYPES:
            raise ValueError("unknown dtype %r" % (dt,))
        if self.dtype is None:
            self.dtype = dt
        elif self.dtype != dt and (self.min_val or self.max_val):
            raise ShapeError("observed dtype changed from %s to %s" % (self.dtype, dt))
        self.dtype = dt

    def _get_running(self, tid, shape):
        run_min = self.min_val.get(tid)
        run_max = self.max_val.get(tid)
        if run_min is None or run_max is None:
            return None, None
        if run_min.shape != shape:
            raise ShapeError(
                "running statistic of tensor id %r has shape %s, observation %s"
                % (tid, list(run_min.shape), list(shape)))
        return run_min, run_max

    def _moving_average(self, tid, mn, mx, dt):
        c = np.float32(self.kw["averaging_constant"])
        run_min, run_max = self._get_running(tid, mn.shape)
        if run_min is not None:
            mn = add(run_min, mul(c, sub(mn, run_min, dt), dt), dt)
            mx = add(run_max, mul(c, sub(mx, run_max, dt), dt), dt)
        self.min_val[tid] = mn
        self.max_val[tid] = mx
        return mn, mx

    # -- statistics per call (overridden) -----------------------------------
    def updated_min_max(self, units, dt, tid, global_scale):
        raise NotImplementedError

    def global_min_max(self, x, dt):
        """(min, max) of the whole tensor used for the global scale (D11)."""
        return np.min(x).reshape(1), np.max(x).reshape(1)

    # -- public API ----------------------------------------------------------
    def record_observed_tokens(self, x):
        x = np.asarray(x)
        if x.ndim != 2:
            return
        if self.num_observed_tokens is None:
            self.num_observed_tokens = 0
        self.num_observed_tokens += int(x.shape[0])

    def forward(self, x, dt, g_idx=None, global_scale=None, should_calculate_gparam=False, name="tensor"):
        x = np.asarray(x, np.float32)
        if x.size == 0:
            return self.scale, self.zero_point
        check_finite(x, name)
        self.record_observed_tokens(x)
        if should_calculate_gparam:
            return self.get_gparam(x, dt)
        return self.get_qparams(x, dt, g_idx=g_idx, global_scale=global_scale)

    def get_gparam(self, x, dt):
        if self.args.strategy != "tensor_group":
            raise QcalError("get_gparam is defined for tensor_group only")
        self._check_dtype(dt)
        x2 = _view2d(x)
        mn, mx = self.global_min_max(x2, dt)
        return generate_gparam(mn, mx, dt, self.gparam_mode)

    def calculate_qparams(self, units, dt, tid, global_scale=None):
        """One call: units [U, E] -> (scale [U], ZeroPoint [U], scale_is_fp8)."""
        mn, mx = self.updated_min_max(units, dt, tid, global_scale)
        return calculate_qparams(mn, mx, self.args, dt, global_scale)

    def get_qparams(self, x, dt, g_idx=None, global_scale=None):
        """Observes x (any rank >= 1) and returns (scale [..], ZeroPoint [..])."""
        self._check_dtype(dt)
        x2 = _view2d(x)
        rows, cols = x2.shape
        st = self.args.strategy
        kind = self.args.zp_kind()
        if st == "tensor":
            s, zp, _ = self.calculate_qparams(x2.reshape(1, -1), dt, None)
            scale, zpv = s.reshape(1), np.asarray(zp.values).reshape(1)
        elif st in ("channel", "token"):
            s, zp, _ = self.calculate_qparams(x2, dt, None)
            scale, zpv = s.reshape(rows, 1), np.asarray(zp.values).reshape(rows, 1)
        elif st in ("group", "tensor_group"):
            gs = self.args.group_size
            num_groups = -(-cols // gs)
            if g_idx is None or np.any(np.asarray(g_idx) == -1):
                sizes = [min(gs, cols - k * gs) for k in range(num_groups)]
                xp = x2
            else:
                g = np.asarray(g_idx).reshape(-1)
                if g.shape[0] != cols:
                    raise ShapeError("g_idx has %d entries for %d columns" % (g.shape[0], cols))
                values, counts = np.unique(g, return_counts=True)
                if len(values) != num_groups:
                    raise ShapeError("g_idx has %d groups, expected %d" % (len(values), num_groups))
                sizes = [int(c) for c in counts]
                xp = x2[:, np.argsort(g, kind="stable")]
            scale = np.zeros((rows, len(sizes)), np.float32)
            zpv = np.zeros((rows, len(sizes)), np.float32 if kind == "f8" else np.int64)
            start = 0
            for k, size in enumerate(sizes):
                s, zp, _ = self.calculate_qparams(xp[:, start:start + size], dt, k, global_scale)
                scale[:, k] = s.reshape(rows)
                zpv[:, k] = np.asarray(zp.values).reshape(rows)
                start += size
        elif st == "block":
            bh, bw = self.args.block_structure
            nbr, nbc = -(-rows // bh), -(-cols // bw)
            scale = np.zeros((nbr, nbc), np.float32)
            zpv = np.zeros((nbr, nbc), np.float32 if kind == "f8" else np.int64)
            for i in range(nbr):
                for j in range(nbc):
                    blk = x2[i * bh:(i + 1) * bh, j * bw:(j + 1) * bw]
                    s, zp, _ = self.calculate_qparams(blk.reshape(1, -1), dt, i * nbc + j)
                    scale[i, j] = s[0]
                    zpv[i, j] = np.asarray(zp.values).reshape(-1)[0]
        else:
            raise ArgsError("unknown strategy %r" % st)
        # Scales are stored in the observed dtype; fp8 scales (fp4 with a
        # global scale) are exact there.
        assert np.array_equal(rnd(scale, dt), scale, equal_nan=True)
        self.scale = scale
        self.zero_point = ZeroPoint(kind, zpv)
        return self.scale, self.zero_point


def _unit_min_max(units):
    return np.min(units, axis=1), np.max(units, axis=1)


class MinMaxObserver(Observer):
    def updated_min_max(self, units, dt, tid, global_scale):
        mn, mx = _unit_min_max(units)
        if self.kw["averaging_constant"] == 1.0:
            return mn, mx
        return self._moving_average(tid, mn, mx, dt)

    def global_min_max(self, x, dt):
        mn, mx = np.min(x).reshape(1), np.max(x).reshape(1)
        if self.kw["averaging_constant"] == 1.0:
            return mn, mx
        return self._moving_average(None, mn, mx, dt)


class MemorylessMinMaxObserver(Observer):
    def updated_min_max(self, units, dt, tid, global_scale):
        return _unit_min_max(units)


class StaticMinMaxObserver(Observer):
    def _static(self, tid, mn, mx):
        run_min, run_max = self._get_running(tid, mn.shape)
        if run_min is not None:
            mn = np.minimum(run_min, mn)
            mx = np.maximum(run_max, mx)
        self.min_val[tid] = mn
        self.max_val[tid] = mx
        return mn, mx

    def updated_min_max(self, units, dt, tid, global_scale):
        mn, mx = _unit_min_max(units)
        return self._static(tid, mn, mx)

    def global_min_max(self, x, dt):
        return self._static(None, np.min(x).reshape(1), np.max(x).reshape(1))


def mse_search(units, args, dt, global_scale, maxshrink, patience, grid, norm):
    """The MSE grid search of one call (SPEC §7): units [U, E] -> (min [U], max [U])."""
    units = np.asarray(units, np.float32)
    amin, amax = _unit_min_max(units)
    best = np.full(amin.shape, _FINFO_MAX[dt], np.float32)
    min_val = np.ones(amin.shape, np.float32)
    max_val = np.zeros(amax.shape, np.float32)
    no_improve = 0
    for i in range(int(maxshrink * grid)):
        p = np.float32(1 - i / grid)
        smin = mul(p, amin, dt)
        smax = mul(p, amax, dt)
        s, zp, _ = calculate_qparams(smin, smax, args, dt, global_scale)
        zp_col = ZeroPoint(zp.kind, np.asarray(zp.values).reshape(-1, 1))
        dq = fake_quantize(units, s.reshape(-1, 1), zp_col, args, dt, global_scale)
        e = np.abs(sub(dq, units, dt))
        err = sum_rows(pow_scalar(e, norm, dt), dt)
        tmp = err < best
        if tmp.any():
            best[tmp] = err[tmp]
            min_val[tmp] = smin[tmp]
            max_val[tmp] = smax[tmp]
            no_improve = 0
        else:
            no_improve += 1
            if no_improve >= patience:
                break
    return min_val, max_val


class MseObserver(Observer):
    def _search(self, units, dt, global_scale):
        k = self.kw
        return mse_search(units, self.args, dt, global_scale, k["maxshrink"], k["patience"],
                          k["grid"], k["norm"])

    def updated_min_max(self, units, dt, tid, global_scale):
        mn, mx = self._search(units, dt, global_scale)
        if self.mse_c1_shortcut and self.kw["averaging_constant"] == 1.0:
            return mn, mx
        return self._moving_average(tid, mn, mx, dt)


class MemorylessMseObserver(MseObserver):
    def updated_min_max(self, units, dt, tid, global_scale):
        return self._search(units, dt, global_scale)


_OBSERVERS = {
    "minmax": MinMaxObserver,
    "mse": MseObserver,
    "memoryless_minmax": MemorylessMinMaxObserver,
    "static_minmax": StaticMinMaxObserver,
    "memoryless_mse": MemorylessMseObserver,
}


def make_observer(name, args, kwargs=None, **options):
    """A fresh observer by registered name."""
    if name not in _OBSERVERS:
        raise ArgsError("unknown observer %r (known: %s)" % (name, ", ".join(OBSERVER_NAMES)))
    return _OBSERVERS[name](args, name, kwargs, **options)


# ----------------------------------------------------------------------------
# Storage (SPEC §10) and the tools (SPEC §11).

ST_DTYPE = {F32: "F32", F16: "F16", BF16: "BF16"}
DT_FROM_ST = {"F32": F32, "F16": F16, "BF16": BF16}
_ZP_ST = {"i8": "I8", "i16": "I16", "i32": "I32", "f8": "F8_E4M3"}


def encode_values(values, st_dtype):
    """float32/int values -> little-endian bytes of safetensors dtype st_dtype."""
    v = np.asarray(values)
    if st_dtype == "F32":
        return v.astype("<f4").tobytes()
    if st_dtype == "F16":
        f = v.astype(np.float32)
        assert np.array_equal(f16_round(f), f, equal_nan=True)
        return f.astype("<f2").tobytes()
    if st_dtype == "BF16":
        f = np.ascontiguousarray(v.astype(np.float32))
        assert np.array_equal(bf16_round(f), f, equal_nan=True)
        return (f.view(np.uint32) >> 16).astype("<u2").tobytes()
    if st_dtype == "F8_E4M3":
        return e4m3_encode(v.astype(np.float32)).tobytes()
    if st_dtype in ("I8", "I16", "I32", "I64"):
        np_dt = {"I8": "<i1", "I16": "<i2", "I32": "<i4", "I64": "<i8"}[st_dtype]
        return v.astype(np.int64).astype(np_dt).tobytes()
    raise ValueError(st_dtype)


def stored_qparams(prefix, scale, zp, dt, args, global_scale=None):
    """{name: (st_dtype, shape, bytes)} of one observed tensor's qparams (SPEC §10)."""
    out = {}
    shape = list(np.asarray(scale).shape)
    if args.is_fp4:
        out[prefix + "_scale"] = ("F8_E4M3", shape, encode_values(e4m3_round(scale), "F8_E4M3"))
        zpf = e4m3_round(zp.as_float32()) if zp.kind != "f8" else zp.values
        out[prefix + "_zero_point"] = ("F8_E4M3", shape, encode_values(zpf, "F8_E4M3"))
    else:
        out[prefix + "_scale"] = (ST_DTYPE[dt], shape, encode_values(scale, ST_DTYPE[dt]))
        zst = _ZP_ST[zp.kind]
        out[prefix + "_zero_point"] = (zst, shape, encode_values(zp.values, zst))
    if global_scale is not None:
        out[prefix + "_global_scale"] = ("F32", [1], encode_values(global_scale, "F32"))
    return out


def resolve_tool_args(scheme=None, args_json=None, observer=None, observer_kwargs=None):
    """(QuantArgs, observer name, kwargs) from the tools' flags (SPEC §11)."""
    if (scheme is None) == (args_json is None):
        raise ArgsError("exactly one of --scheme and --args is required")
    if scheme is not None:
        args = scheme_args(scheme)
    else:
        args = parse_args(json.loads(args_json) if isinstance(args_json, str) else args_json)
    name = observer if observer is not None else args.observer
    if name is None:
        raise ArgsError("no observer (dynamic args)")
    kwargs = dict(args.observer_kwargs)
    if observer_kwargs is not None:
        kwargs = json.loads(observer_kwargs) if isinstance(observer_kwargs, str) else dict(observer_kwargs)
    validate_kwargs(name, kwargs)
    return args, name, kwargs


def calibrate(tensors, args, observer, kwargs=None, targets=r"\.weight$", ignore=None, g_idx=None,
              **options):
    """The `calibrate` tool: tensors {name: (dt, float32 array)} -> stored qparams.

    `g_idx` ({weight name: int array}) is not part of the tool's contract; it
    serves the observer_driver comparison of activation ordering.
    """
    out = {}
    for name in sorted(tensors):
        dt, x = tensors[name]
        if not re.search(targets, name) or (ignore and re.search(ignore, name)):
            continue
        if dt not in DTYPES or np.asarray(x).ndim != 2:
            continue
        x = np.asarray(x, np.float32)
        if x.size == 0:
            continue
        check_finite(x, name)
        obs = make_observer(observer, args, kwargs, **options)
        g = None
        if args.strategy == "tensor_group":
            g = obs.get_gparam(x, dt)
            obs.reset()
        scale, zp = obs.get_qparams(x, dt, global_scale=g, g_idx=(g_idx or {}).get(name))
        out.update(stored_qparams(name, scale, zp, dt, args, g))
    return out


def token_count(batches, args, observer, kwargs=None, **options):
    """The `token_count` tool: batches [{name: (dt, array)}] -> (counts, stored qparams)."""
    observers = {}
    last = {}
    modules = set()
    for batch in batches:
        for name in sorted(batch):
            if not name.endswith(".input"):
                continue
            module = name[:-len(".input")]
            modules.add(module)
            dt, x = batch[name]
            if module not in observers:
                observers[module] = make_observer(observer, args, kwargs, **options)
            obs = observers[module]
            x = np.asarray(x, np.float32)
            if x.size == 0:
                continue
            check_finite(x, name)
            obs.record_observed_tokens(x)
            x2 = _view2d(x)
            g = None
            if args.strategy == "tensor_group":
                g = obs.get_gparam(x2, dt)
            scale, zp = obs.get_qparams(x2, dt, global_scale=g)
            last[module] = (dt, scale, zp, g)
    counts = {m: (observers[m].num_observed_tokens if m in observers else None) for m in sorted(modules)}
    out = {}
    for module, (dt, scale, zp, g) in last.items():
        out.update(stored_qparams(module + ".input", scale, zp, dt, args, g))
    return counts, out
