"""Tests of the comparison harness's plumbing, without the C++ binaries.

safetensors I/O, the bitwise comparison and its report, and whole harness runs
against fake_tool.py (a Python stand-in for the tools built on the reference):
faithful (must pass), corrupted output / counts / exit codes (must fail).
"""

import io
import json
import os
import struct
import sys
import tempfile
import unittest

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import compare_tools as C  # noqa: E402
import qcal_reference as R  # noqa: E402
import safetensors_io as st_io  # noqa: E402


class SafetensorsTest(unittest.TestCase):

    def setUp(self):
        self.dir = tempfile.mkdtemp(dir=os.environ.get("TEST_TMPDIR"))

    def test_round_trip_every_dtype(self):
        rng = np.random.default_rng(0)
        x = rng.standard_normal((3, 5)).astype(np.float32)
        tensors = {
            "a.f32": st_io.from_array(R.F32, x),
            "b.f16": st_io.from_array(R.F16, R.rnd(x, R.F16)),
            "c.bf16": st_io.from_array(R.BF16, R.rnd(x, R.BF16)),
            "d.f8": ("F8_E4M3", [2, 2], R.encode_values(R.e4m3_round(np.float32([[1, -2.5], [448, 0.001]])), "F8_E4M3")),
            "e.i8": ("I8", [3], R.encode_values([-128, 0, 127], "I8")),
            "f.i16": ("I16", [2], R.encode_values([-32768, 32767], "I16")),
            "g.i32": ("I32", [1], R.encode_values([-2 ** 31], "I32")),
            "h.scalar": ("F32", [], R.encode_values(np.float32([7.0]), "F32")),
            "i.empty": ("BF16", [0, 4], b""),
        }
        path = os.path.join(self.dir, "t.safetensors")
        st_io.write(path, tensors, {"observer": "mse"})
        with open(path, "rb") as f:
            data = f.read()
        (n,) = struct.unpack("<Q", data[:8])
        self.assertEqual(n % 8, 0)
        header = json.loads(data[8:8 + n])
        self.assertEqual(header["__metadata__"], {"observer": "mse"})
        self.assertEqual(header["a.f32"]["data_offsets"], [0, 60])
        got, meta = st_io.read(path)
        self.assertEqual(meta, {"observer": "mse"})
        self.assertEqual(got, {k: (v[0], list(v[1]), v[2]) for k, v in tensors.items()})
        np.testing.assert_array_equal(st_io.decode(*got["a.f32"]), x)
        np.testing.assert_array_equal(st_io.decode(*got["c.bf16"]), R.rnd(x, R.BF16))
        np.testing.assert_array_equal(st_io.decode(*got["b.f16"]), R.rnd(x, R.F16))
        np.testing.assert_array_equal(st_io.decode(*got["d.f8"]), np.float32([[1, -2.5], [448, 0.001953125]]))  # 0.001 -> 2^-9
        self.assertEqual(list(st_io.decode(*got["f.i16"])), [-32768, 32767])
        self.assertEqual(st_io.decode(*got["h.scalar"]).shape, ())
        self.assertEqual(st_io.to_observed(*got["c.bf16"])[0], R.BF16)
        self.assertIsNone(st_io.to_observed(*got["e.i8"]))

    def test_bf16_bytes_are_upper_halves(self):
        raw = st_io.from_array(R.BF16, np.float32([1.0, -2.0]))[2]
        self.assertEqual(raw, bytes([0x80, 0x3F, 0x00, 0xC0]))

    def test_malformed(self):
        path = os.path.join(self.dir, "bad.safetensors")
        for blob in (b"\x01\x00", struct.pack("<Q", 100) + b"{}",
                     struct.pack("<Q", 2) + b"[]",
                     struct.pack("<Q", 8) + b"not json",
                     (lambda h: struct.pack("<Q", len(h)) + h + b"\x00" * 4)(
                         json.dumps({"x": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}).encode()),
                     (lambda h: struct.pack("<Q", len(h)) + h)(
                         json.dumps({"x": {"dtype": "F99", "shape": [0], "data_offsets": [0, 0]}}).encode())):
            with open(path, "wb") as f:
                f.write(blob)
            with self.assertRaises(st_io.FormatError, msg=repr(blob)):
                st_io.read(path)


class CompareTest(unittest.TestCase):

    def test_identical(self):
        t = {"w_scale": st_io.from_array(R.BF16, np.float32([[1.0, 2.0]]))}
        self.assertEqual(C.compare_tensor_dicts("c", t, dict(t)), (1, []))

    def test_value_mismatch_reports_first_element(self):
        e = {"w_scale": st_io.from_array(R.F32, np.float32([[1, 2, 3], [4, 5, 6]]))}
        g = {"w_scale": st_io.from_array(R.F32, np.float32([[1, 2, 3], [4, np.nextafter(np.float32(5), np.float32(9)), 7]]))}
        compared, mm = C.compare_tensor_dicts("c", e, g)
        self.assertEqual(compared, 1)
        self.assertEqual(len(mm), 1)
        text = str(mm[0])
        self.assertIn("2 of 6 elements differ", text)
        self.assertIn("first at [1, 1]", text)
        self.assertIn("expected 5.0 (0x40a00000)", text)
        self.assertIn("got 5.000000476837158 (0x40a00001)", text)

    def test_int_and_fp8_mismatch(self):
        e = {"z": ("I16", [2], R.encode_values([-32768, 5], "I16"))}
        g = {"z": ("I16", [2], R.encode_values([32767, 5], "I16"))}
        text = str(C.compare_tensor_dicts("c", e, g)[1][0])
        self.assertIn("expected -32768 (0x8000), got 32767 (0x7fff)", text)
        e = {"s": ("F8_E4M3", [1], bytes([0x7E]))}
        g = {"s": ("F8_E4M3", [1], bytes([0x7F]))}
        self.assertIn("expected 448.0 (0x7e), got nan (0x7f)", str(C.compare_tensor_dicts("c", e, g)[1][0]))

    def test_structure_mismatches(self):
        a = st_io.from_array(R.F32, np.float32([1.0]))
        b = st_io.from_array(R.BF16, np.float32([1.0]))
        compared, mm = C.compare_tensor_dicts("c", {"x": a, "y": a}, {"x": b, "z": a})
        self.assertEqual(compared, 1)
        self.assertEqual(sorted(m.what for m in mm), ["dtype/shape", "missing", "unexpected"])
        _, mm = C.compare_tensor_dicts("c", {"x": ("F32", [1, 2], b"\0" * 8)}, {"x": ("F32", [2, 1], b"\0" * 8)})
        self.assertEqual(mm[0].what, "dtype/shape")

    def test_counts(self):
        self.assertEqual(C.compare_counts("c", {"a": 3, "b": None}, {"a": 3, "b": None}), [])
        mm = C.compare_counts("c", {"a": 3, "b": None}, {"a": 4, "b": 0, "c": 1})
        self.assertEqual(len(mm), 1)
        self.assertIn("a: expected 3, got 4", mm[0].detail)
        self.assertIn("b: expected null, got 0", mm[0].detail)
        self.assertIn('c: expected "<absent>", got 1', mm[0].detail)

    def test_summary(self):
        case = C.Case("calibrate/args=x/minmax", "calibrate", [])
        r = C.Result(case)
        r.compared = 3
        r.mismatches = [C.Mismatch(case.name, "w_scale", "values", "1 of 4 elements differ")]
        ok = C.Result(C.Case("token_count/args=y/mse", "token_count", []))
        ok.compared = 2
        buf = io.StringIO()
        self.assertEqual(C.summarize([r, ok], 10, buf), 1)
        text = buf.getvalue()
        self.assertRegex(text, r"calibrate/args\s+1\s+3\s+1\s+1")
        self.assertRegex(text, r"token_count/args\s+1\s+2\s+0\s+0")
        self.assertRegex(text, r"total\s+2\s+5\s+1\s+1")
        self.assertIn("calibrate/args=x/minmax: w_scale: values: 1 of 4 elements differ", text)

    def test_cases_cover_everything(self):
        cases = C.build_cases(quick=False)
        names = [c.name for c in cases]
        self.assertEqual(len(names), len(set(names)))
        for scheme in R.SCHEMES:
            for obs in C.OBSERVERS:
                self.assertIn("calibrate/scheme=%s/%s" % (scheme, obs), names)
        strategies = set()
        for c in cases:
            if c.args is not None and c.expect_rc == 0:
                a = R.parse_args(c.args)
                strategies.add((c.tool, a.strategy))
        for st in ("tensor", "channel", "group", "tensor_group", "block", "token"):
            self.assertIn(("calibrate", st), strategies)
        self.assertTrue(all(any("--threads=" in f for f in c.flags) for c in cases))
        quick = C.build_cases(quick=True)
        self.assertLess(len(quick), len(cases))


def _wrapper(dirname, name, tool, extra=""):
    path = os.path.join(dirname, name)
    with open(path, "w") as f:
        f.write("#!/bin/sh\nexec %s %s %s %s \"$@\"\n"
                % (sys.executable, os.path.join(HERE, "fake_tool.py"), tool, extra))
    os.chmod(path, 0o755)
    return path


class HarnessRunTest(unittest.TestCase):
    """Whole harness runs on a few cases with the Python stand-in tools."""

    FILTER = r"scheme=NVFP4/minmax|args=int8_token_asym/mse$|args=int4_group32_asym/static|error/"

    def setUp(self):
        self.dir = tempfile.mkdtemp(dir=os.environ.get("TEST_TMPDIR"))
        self.cal = _wrapper(self.dir, "calibrate", "calibrate")
        self.tok = _wrapper(self.dir, "token_count", "token_count")

    def run_harness(self, cal, tok, filt=None):
        out = io.StringIO()
        old = sys.stdout
        sys.stdout = out
        try:
            rc = C.main(["--calibrate=" + cal, "--token_count=" + tok, "--quick",
                         "--filter=" + (filt or self.FILTER), "--workdir=" + os.path.join(self.dir, "work")])
        finally:
            sys.stdout = old
        return rc, out.getvalue()

    def test_faithful_tools_pass(self):
        rc, text = self.run_harness(self.cal, self.tok)
        self.assertEqual(rc, 0, text)
        self.assertIn("PASS", text)
        self.assertRegex(text, r"error cases\s+6\s+0\s+0\s+0")

    def test_corrupted_tensor_fails(self):
        bad = _wrapper(self.dir, "bad_calibrate", "calibrate",
                       "--corrupt=model.layers.0.mlp.down_proj.weight_scale")
        rc, text = self.run_harness(bad, self.tok, r"scheme=NVFP4/minmax")
        self.assertEqual(rc, 1, text)
        self.assertIn("model.layers.0.mlp.down_proj.weight_scale: values: 1 of", text)
        self.assertIn("FAIL", text)

    def test_corrupted_counts_fail(self):
        bad = _wrapper(self.dir, "bad_token_count", "token_count", "--corrupt_count=m.never")
        rc, text = self.run_harness(self.cal, bad, r"token_count/args=int8_token_asym/mse$")
        self.assertEqual(rc, 1, text)
        self.assertIn("m.never: expected null, got 1", text)

    def test_wrong_exit_code_fails(self):
        path = os.path.join(self.dir, "always_ok")
        with open(path, "w") as f:
            f.write("#!/bin/sh\nexit 0\n")
        os.chmod(path, 0o755)
        rc, text = self.run_harness(path, self.tok, r"error/calibrate/unknown_scheme")
        self.assertEqual(rc, 1, text)
        self.assertIn("exit code: expected 2, got 0", text)

    def test_missing_binary_is_usage_error(self):
        rc, _ = self.run_harness(os.path.join(self.dir, "nope"), self.tok)
        self.assertEqual(rc, 2)


if __name__ == "__main__":
    unittest.main()
