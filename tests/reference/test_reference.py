"""Self-tests of qcal_reference.py: hand-computed values, PyTorch cross-checks.

Run: /usr/bin/python3 tests/reference/test_reference.py
PyTorch (Debian's python3-torch 1.13) is used, when importable, only where its
CPU semantics match modern PyTorch: dtype conversions and tensor-tensor
elementwise ops. (1.13 rounds Python scalars to bf16 before a multiply; modern
PyTorch keeps them in float32, as the reference does.)
"""

import json
import os
import sys
import unittest

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import qcal_reference as R  # noqa: E402

try:
    import torch
except ImportError:  # pragma: no cover - torch is optional
    torch = None

F32, F16, BF16 = R.F32, R.F16, R.BF16


def f32(v):
    return np.asarray(v, dtype=np.float32)


def args(**kw):
    return R.parse_args(kw)


def random_bits_f32(rng, n):
    """float32 values of every kind: random bit patterns (finite only)."""
    bits = rng.integers(0, 2 ** 32, size=n, dtype=np.uint64).astype(np.uint32)
    x = bits.view(np.float32)
    return x[np.isfinite(x)]


class RoundingTest(unittest.TestCase):

    def test_bf16_hand(self):
        # 1 + 2^-8 is a tie between 1 and 1 + 2^-7: even -> 1.
        self.assertEqual(R.bf16_round(f32([1 + 2 ** -8]))[0], 1.0)
        self.assertEqual(R.bf16_round(f32([1 + 3 * 2 ** -8]))[0], 1 + 2 ** -6)
        self.assertEqual(R.bf16_round(f32([255.0]))[0], 255.0)
        self.assertEqual(R.bf16_round(f32([32767.0]))[0], 32768.0)
        self.assertTrue(np.isinf(R.bf16_round(f32([3.4e38]))[0]))
        self.assertTrue(np.isnan(R.bf16_round(f32([np.nan]))[0]))

    def test_f16_hand(self):
        self.assertEqual(R.f16_round(f32([32767.0]))[0], 32768.0)
        self.assertEqual(R.f16_round(f32([2.0 ** -25]))[0], 0.0)  # tie -> even (0)
        self.assertEqual(R.f16_round(f32([3 * 2.0 ** -25]))[0], 2.0 ** -23)
        self.assertTrue(np.isinf(R.f16_round(f32([65520.0]))[0]))
        self.assertEqual(R.f16_round(f32([65519.0]))[0], 65504.0)

    @unittest.skipIf(torch is None, "torch not installed")
    def test_conversions_match_torch(self):
        rng = np.random.default_rng(1)
        x = np.concatenate([random_bits_f32(rng, 200000),
                            rng.standard_normal(100000).astype(np.float32),
                            (rng.standard_normal(100000) * 1e-6).astype(np.float32)])
        t = torch.from_numpy(x.copy())
        np.testing.assert_array_equal(R.bf16_round(x), t.bfloat16().float().numpy())
        np.testing.assert_array_equal(R.f16_round(x), t.half().float().numpy())

    @unittest.skipIf(torch is None, "torch not installed")
    def test_tensor_ops_match_torch(self):
        rng = np.random.default_rng(2)
        for dt, tdt in ((BF16, torch.bfloat16), (F16, torch.float16)):
            a = R.rnd(rng.standard_normal(50000).astype(np.float32) * 3, dt)
            b = R.rnd(rng.standard_normal(50000).astype(np.float32), dt)
            ta, tb = torch.from_numpy(a).to(tdt), torch.from_numpy(b).to(tdt)
            for ref, got in ((R.add(a, b, dt), ta + tb), (R.sub(a, b, dt), ta - tb),
                             (R.mul(a, b, dt), ta * tb), (R.div(a, b, dt), ta / tb)):
                np.testing.assert_array_equal(ref, got.float().numpy())
            if dt == BF16:  # 1.13 has no CPU round for Half
                np.testing.assert_array_equal(np.round(a), torch.round(ta).float().numpy())
            s = R.rnd(np.abs(a), dt)
            # torch.sum of a reduced-precision tensor accumulates in float32.
            self.assertEqual(R.sum_rows(s.reshape(1, -1), dt)[0],
                             torch.from_numpy(s).to(tdt).sum().float().item())

    @unittest.skipIf(torch is None, "torch not installed")
    def test_reduced_precision_pow_matches_torch(self):
        # pow(tensor, python float) converts the exponent to bf16 / f16 and
        # special-cases 2, 3, 0.5 for bf16 (D7); 1.13 behaves as modern PyTorch.
        rng = np.random.default_rng(9)
        x = (np.abs(rng.standard_normal(200000)) * rng.choice([1e-3, 1, 100], 200000)).astype(np.float32)
        for dt, tdt in ((BF16, torch.bfloat16), (F16, torch.float16)):
            xr = R.rnd(x, dt)
            for norm in (2.4, 3.0, 2.0, 0.5, 1.7):
                want = torch.from_numpy(xr).to(tdt).pow(norm).float().numpy()
                np.testing.assert_array_equal(R.pow_scalar(xr, norm, dt), want, err_msg="%s %s" % (dt, norm))

    def test_e4m3_midpoints(self):
        cases = {
            1.0625: 1.0,       # tie between 1 (mantissa 0) and 1.125: even
            1.1875: 1.25,      # tie between 1.125 (odd) and 1.25: even
            2.0 ** -10: 0.0,   # half the smallest subnormal: even (0)
            3 * 2.0 ** -10: 2.0 ** -8,
            5 * 2.0 ** -10: 2.0 ** -8,  # tie between 2*2^-9 and 3*2^-9: even
            0.015625: 0.015625,  # smallest normal
            448.0: 448.0,
            464.0: 448.0,      # tie between 448 and (480): even -> 448
            -1.0625: -1.0,
            100.0: 96.0,       # 100 between 96 and 104 -> 96 (nearer)
            0.3: 0.3125,       # ulp 2^-5 in [0.25, 0.5): 9.6 ulps -> 10
        }
        for x, want in cases.items():
            self.assertEqual(float(R.e4m3_round(f32([x]))[0]), want, x)
        self.assertTrue(np.isnan(R.e4m3_round(f32([465.0]))[0]))  # rounds to 480: NaN (D4)
        self.assertTrue(np.isnan(R.e4m3_round(f32([np.inf]))[0]))

    def test_e4m3_codes_round_trip(self):
        codes = np.arange(256, dtype=np.uint8)
        vals = R.e4m3_decode(codes)
        finite = ~np.isnan(vals)
        self.assertEqual(int(finite.sum()), 254)
        self.assertEqual(float(np.nanmax(vals)), 448.0)
        self.assertEqual(float(vals[1]), 2.0 ** -9)
        np.testing.assert_array_equal(R.e4m3_round(vals[finite]), vals[finite])
        np.testing.assert_array_equal(R.e4m3_encode(vals[finite]), codes[finite])
        self.assertEqual(int(R.e4m3_encode(f32([np.nan]))[0]), 0x7F)

    def test_e4m3_nearest(self):
        grid = np.sort(np.unique(R.e4m3_decode(np.arange(127, dtype=np.uint8))))
        rng = np.random.default_rng(3)
        x = (rng.random(20000) * 460).astype(np.float32)
        got = R.e4m3_round(x)
        idx = np.searchsorted(grid, x)
        lo, hi = grid[np.maximum(idx - 1, 0)], grid[np.minimum(idx, len(grid) - 1)]
        best = np.where(np.abs(x - lo) <= np.abs(hi - x), lo, hi)
        tie = np.abs(x - lo) == np.abs(hi - x)
        np.testing.assert_array_equal(got[~tie], best[~tie])

    def test_fp4_table(self):
        def up(v):
            return float(np.nextafter(np.float32(v), np.float32(10)))

        def down(v):
            return float(np.nextafter(np.float32(v), np.float32(0)))

        cases = [
            (0.0, 0.0), (0.25, 0.0), (up(0.25), 0.5), (0.5, 0.5),
            (down(0.75), 0.5), (0.75, 1.0), (1.25, 1.0),
            (up(1.25), 1.5), (down(1.75), 1.5), (1.75, 2.0),
            (2.5, 2.0), (up(2.5), 3.0), (down(3.5), 3.0),
            (3.5, 4.0), (5.0, 4.0), (up(5.0), 6.0), (6.0, 6.0),
            (-0.75, -1.0), (-5.5, -6.0), (-0.2, 0.0),
        ]
        for x, want in cases:
            self.assertEqual(float(R.fp4_round(f32([x]))[0]), want, x)

    def test_int_cast_x86(self):
        self.assertEqual(list(R.int_cast_x86([32768.0, -32768.0, 127.0], 16)), [-32768, -32768, 127])
        self.assertEqual(list(R.int_cast_x86([2.0 ** 31, -(2.0 ** 31), np.nan], 32)),
                         [-(2 ** 31)] * 3)
        self.assertEqual(list(R.int_cast_x86([128.0, 2.0 ** 31], 8)), [-128, 0])

    def test_pow_exponent(self):
        self.assertEqual(R._pow_exponent(2.4, BF16), 2.40625)
        self.assertEqual(R._pow_exponent(2.4, F16), 2.400390625)
        self.assertEqual(R._pow_exponent(2.4, F32), float(np.float32(2.4)))
        # Exponent 3 multiplies twice (two roundings) for bf16 and float32.
        x = R.rnd(f32(np.linspace(1, 2, 2001)), BF16)
        p3 = R.pow_scalar(x, 3.0, BF16)
        np.testing.assert_array_equal(p3, R.mul(R.mul(x, x, BF16), x, BF16))
        once = R.rnd(f32(x.astype(np.float64) ** 3), BF16)
        self.assertTrue((once != p3).any())  # the special case is observable
        # f16 has no special case: one rounding.
        h = R.rnd(f32(np.linspace(1, 2, 2001)), F16)
        np.testing.assert_array_equal(R.pow_scalar(h, 3.0, F16),
                                      R.rnd(f32(h.astype(np.float64) ** 3), F16))


class QParamsTest(unittest.TestCase):

    def test_five_ones(self):
        x = np.ones((1, 5), np.float32)
        for dt in (F32, F16, BF16):
            obs = R.make_observer("minmax", args(num_bits=8))
            s, zp = obs.get_qparams(x, dt)
            self.assertEqual(s.shape, (1,))
            self.assertEqual(float(s[0]), float(R.rnd(f32([1 / 127.5]), dt)[0]))
            self.assertAlmostEqual(float(s[0]), 0.0078, delta=1e-4)
            self.assertEqual(int(zp.values[0]), 0)
            obs = R.make_observer("minmax", args(num_bits=8, symmetric=False))
            s, zp = obs.get_qparams(x, dt)
            self.assertEqual(float(s[0]), float(R.rnd(f32([1 / 255.0]), dt)[0]))
            self.assertAlmostEqual(float(s[0]), 0.0039, delta=1e-4)
            self.assertEqual(int(zp.values[0]), -128)

    def test_running_min_max(self):
        obs = R.make_observer("minmax", args(num_bits=8))
        obs.get_qparams(np.ones((1, 5), np.float32), F32)
        obs.get_qparams(f32([[127, 1, 1, 1, 1]]), F32)
        self.assertAlmostEqual(float(obs.max_val[None][0]), 2.26, delta=1e-6)
        obs.get_qparams(f32([[-128, 1, 1, 1, 1]]), F32)
        self.assertAlmostEqual(float(obs.min_val[None][0]), -0.29, delta=1e-6)
        # bf16, each step rounded: 127 - 1 = 126; 0.01 * 126 = 1.26 -> 1.2578125;
        # 1 + 1.2578125 = 2.2578125 -> 2.25 (bf16 spacing 2^-6 above 2).
        obs = R.make_observer("minmax", args(num_bits=8))
        obs.get_qparams(np.ones((1, 5), np.float32), BF16)
        obs.get_qparams(f32([[127, 1, 1, 1, 1]]), BF16)
        self.assertEqual(float(obs.max_val[None][0]), 2.25)
        obs = R.make_observer("minmax", args(num_bits=8))
        obs.get_qparams(np.ones((1, 5), np.float32), F32)
        obs.get_qparams(f32([[127, 1, 1, 1, 1]]), F32)
        # 1 + float32(0.01) * 126 in float32, step by step.
        want = np.float32(1) + np.float32(np.float32(0.01) * np.float32(126))
        self.assertEqual(float(obs.max_val[None][0]), float(want))

    def test_averaging_constant_one_keeps_no_state(self):
        obs = R.make_observer("minmax", args(num_bits=8), {"averaging_constant": 1.0})
        obs.get_qparams(np.ones((1, 5), np.float32), F32)
        s, _ = obs.get_qparams(np.full((1, 5), 0.5, np.float32), F32)
        self.assertEqual(float(s[0]), float(np.float32(0.5) / np.float32(127.5)))
        self.assertEqual(obs.min_val, {})

    def test_zero_tensor(self):
        s, zp, _ = R.calculate_qparams(f32([0.0]), f32([0.0]), args(num_bits=8), F32)
        self.assertEqual(float(s[0]), 2.0 ** -23)
        self.assertEqual(int(zp.values[0]), 0)
        s, zp, _ = R.calculate_qparams(f32([0.0]), f32([0.0]), args(num_bits=8, symmetric=False), BF16)
        self.assertEqual(float(s[0]), 2.0 ** -23)
        self.assertEqual(int(zp.values[0]), -128)

    def test_positive_only_range_includes_zero(self):
        s, zp, _ = R.calculate_qparams(f32([2.0]), f32([4.0]), args(num_bits=8, symmetric=False), F32)
        self.assertEqual(float(s[0]), float(np.float32(4) / np.float32(255)))
        self.assertEqual(int(zp.values[0]), -128)

    def test_int16_zero_point_wraps_in_bf16(self):
        # bf16: s = bf16(1/65535) = 2^-16, zp = -32768 + 65536 = 32768 -> clamp
        # to 32767 -> bf16 32768 -> int16 wraps to -32768 (x86 cast, D3).
        s, zp, _ = R.calculate_qparams(f32([-1.0]), f32([0.0]), args(num_bits=16, symmetric=False), BF16)
        self.assertEqual(float(s[0]), 2.0 ** -16)
        self.assertEqual(zp.kind, "i16")
        self.assertEqual(int(zp.values[0]), -32768)
        s, zp, _ = R.calculate_qparams(f32([-1.0]), f32([0.0]), args(num_bits=16, symmetric=False), F32)
        self.assertEqual(int(zp.values[0]), 32767)

    def test_int32_zero_point_overflow(self):
        # float32 q_max of 32 bits is 2^31, cast -> INT32_MIN.
        # s = 1024 / 2^32 = 2^-22 (above eps); zp = -2^31 + 2^32 = 2^31.
        s, zp, _ = R.calculate_qparams(f32([-1024.0]), f32([0.0]), args(num_bits=32, symmetric=False), F32)
        self.assertEqual(float(s[0]), 2.0 ** -22)
        self.assertEqual(zp.kind, "i32")
        self.assertEqual(int(zp.values[0]), -(2 ** 31))

    def test_fp8_scale(self):
        s, zp, _ = R.calculate_qparams(f32([-896.0]), f32([10.0]), args(num_bits=8, type="float"), F32)
        self.assertEqual(float(s[0]), 2.0)
        self.assertEqual(zp.kind, "f8")
        self.assertEqual(float(zp.values[0]), 0.0)

    def test_fp8_asymmetric_zero_point(self):
        s, zp, _ = R.calculate_qparams(f32([-1.0]), f32([3.0]), args(num_bits=8, type="float", symmetric=False), F32)
        self.assertEqual(float(s[0]), float(np.float32(4) / np.float32(896)))
        want = R.e4m3_round(f32([np.float32(-448) - np.float32(np.float32(-1) / s[0])]))
        self.assertEqual(float(zp.values[0]), float(want[0]))

    def test_fp4_asymmetric_not_implemented(self):
        with self.assertRaises(NotImplementedError):
            R.calculate_qparams(f32([-1.0]), f32([1.0]), args(num_bits=4, type="float", symmetric=False), F32)

    def test_fp4_with_global_scale(self):
        a = args(num_bits=4, type="float", strategy="tensor_group", group_size=16)
        g = R.generate_gparam(f32([-12.0]), f32([6.0]), F32)
        self.assertEqual(float(g[0]), 224.0)
        s, zp, is_fp8 = R.calculate_qparams(f32([-12.0, 0.0, -1e-6, 0.0]), f32([6.0, 0.0, 0.0, 0.3]), a, F32, g)
        self.assertTrue(is_fp8)
        # 224 * 12/6 = 448; zero -> 0.125; tiny -> e4m3 0 -> 0.125; 224*0.05 = 11.2 -> 11.
        self.assertEqual([float(v) for v in s], [448.0, 0.125, 0.125, 11.0])

    def test_global_scale(self):
        self.assertEqual(float(R.generate_gparam(f32([0.0]), f32([0.0]), F32)[0]), 1.0)
        self.assertEqual(float(R.generate_gparam(f32([0.0]), f32([0.0]), F16)[0]), 1.0)
        self.assertEqual(float(R.generate_gparam(f32([-2.0]), f32([1.0]), BF16)[0]), 1344.0)
        self.assertEqual(float(R.generate_gparam(f32([0.5]), f32([3.0]), F32)[0]), 896.0)
        # 2688 / m overflows float32 below ~7.9e-36: 1.0.
        self.assertEqual(float(R.generate_gparam(f32([0.0]), f32([1e-36]), F32)[0]), 1.0)
        self.assertEqual(float(R.generate_gparam(f32([0.0]), f32([1e-30]), F32)[0]),
                         float(np.float32(2688) / np.float32(1e-30)))
        g = R.generate_gparam(f32([0.0]), f32([3.0]), F32)
        self.assertEqual(g.dtype, np.float32)
        self.assertEqual(g.shape, (1,))
        # The PyTorch variant (D9): reciprocal, then multiply, in the dtype.
        m = R.rnd(f32([0.7]), BF16)
        gp = R.generate_gparam(f32([0.0]), m, BF16, mode="pytorch")
        self.assertEqual(float(gp[0]), float(R.mul(R.div(f32(1), m, BF16), f32(2688), BF16)[0]))
        self.assertEqual(float(R.generate_gparam(f32([0.0]), f32([0.01]), F16, mode="pytorch")[0]), 1.0)

    @unittest.skipIf(torch is None, "torch not installed")
    def test_float32_qparams_match_torch(self):
        """float32 calculate_qparams vs the same formula in torch ops (written here)."""
        rng = np.random.default_rng(4)
        mn = (-np.abs(rng.standard_normal(3000)) * rng.choice([1e-3, 1, 50], 3000)).astype(np.float32)
        mx = (np.abs(rng.standard_normal(3000)) * rng.choice([1e-3, 1, 50], 3000)).astype(np.float32)
        for bits in (2, 4, 8, 16):
            for sym in (True, False):
                a = args(num_bits=bits, symmetric=sym)
                s, zp, _ = R.calculate_qparams(mn, mx, a, F32)
                tmn = torch.minimum(torch.from_numpy(mn), torch.zeros(1))
                tmx = torch.maximum(torch.from_numpy(mx), torch.zeros(1))
                qmin = torch.tensor(-(2.0 ** (bits - 1)))
                qmax = torch.tensor(2.0 ** (bits - 1) - 1)
                br = qmax - qmin
                if sym:
                    ts = torch.maximum(tmn.abs(), tmx.abs()) / (float(br) / 2)
                    ts = torch.clamp(ts, min=torch.finfo(torch.float32).eps)
                    tzp = torch.zeros_like(ts)
                else:
                    ts = torch.clamp((tmx - tmn) / float(br), min=torch.finfo(torch.float32).eps)
                    tzp = torch.clamp(qmin - tmn / ts, qmin, qmax)
                tzp = torch.round(tzp).to(torch.int32)
                np.testing.assert_array_equal(s, ts.numpy())
                np.testing.assert_array_equal(zp.values, tzp.numpy())


class FakeQuantTest(unittest.TestCase):

    def test_int8(self):
        a = args(num_bits=8)
        zp = R.ZeroPoint("i8", np.zeros((1, 1), np.int64))
        x = f32([[1.0, -1.0, 0.5, 2.0, 0.00390625]])
        dq = R.fake_quantize(x, f32([[1 / 64]]), zp, a, F32)
        # 0.5*64 = 32; 2*64 = 128 -> clamp 127; 0.25 -> 0.
        np.testing.assert_array_equal(dq, f32([[1.0, -1.0, 0.5, 127 / 64, 0.0]]))

    def test_global_scale_computes_in_float32(self):
        a = args(num_bits=4, type="float", strategy="tensor_group", group_size=16)
        zp = R.ZeroPoint("f8", np.zeros((1, 1), np.float32))
        x = R.rnd(f32([[0.3, -0.7, 1.1]]), BF16)
        dq = R.fake_quantize(x, f32([[448.0]]), zp, a, BF16, np.float32(1344.0))
        # s' = 448/1344 = 1/3 (float32); x/s' then the fp4 table, * s' in
        # float32; the group path's output is cast back to bf16.
        sp = np.float32(448) / np.float32(1344)
        want = R.rnd(R.fp4_round(x / sp) * sp, BF16)
        np.testing.assert_array_equal(dq, want)
        self.assertNotEqual(float((R.fp4_round(x / sp) * sp)[0, 0]), float(dq[0, 0]))

    def test_global_scale_int_quantized_value_not_rounded(self):
        # int12 asymmetric with a global scale: q = x / s' + zp is float32 and
        # is dequantized without a bf16 rounding in between (D5). s' =
        # float32(1 / 257): x / s' rounds to 257, q = 1257 (not a bf16 value,
        # which would be 1256), dequantized 257 * s' ~ 1 -> bf16 1.0 (with q
        # rounded to bf16 it would be 256 * s' -> 0.99609375).
        a = args(num_bits=12, symmetric=False, strategy="tensor_group", group_size=16)
        zp = R.ZeroPoint("i16", np.full((1, 1), 1000, np.int64))
        dq = R.fake_quantize(f32([[1.0]]), f32([[1.0]]), zp, a, BF16, np.float32(257.0))
        self.assertEqual(float(dq[0, 0]), 1.0)


class MseTest(unittest.TestCase):

    def test_ones_keep_full_range(self):
        # p = 1 clamps 127.5 to 127 (error (1-127/127.5)^2.4 per element);
        # smaller p only increase the error: best stays i = 0, stop after 5.
        x = np.ones((1, 5), np.float32)
        mn, mx = R.mse_search(x, args(num_bits=8), F32, None, 0.2, 5, 100.0, 2.4)
        self.assertEqual((float(mn[0]), float(mx[0])), (1.0, 1.0))

    def test_matches_float64_search(self):
        """Chosen shrink factor = argmin of the float64 error with the same patience rule."""
        rng = np.random.default_rng(5)
        a = args(num_bits=4)
        for trial in range(20):
            x = rng.standard_normal((1, 64)).astype(np.float32)
            x[0, 0] = 6.0 + trial  # an outlier: shrinking helps
            mn, mx = R.mse_search(x, a, F32, None, 0.2, 5, 100.0, 2.4)
            amin, amax = x.min(), x.max()
            best, count, chosen = np.inf, 0, None
            for i in range(20):
                p = np.float32(1 - i / 100.0)
                s = max(max(abs(p * amin), abs(p * amax)) / 7.5, 2.0 ** -23)
                q = np.clip(np.round(x.astype(np.float64) / s), -8, 7) * s
                err = np.sum(np.abs(q - x) ** 2.4)
                if err < best:
                    best, chosen, count = err, p, 0
                else:
                    count += 1
                    if count >= 5:
                        break
            self.assertEqual(float(mx[0]), float(np.float32(chosen * amax)), trial)

    @staticmethod
    def _search64(x, patience, bits=4, norm=2.0, steps=20):
        """Float64 MSE search of symmetric int rows with one shared counter."""
        qmax, qmin = 2 ** (bits - 1) - 1, -2 ** (bits - 1)
        best = np.full(x.shape[0], np.inf)
        chosen = np.zeros(x.shape[0])
        count = 0
        for i in range(steps):
            p = 1 - i / 100
            s = np.maximum(p * np.abs(x).max(axis=1, keepdims=True) / ((qmax - qmin) / 2), 2.0 ** -23)
            err = np.sum(np.abs(np.clip(np.round(x / s), qmin, qmax) * s - x) ** norm, axis=1)
            better = err < best
            if better.any():
                best[better], chosen[better], count = err[better], p, 0
            else:
                count += 1
                if count >= patience:
                    break
        return chosen

    def test_patience_counter_shared_by_units(self):
        # Row 0 improves at every early step. Row 1 is worse at p = 0.99 than
        # at p = 1 but better at p = 0.98: alone with patience 1 its search
        # stops at p = 1; next to row 0 the shared counter keeps resetting.
        row0 = [0.875, 0.125, -0.75, -0.875, -0.5, 0.25, -1.0, -0.25]
        row1 = [-0.25, -0.75, 0.0, -2.75, 0.125, -0.875, 1.625, -1.625]
        a = args(num_bits=4)
        mn, mx = R.mse_search(f32([row1]), a, F32, None, 0.2, 1, 100.0, 2.0)
        self.assertEqual((float(mn[0]), float(mx[0])), (-2.75, 1.625))
        x = f32([row0, row1])
        mn, mx = R.mse_search(x, a, F32, None, 0.2, 1, 100.0, 2.0)
        p = self._search64(x.astype(np.float64), 1)
        self.assertLess(p[1], 0.99)
        for r in range(2):
            self.assertEqual(float(mn[r]), float(np.float32(np.float32(p[r]) * x[r].min())))
            self.assertEqual(float(mx[r]), float(np.float32(np.float32(p[r]) * x[r].max())))

    def test_f16_overflow_keeps_initial_ones_zeros(self):
        # All error sums overflow f16 to inf, never < 65504: min/max stay 1/0
        # and the scale becomes eps.
        x = R.rnd(np.full((1, 16), 60000.0, np.float32), F16)
        x[0, 1] = -60000.0
        obs = R.make_observer("memoryless_mse", args(num_bits=8))
        s, _ = obs.get_qparams(x, F16)
        self.assertEqual(float(s[0]), 2.0 ** -23)

    def test_mse_averages_whole_tensor_id(self):
        a = args(num_bits=8)
        obs = R.make_observer("mse", a)
        obs.get_qparams(np.ones((1, 8), np.float32), F32)
        s, _ = obs.get_qparams(np.full((1, 8), 3.0, np.float32), F32)
        # 1 + 0.01 * (3 - 1) = 1.02 (SPEC §9.2: id None is averaged).
        self.assertEqual(float(obs.max_val[None][0]), float(np.float32(1) + np.float32(np.float32(0.01) * 2)))
        mem = R.make_observer("memoryless_mse", a)
        mem.get_qparams(np.ones((1, 8), np.float32), F32)
        s2, _ = mem.get_qparams(np.full((1, 8), 3.0, np.float32), F32)
        self.assertEqual(float(s2[0]), float(np.float32(3) / np.float32(127.5)))

    def test_c1_reading(self):
        a = args(num_bits=8)
        x1 = f32([[1.0, -0.5]])
        x2 = f32([[1e-8, -0.5]])
        o1 = R.make_observer("mse", a, {"averaging_constant": 1.0})
        o2 = R.make_observer("mse", a, {"averaging_constant": 1.0}, mse_c1_shortcut=True)
        for o in (o1, o2):
            o.get_qparams(x1, F32)
            o.get_qparams(x2, F32)
        # 1 + (1e-8 - 1) in float32 is 0, not 1e-8.
        self.assertEqual(float(o1.max_val[None][0]), 0.0)
        self.assertEqual(o2.max_val, {})


class ObserverTest(unittest.TestCase):

    def test_shapes(self):
        rng = np.random.default_rng(6)
        x = rng.standard_normal((10, 37)).astype(np.float32)
        cases = [
            (dict(num_bits=8), (1,)),
            (dict(num_bits=8, strategy="channel"), (10, 1)),
            (dict(num_bits=8, strategy="token"), (10, 1)),
            (dict(num_bits=4, group_size=16), (10, 3)),
            (dict(num_bits=4, type="float", strategy="tensor_group", group_size=16), (10, 3)),
            (dict(num_bits=8, type="float", strategy="block", block_structure=[4, 16]), (3, 3)),
        ]
        for kw, shape in cases:
            for name in R.OBSERVER_NAMES:
                a = args(**kw)
                obs = R.make_observer(name, a)
                g = obs.get_gparam(x, F32) if a.strategy == "tensor_group" else None
                s, zp = obs.get_qparams(x, F32, global_scale=g)
                self.assertEqual(s.shape, shape, (kw, name))
                self.assertEqual(np.asarray(zp.values).shape, shape)

    def test_partial_groups_and_blocks_are_units(self):
        x = np.zeros((5, 37), np.float32)
        x[4, 36] = -3.0  # only in the last (short) group / partial edge block
        a = args(num_bits=8, group_size=16)
        s, _ = R.make_observer("minmax", a).get_qparams(x, F32)
        self.assertEqual(float(s[4, 2]), float(np.float32(3) / np.float32(127.5)))
        self.assertEqual(float(s[4, 1]), 2.0 ** -23)
        a = args(num_bits=8, strategy="block", block_structure=[4, 16])
        for name in R.OBSERVER_NAMES:
            s, _ = R.make_observer(name, a).get_qparams(x, F32)
            self.assertEqual(s.shape, (2, 3))
            self.assertGreater(float(s[1, 2]), 0.02, name)
            self.assertEqual(float(s[0, 2]), 2.0 ** -23)

    def test_g_idx_equals_permuted(self):
        rng = np.random.default_rng(7)
        x = rng.standard_normal((6, 32)).astype(np.float32)
        g_idx = rng.permutation(np.repeat(np.arange(4), 8))
        for name in R.OBSERVER_NAMES:
            a = args(num_bits=4, group_size=8)
            s1, z1 = R.make_observer(name, a).get_qparams(x, BF16 if name == "mse" else F32, g_idx=g_idx)
            perm = np.argsort(g_idx, kind="stable")
            s2, z2 = R.make_observer(name, a).get_qparams(x[:, perm], BF16 if name == "mse" else F32)
            np.testing.assert_array_equal(s1, s2)
            np.testing.assert_array_equal(z1.values, z2.values)
            s3, _ = R.make_observer(name, a).get_qparams(x, F32, g_idx=np.full(32, -1))
            s4, _ = R.make_observer(name, a).get_qparams(x, F32)
            np.testing.assert_array_equal(s3, s4)

    def test_group_zero_distinct_from_whole_tensor(self):
        a = args(num_bits=4, type="float", strategy="tensor_group", group_size=4)
        obs = R.make_observer("minmax", a)
        x = f32([[1.0, 2.0, 3.0, 4.0, 8.0, 0.0, 0.0, 0.0]])
        g = obs.get_gparam(x, F32)
        obs.get_qparams(x, F32, global_scale=g)
        self.assertEqual(float(obs.max_val[None][0]), 8.0)
        self.assertEqual(float(obs.max_val[0][0]), 4.0)
        self.assertEqual(float(obs.max_val[1][0]), 8.0)

    def test_gparam_statistics(self):
        a = args(num_bits=4, type="float", strategy="tensor_group", group_size=4)
        x1 = f32([[1.0, 2.0, 3.0, 4.0]])
        x2 = f32([[1.0, 2.0, 3.0, 104.0]])
        g = {}
        for name in R.OBSERVER_NAMES:
            obs = R.make_observer(name, a)
            obs.get_gparam(x1, F32)
            g[name] = float(obs.get_gparam(x2, F32)[0])
        m_avg = np.float32(4) + np.float32(np.float32(0.01) * np.float32(100))
        self.assertEqual(g["minmax"], float(np.float32(2688) / m_avg))
        self.assertEqual(g["static_minmax"], float(np.float32(2688) / np.float32(104)))
        for name in ("memoryless_minmax", "mse", "memoryless_mse"):
            self.assertEqual(g[name], float(np.float32(2688) / np.float32(104)), name)
        with self.assertRaises(R.QcalError):
            R.make_observer("minmax", args(num_bits=8)).get_gparam(x1, F32)

    def test_static_minmax(self):
        obs = R.make_observer("static_minmax", args(num_bits=8, strategy="channel"))
        obs.get_qparams(f32([[1.0, -2.0], [0.5, 0.5]]), F32)
        obs.get_qparams(f32([[0.5, -0.5], [3.0, 0.0]]), F32)
        np.testing.assert_array_equal(obs.min_val[None], f32([-2.0, 0.0]))
        np.testing.assert_array_equal(obs.max_val[None], f32([1.0, 3.0]))

    def test_token_counting_and_empty(self):
        obs = R.make_observer("minmax", args(num_bits=8, strategy="token"))
        self.assertIsNone(obs.num_observed_tokens)
        obs.forward(np.ones((2, 3, 4), np.float32), F32)
        self.assertIsNone(obs.num_observed_tokens)
        obs.forward(np.ones((6, 4), np.float32), F32)
        self.assertEqual(obs.num_observed_tokens, 6)
        before = dict(obs.min_val)
        obs.forward(np.zeros((0, 4), np.float32), F32)
        self.assertEqual(obs.num_observed_tokens, 6)
        self.assertEqual(list(obs.min_val), list(before))
        with self.assertRaises(R.ShapeError):
            obs.forward(np.ones((5, 4), np.float32), F32)
        obs.reset()
        self.assertIsNone(obs.num_observed_tokens)
        self.assertIsNone(obs.scale)

    def test_non_finite(self):
        obs = R.make_observer("minmax", args(num_bits=8))
        x = np.ones((3, 4), np.float32)
        x[1, 2] = np.inf
        with self.assertRaisesRegex(R.NonFiniteError, r"w\.weight.*\[1, 2\]"):
            obs.forward(x, F32, name="w.weight")


class ArgsTest(unittest.TestCase):

    def test_inference_and_defaults(self):
        self.assertEqual(args().strategy, "tensor")
        self.assertEqual(args().observer, "minmax")
        self.assertEqual(args(group_size=128).strategy, "group")
        self.assertEqual(args(group_size=-1).strategy, "channel")
        self.assertEqual(args(type="FLOAT", strategy="Block", block_structure="128x64").block_structure, [128, 64])
        self.assertEqual(args(group_size=8, actorder=True).actorder, "group")
        self.assertIsNone(args(strategy="token", dynamic=True).observer)
        self.assertEqual(args(strategy="tensor_group", group_size=16, dynamic="local").observer, "minmax")

    def test_errors(self):
        bad = [
            dict(group_size=-2), dict(strategy="group"), dict(strategy="channel", group_size=16),
            dict(strategy="channel", actorder="group"), dict(strategy="channel", dynamic=True),
            dict(strategy="token", dynamic="local"), dict(type="float", num_bits=6),
            dict(num_bits=0), dict(num_bits=33), dict(strategy="block"),
            dict(strategy="block", block_structure=[0, 4]), dict(foo=1),
        ]
        for kw in bad:
            with self.assertRaises(R.ArgsError, msg=str(kw)):
                args(**kw)

    def test_schemes(self):
        self.assertEqual(R.scheme_args("NVFP4").strategy, "tensor_group")
        self.assertEqual(R.scheme_args("FP8_BLOCK").block_structure, [128, 128])
        self.assertFalse(R.scheme_args("W4A16_ASYM").symmetric)
        with self.assertRaises(R.ArgsError):
            R.scheme_args("W3A16")

    def test_kwargs(self):
        self.assertEqual(R.validate_kwargs("mse", {"norm": 3})["norm"], 3)
        for name, kw in [("minmax", {"norm": 2}), ("minmax", {"averaging_constant": 0}),
                         ("mse", {"patience": 0}), ("mse", {"grid": -1}), ("mse", {"maxshrink": 1.5}),
                         ("memoryless_mse", {"averaging_constant": 0.5}),
                         ("static_minmax", {"averaging_constant": 0.5}), ("nope", {})]:
            with self.assertRaises(R.ArgsError, msg=str((name, kw))):
                R.validate_kwargs(name, kw)


class ToolsTest(unittest.TestCase):

    def test_calibrate_storage(self):
        rng = np.random.default_rng(8)
        w = R.rnd(rng.standard_normal((4, 32)).astype(np.float32), BF16)
        tensors = {"l.weight": (BF16, w), "l.bias": (BF16, w[0]), "n.weight": (F32, np.ones(4, np.float32))}
        out = R.calibrate(tensors, R.scheme_args("NVFP4"), "minmax")
        self.assertEqual(sorted(out), ["l.weight_global_scale", "l.weight_scale", "l.weight_zero_point"])
        self.assertEqual(out["l.weight_scale"][:2], ("F8_E4M3", [4, 2]))
        self.assertEqual(out["l.weight_zero_point"][0], "F8_E4M3")
        self.assertEqual(out["l.weight_global_scale"][:2], ("F32", [1]))
        out = R.calibrate(tensors, R.parse_args({"num_bits": 16, "symmetric": False, "strategy": "channel"}), "mse")
        self.assertEqual(out["l.weight_scale"][:2], ("BF16", [4, 1]))
        self.assertEqual(out["l.weight_zero_point"][:2], ("I16", [4, 1]))

    def test_token_count(self):
        b1 = {"a.input": (F32, np.ones((3, 8), np.float32)), "b.input": (F32, np.ones((1, 3, 8), np.float32)),
              "c.input": (F32, np.zeros((0, 8), np.float32))}
        b2 = {"a.input": (F32, np.ones((5, 8), np.float32)), "b.input": (F32, np.ones((1, 2, 8), np.float32)),
              "c.input": (F32, np.zeros((0, 8), np.float32))}
        counts, out = R.token_count([b1, b2], R.parse_args({"num_bits": 8}), "minmax")
        self.assertEqual(counts, {"a": 8, "b": None, "c": None})
        self.assertEqual(sorted(out), ["a.input_scale", "a.input_zero_point", "b.input_scale", "b.input_zero_point"])
        self.assertEqual(json.dumps(counts, sort_keys=True), '{"a": 8, "b": null, "c": null}')


if __name__ == "__main__":
    unittest.main()
