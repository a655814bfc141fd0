#!/usr/bin/env python3
"""Bit-for-bit comparison of qcal's `calibrate` and `token_count` with the reference.

Usage:
  python3 tests/reference/compare_tools.py --calibrate=PATH --token_count=PATH [--quick]
  python3 tests/reference/compare_tools.py --observer_driver=bazel-bin/tests/reference/observer_driver
      [--filter=REGEX] [--workdir=DIR] [--seed=N] [--gparam_mode=spec|pytorch]
      [--mse_c1_shortcut] [--max_details=N]

Generates random safetensors inputs (F32/F16/BF16 weights of awkward shapes,
outliers, subnormal-range and overflow-prone tensors; activation batches of
rank 2 and 3, empty batch tensors), runs the tools per SPEC §11 for every
preset scheme and a set of JSON args covering every strategy and type, for
every observer and several kwargs, computes the same with qcal_reference.py,
and compares every output tensor's name, dtype, shape and bytes, and
token_count's JSON counts. Also checks the exit codes of a few error cases
(and that the output file is left untouched). Prints a summary table and the
first differing element of each mismatch; exits 1 on any mismatch, 2 on a
usage error.
"""

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import qcal_reference as R  # noqa: E402
import safetensors_io as st_io  # noqa: E402

F32, F16, BF16 = R.F32, R.F16, R.BF16
OBSERVERS = ("minmax", "mse", "memoryless_minmax", "static_minmax", "memoryless_mse")

# ----------------------------------------------------------------------------
# Inputs.


def _as(dt, x):
    return R.rnd(np.asarray(x, np.float32), dt)


def make_weights(rng):
    """{name: (dt, float32 array)} of weights plus tensors the tool must skip."""
    w = {}

    def normal(shape, scale=0.05):
        return rng.standard_normal(shape).astype(np.float32) * np.float32(scale)

    x = normal((16, 200))
    x[rng.integers(0, 16, 5), rng.integers(0, 200, 5)] *= 40  # outliers
    w["model.layers.0.mlp.down_proj.weight"] = (F32, _as(F32, x))
    x = normal((130, 136), 0.02)  # rows not a multiple of 128, cols not of 16/32/128
    x[3, 7] = 0.9
    w["model.layers.0.self_attn.q_proj.weight"] = (BF16, _as(BF16, x))
    x = normal((24, 77), 0.1)
    x[:, 5] *= 12
    w["model.layers.0.self_attn.k_proj.weight"] = (F16, _as(F16, x))
    w["model.layers.1.single_row.weight"] = (BF16, _as(BF16, normal((1, 50), 1.0)))
    w["model.layers.1.tiny.weight"] = (F32, _as(F32, normal((2, 3), 1.0)))
    # Subnormal ranges: float32 / bf16 subnormals (< 2^-126), f16 subnormals (< 2^-14).
    w["sub.f32.weight"] = (F32, _as(F32, normal((4, 40), 1e-39)))
    w["sub.bf16.weight"] = (BF16, _as(BF16, normal((4, 40), 1e-39)))
    w["sub.f16.weight"] = (F16, _as(F16, normal((4, 40), 2e-6)))
    w["zeros.weight"] = (F16, np.zeros((3, 20), np.float32))
    x = rng.uniform(20000, 65504, (4, 32)).astype(np.float32) * rng.choice([-1, 1], (4, 32)).astype(np.float32)
    w["big.f16.weight"] = (F16, _as(F16, x))
    w["big.f32.weight"] = (F32, _as(F32, normal((3, 40), 1e30)))
    w["positive.weight"] = (BF16, _as(BF16, np.abs(normal((6, 33), 2.0)) + 0.5))
    w["negative.weight"] = (F32, _as(F32, -np.abs(normal((6, 33), 0.3)) - 0.01))
    w["constant.weight"] = (F32, np.full((2, 18), 0.3, np.float32))
    x = normal((33, 48), 1.0)
    x[0, 0] = 3000.0  # fp4 scales without a global scale exceed e4m3's range
    w["wide.range.weight"] = (BF16, _as(BF16, x))
    # Not observed: 1-D weight, non-target names.
    w["model.norm.weight"] = (F32, _as(F32, normal((64,), 1.0)))
    w["model.layers.0.mlp.down_proj.bias"] = (F32, _as(F32, normal((16,), 1.0)))
    w["lm_head.scales"] = (BF16, _as(BF16, normal((4, 4), 1.0)))
    return w


def make_batches(rng, varying):
    """Three calibration batches [{name: (dt, array)}] of module inputs."""
    batches = []
    for b in range(3):
        batch = {}
        x = rng.standard_normal((6, 40)).astype(np.float32)
        if b == 1:
            x[2, 3] = 25.0  # an outlier batch moves the running statistics
        batch["m.self_attn.q_proj.input"] = (F32, _as(F32, x))
        batch["m.mlp.up_proj.input"] = (BF16, _as(BF16, rng.standard_normal((2, 3, 40)) * (1 + b)))
        if b == 1:
            batch["m.mlp.down_proj.input"] = (F16, np.zeros((0, 40), np.float32))
        else:
            batch["m.mlp.down_proj.input"] = (F16, _as(F16, rng.standard_normal((6, 40)) * 0.1))
        batch["m.never.input"] = (F32, np.zeros((0, 40), np.float32))
        if varying:
            batch["m.varying.input"] = (BF16, _as(BF16, rng.standard_normal((5 + 2 * b - 3 * (b == 2), 40))))
        batches.append(batch)
    return batches


def make_gidx_weights(rng):
    """(weights, {name: g_idx}) for activation ordering (observer_driver only)."""
    w, gi = {}, {}
    for name, dt, rows, cols, gs in (("gidx.a.weight", F32, 8, 64, 16), ("gidx.b.weight", BF16, 5, 37, 16),
                                     ("gidx.c.weight", F16, 3, 48, 16)):
        w[name] = (dt, _as(dt, rng.standard_normal((rows, cols)) * rng.choice([0.1, 1.0, 5.0], (rows, cols))))
        sizes = [min(gs, cols - k * gs) for k in range(-(-cols // gs))]
        gi[name] = rng.permutation(np.repeat(np.arange(len(sizes)), sizes)).astype(np.int32)
    return w, gi


def write_tensors(path, tensors):
    st_io.write(path, {n: st_io.from_array(dt, x) for n, (dt, x) in tensors.items()})


def read_observable(path):
    """Reads a safetensors file back as {name: (dt, array)} of its float tensors."""
    tensors, _ = st_io.read(path)
    out = {}
    for name, (st, shape, raw) in tensors.items():
        obs = st_io.to_observed(st, shape, raw)
        if obs is not None:
            out[name] = obs
    return out


# ----------------------------------------------------------------------------
# Cases.

CAL_ARGS = {
    "int8_tensor_sym": {"num_bits": 8},
    "int8_tensor_asym": {"num_bits": 8, "symmetric": False},
    "int8_channel_sym": {"num_bits": 8, "strategy": "channel"},
    "int8_channel_asym": {"num_bits": 8, "group_size": -1, "symmetric": False},
    "int4_group16_sym": {"num_bits": 4, "group_size": 16},
    "int4_group32_asym": {"num_bits": 4, "group_size": 32, "symmetric": False},
    "int4_group128_actorder": {"num_bits": 4, "strategy": "group", "group_size": 128, "actorder": "group"},
    "int2_channel_asym": {"num_bits": 2, "strategy": "channel", "symmetric": False},
    "int2_group8_sym": {"num_bits": 2, "group_size": 8},
    "int1_channel_sym": {"num_bits": 1, "strategy": "channel"},
    "int3_group24_asym": {"num_bits": 3, "group_size": 24, "symmetric": False},
    "int16_channel_asym": {"num_bits": 16, "strategy": "channel", "symmetric": False},
    "int16_tensor_sym": {"num_bits": 16},
    "int12_group16_asym": {"num_bits": 12, "group_size": 16, "symmetric": False},
    "int24_tensor_asym": {"num_bits": 24, "symmetric": False},
    "int32_channel_asym": {"num_bits": 32, "strategy": "channel", "symmetric": False},
    "int8_token_asym": {"num_bits": 8, "strategy": "token", "symmetric": False},
    "int8_block_4x16_asym": {"num_bits": 8, "strategy": "block", "block_structure": [4, 16], "symmetric": False},
    "int4_block_3x5_string": {"num_bits": 4, "strategy": "block", "block_structure": "3x5"},
    "int4_tensor_group16_asym": {"num_bits": 4, "strategy": "tensor_group", "group_size": 16, "symmetric": False},
    "int8_tensor_group32_sym": {"num_bits": 8, "strategy": "tensor_group", "group_size": 32},
    "int12_tensor_group16_asym": {"num_bits": 12, "strategy": "tensor_group", "group_size": 16, "symmetric": False},
    "fp8_tensor": {"num_bits": 8, "type": "float"},
    "fp8_channel_asym": {"num_bits": 8, "type": "float", "strategy": "channel", "symmetric": False},
    "fp8_group16": {"num_bits": 8, "type": "float", "group_size": 16},
    "fp8_block_8x32_asym": {"num_bits": 8, "type": "float", "strategy": "block", "block_structure": [8, 32],
                            "symmetric": False},
    "fp8_token": {"num_bits": 8, "type": "float", "strategy": "token"},
    "fp8_tensor_group16": {"num_bits": 8, "type": "float", "strategy": "tensor_group", "group_size": 16},
    "fp4_tensor_group16": {"num_bits": 4, "type": "float", "strategy": "tensor_group", "group_size": 16},
    "fp4_tensor_group8_upper": {"num_bits": 4, "type": "FLOAT", "strategy": "TENSOR_GROUP", "group_size": 8},
    "fp4_group16_no_global": {"num_bits": 4, "type": "float", "group_size": 16},
    "fp4_channel": {"num_bits": 4, "type": "float", "strategy": "channel"},
    "fp4_tensor": {"num_bits": 4, "type": "float"},
    "fp4_block_16x16": {"num_bits": 4, "type": "float", "strategy": "block", "block_structure": [16, 16]},
    "args_observer_mse_norm3": {"num_bits": 4, "group_size": 16, "observer": "mse",
                                "observer_kwargs": {"norm": 3.0}},
}
QUICK_CAL_ARGS = ("int8_tensor_asym", "int8_channel_sym", "int4_group32_asym", "int16_channel_asym",
                  "int8_token_asym", "int8_block_4x16_asym", "int4_tensor_group16_asym", "int12_tensor_group16_asym",
                  "fp8_channel_asym",
                  "fp8_block_8x32_asym", "fp4_tensor_group16", "fp4_group16_no_global",
                  "args_observer_mse_norm3")

KWARGS_VARIANTS = [
    ("mse", {"norm": 2.0}), ("mse", {"norm": 3.0}), ("mse", {"norm": 1.0}), ("mse", {"norm": 0.5}),
    ("mse", {"maxshrink": 0.5, "grid": 20, "patience": 2}), ("mse", {"maxshrink": 0.29}),
    ("mse", {"patience": 1, "norm": 1.7}), ("memoryless_mse", {"norm": 3.0, "patience": 1}),
    ("memoryless_mse", {"grid": 7.5, "maxshrink": 1.0}), ("minmax", {"averaging_constant": 1.0}),
]
KWARGS_ARGS = ("int4_group16_sym", "int8_channel_asym", "fp8_tensor", "fp4_tensor_group16",
               "int4_block_3x5_string", "int8_tensor_group32_sym")

TOK_ARGS = {
    "int8_tensor_sym": {"num_bits": 8},
    "int8_tensor_asym": {"num_bits": 8, "symmetric": False},
    "int16_tensor_asym": {"num_bits": 16, "symmetric": False},
    "int8_token_asym": {"num_bits": 8, "strategy": "token", "symmetric": False},
    "int8_channel_sym": {"num_bits": 8, "strategy": "channel"},
    "int4_group16_asym": {"num_bits": 4, "group_size": 16, "symmetric": False},
    "fp4_tensor_group16": {"num_bits": 4, "type": "float", "strategy": "tensor_group", "group_size": 16},
    "int4_tensor_group16_asym": {"num_bits": 4, "strategy": "tensor_group", "group_size": 16, "symmetric": False},
    "fp8_block_4x16": {"num_bits": 8, "type": "float", "strategy": "block", "block_structure": [4, 16]},
    "fp8_tensor": {"num_bits": 8, "type": "float"},
}
GIDX_ARGS = {
    "int4_group16_asym": {"num_bits": 4, "group_size": 16, "symmetric": False, "actorder": "group"},
    "fp4_tensor_group16": {"num_bits": 4, "type": "float", "strategy": "tensor_group", "group_size": 16},
}
QUICK_TOK_ARGS = ("int8_tensor_asym", "int8_token_asym", "fp4_tensor_group16", "int4_tensor_group16_asym")
TOK_KWARGS = [("minmax", {"averaging_constant": 0.5}), ("minmax", {"averaging_constant": 1.0}),
              ("mse", {"averaging_constant": 0.5, "norm": 3.0}), ("mse", {"averaging_constant": 1.0})]


class Case(object):
    """One tool run: flags, and either a reference to compare with or an expected exit code."""

    def __init__(self, name, tool, flags, args=None, observer=None, kwargs=None, scheme=None,
                 expect_rc=0, input_key="weights"):
        self.name = name
        self.tool = tool
        self.flags = flags
        self.args = args
        self.observer = observer
        self.kwargs = kwargs
        self.scheme = scheme
        self.expect_rc = expect_rc
        self.input_key = input_key


def _arg_flags(scheme=None, args=None, observer=None, kwargs=None):
    flags = []
    if scheme is not None:
        flags.append("--scheme=" + scheme)
    if args is not None:
        flags.append("--args=" + json.dumps(args))
    if observer is not None:
        flags.append("--observer=" + observer)
    if kwargs is not None:
        flags.append("--observer_kwargs=" + json.dumps(kwargs))
    return flags


def _token_inputs(args_json):
    """Batches whose token counts vary only where every unit layout allows it."""
    return "batches_varying" if R.parse_args(args_json).strategy == "tensor" else "batches"


def build_cases(quick):
    cases = []
    threads = [1, 2, 3]
    n = [0]

    def add(name, tool, scheme=None, args=None, observer=None, kwargs=None, **kw):
        flags = _arg_flags(scheme, args, observer, kwargs) + ["--threads=%d" % threads[n[0] % 3]]
        n[0] += 1
        cases.append(Case(name, tool, flags, args=args, observer=observer, kwargs=kwargs, scheme=scheme, **kw))

    observers = OBSERVERS
    for scheme in sorted(R.SCHEMES):
        for obs in (("minmax", "mse") if quick else observers):
            add("calibrate/scheme=%s/%s" % (scheme, obs), "calibrate", scheme=scheme, observer=obs)
    for key in (QUICK_CAL_ARGS if quick else sorted(CAL_ARGS)):
        a = CAL_ARGS[key]
        if "observer" in a:
            add("calibrate/args=%s" % key, "calibrate", args=a)
            continue
        for obs in observers:
            add("calibrate/args=%s/%s" % (key, obs), "calibrate", args=a, observer=obs)
    for obs, kw in (KWARGS_VARIANTS[:4] if quick else KWARGS_VARIANTS):
        for key in (KWARGS_ARGS[:3] if quick else KWARGS_ARGS):
            add("calibrate/args=%s/%s%s" % (key, obs, json.dumps(kw, sort_keys=True)), "calibrate",
                args=CAL_ARGS[key], observer=obs, kwargs=kw)
    for key in (QUICK_TOK_ARGS if quick else sorted(TOK_ARGS)):
        a = TOK_ARGS[key]
        inputs = _token_inputs(a)
        for obs in observers:
            add("token_count/args=%s/%s" % (key, obs), "token_count", args=a, observer=obs, input_key=inputs)
    add("token_count/scheme=NVFP4/minmax", "token_count", scheme="NVFP4", input_key="batches")
    for obs, kw in TOK_KWARGS:
        for key in (("int8_tensor_asym", "fp4_tensor_group16") if quick else
                    ("int8_tensor_asym", "int8_token_asym", "fp4_tensor_group16", "int4_group16_asym")):
            a = TOK_ARGS[key]
            inputs = _token_inputs(a)
            add("token_count/args=%s/%s%s" % (key, obs, json.dumps(kw, sort_keys=True)), "token_count",
                args=a, observer=obs, kwargs=kw, input_key=inputs)
    # Activation ordering through the observer_driver's g_idx extension.
    for key in ("int4_group16_asym", "fp4_tensor_group16"):
        for obs in (("minmax", "mse") if quick else observers):
            add("driver_gidx/args=%s/%s" % (key, obs), "calibrate", args=GIDX_ARGS[key], observer=obs,
                input_key="weights_gidx")
    # Error cases (SPEC §11 exit codes; the output must stay untouched).
    add("error/calibrate/unknown_scheme", "calibrate", scheme="W3A16", expect_rc=2)
    add("error/calibrate/unknown_observer", "calibrate", scheme="W8A16", observer="nope", expect_rc=2)
    add("error/calibrate/bad_kwargs", "calibrate", scheme="W8A16", observer="minmax",
        kwargs={"bogus": 1}, expect_rc=2)
    add("error/calibrate/bad_args_json", "calibrate", args={"num_bits": 8, "colour": "red"}, expect_rc=2)
    add("error/calibrate/non_finite", "calibrate", scheme="W8A16", expect_rc=1, input_key="nonfinite")
    add("error/token_count/token_shape_change", "token_count", args=TOK_ARGS["int8_token_asym"],
        expect_rc=1, input_key="batches_varying")
    return cases


# ----------------------------------------------------------------------------
# Comparison.


class Mismatch(object):
    def __init__(self, case, tensor, what, detail):
        self.case, self.tensor, self.what, self.detail = case, tensor, what, detail

    def __str__(self):
        return "%s: %s: %s: %s" % (self.case, self.tensor, self.what, self.detail)


def _fmt_elem(st, raw, flat_index):
    size = st_io.ITEM_SIZE[st]
    chunk = raw[flat_index * size:(flat_index + 1) * size]
    value = st_io.decode(st, [1], chunk)[0]
    return "%r (0x%s)" % (value.item(), chunk[::-1].hex())


def compare_tensor_dicts(case, expected, got):
    """Mismatches between {name: (st, shape, raw)} dicts; returns (compared, mismatches)."""
    mismatches = []
    compared = 0
    for name in sorted(set(expected) - set(got)):
        mismatches.append(Mismatch(case, name, "missing", "expected %s %s" % expected[name][:2]))
    for name in sorted(set(got) - set(expected)):
        mismatches.append(Mismatch(case, name, "unexpected", "got %s %s" % tuple(got[name][:2])))
    for name in sorted(set(expected) & set(got)):
        compared += 1
        est, eshape, eraw = expected[name]
        gst, gshape, graw = got[name]
        if est != gst or list(eshape) != list(gshape):
            mismatches.append(Mismatch(case, name, "dtype/shape", "expected %s %s, got %s %s"
                                       % (est, list(eshape), gst, list(gshape))))
            continue
        if eraw == graw:
            continue
        size = st_io.ITEM_SIZE[est]
        e = np.frombuffer(eraw, np.uint8).reshape(-1, size)
        g = np.frombuffer(graw, np.uint8).reshape(-1, size)
        diff = np.nonzero((e != g).any(axis=1))[0]
        first = int(diff[0])
        idx = list(np.unravel_index(first, eshape)) if eshape else [0]
        mismatches.append(Mismatch(
            case, name, "values",
            "%d of %d elements differ; first at %s: expected %s, got %s"
            % (len(diff), e.shape[0], [int(i) for i in idx], _fmt_elem(est, eraw, first),
               _fmt_elem(est, graw, first))))
    return compared, mismatches


def compare_counts(case, expected, got):
    if expected == got:
        return []
    keys = sorted(set(expected) | set(got))
    diffs = ["%s: expected %s, got %s" % (k, json.dumps(expected.get(k, "<absent>")),
                                          json.dumps(got.get(k, "<absent>")))
             for k in keys if expected.get(k, "<absent>") != got.get(k, "<absent>")]
    return [Mismatch(case, "<json counts>", "counts", "; ".join(diffs))]


# ----------------------------------------------------------------------------
# Running.


class Result(object):
    def __init__(self, case):
        self.case = case
        self.compared = 0
        self.mismatches = []
        self.seconds = 0.0


def reference_for(case, inputs, options, g_idx=None):
    """Expected ({name: (st, shape, raw)}, counts or None) of a case."""
    args, observer, kwargs = R.resolve_tool_args(
        scheme=case.scheme, args_json=None if case.args is None else json.dumps(case.args),
        observer=case.observer, observer_kwargs=None if case.kwargs is None else json.dumps(case.kwargs))
    if case.tool == "calibrate":
        return R.calibrate(inputs, args, observer, kwargs, g_idx=g_idx, **options), None
    counts, out = R.token_count(inputs, args, observer, kwargs, **options)
    return out, counts


def run_case(case, tool_path, files, workdir, options, index):
    res = Result(case)
    t0 = time.time()
    out_path = os.path.join(workdir, "out_%04d.safetensors" % index)
    sentinel = b"qcal-harness-sentinel"
    with open(out_path, "wb") as f:
        f.write(sentinel)
    if case.tool == "calibrate":
        cmd = list(tool_path) + ["--input=" + files[case.input_key]]
    else:
        cmd = list(tool_path) + ["--inputs=" + ",".join(files[case.input_key]), "--format=json"]
    cmd += ["--output=" + out_path] + case.flags
    try:
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=600)
    except (OSError, subprocess.TimeoutExpired) as e:
        res.mismatches.append(Mismatch(case.name, "<run>", "failed to run", str(e)))
        return res
    stderr_tail = proc.stderr.decode("utf-8", "replace").strip()[-400:]
    if proc.returncode != case.expect_rc:
        res.mismatches.append(Mismatch(case.name, "<exit>", "exit code", "expected %d, got %d: %s"
                                       % (case.expect_rc, proc.returncode, stderr_tail)))
        res.seconds = time.time() - t0
        return res
    if case.expect_rc != 0:
        with open(out_path, "rb") as f:
            if f.read() != sentinel:
                res.mismatches.append(Mismatch(case.name, "<output>", "touched", "output changed on error"))
        if proc.stderr.strip() == b"":
            res.mismatches.append(Mismatch(case.name, "<stderr>", "no message", "error without a message"))
        res.seconds = time.time() - t0
        return res
    inputs = files["data"][case.input_key]
    try:
        expected, counts = reference_for(case, inputs, options, files["gidx"] if case.input_key == "weights_gidx" else None)
    except (R.QcalError, NotImplementedError) as e:
        res.mismatches.append(Mismatch(case.name, "<reference>", "reference error",
                                       "%s: %s (tool exited 0)" % (type(e).__name__, e)))
        res.seconds = time.time() - t0
        return res
    try:
        got, metadata = st_io.read(out_path)
    except (OSError, st_io.FormatError) as e:
        res.mismatches.append(Mismatch(case.name, "<output>", "unreadable", str(e)))
        return res
    res.compared, res.mismatches = compare_tensor_dicts(case.name, expected, got)
    if metadata is None:
        res.mismatches.append(Mismatch(case.name, "<metadata>", "missing", "no __metadata__ (SPEC §11)"))
    if counts is not None:
        try:
            got_counts = json.loads(proc.stdout.decode("utf-8"))
        except ValueError as e:
            res.mismatches.append(Mismatch(case.name, "<stdout>", "not JSON", "%s: %r" % (e, proc.stdout[:200])))
        else:
            res.mismatches += compare_counts(case.name, counts, got_counts)
            if list(got_counts) != sorted(got_counts):
                res.mismatches.append(Mismatch(case.name, "<stdout>", "key order", "keys not sorted"))
    res.seconds = time.time() - t0
    return res


def prepare_inputs(workdir, seed):
    rng = np.random.default_rng(seed)
    files = {"data": {}}
    path = os.path.join(workdir, "weights.safetensors")
    write_tensors(path, make_weights(rng))
    files["weights"] = path
    files["data"]["weights"] = read_observable(path)
    w, gi = make_gidx_weights(rng)
    path = os.path.join(workdir, "weights_gidx.safetensors")
    tensors = {n: st_io.from_array(dt, x) for n, (dt, x) in w.items()}
    for n, g in gi.items():
        tensors[n + "_g_idx"] = ("I32", [len(g)], R.encode_values(g, "I32"))
    st_io.write(path, tensors)
    files["weights_gidx"] = path
    files["data"]["weights_gidx"] = read_observable(path)
    files["gidx"] = {n: st_io.decode(*t) for n, t in st_io.read(path)[0].items() if n.endswith("_g_idx")}
    files["gidx"] = {n[:-len("_g_idx")]: g for n, g in files["gidx"].items()}
    bad = make_weights(np.random.default_rng(seed + 1))
    x = bad["model.layers.0.mlp.down_proj.weight"][1].copy()
    x[3, 17] = np.nan
    bad["model.layers.0.mlp.down_proj.weight"] = (F32, x)
    path = os.path.join(workdir, "nonfinite.safetensors")
    write_tensors(path, bad)
    files["nonfinite"] = path
    for key, varying in (("batches", False), ("batches_varying", True)):
        paths, data = [], []
        for i, batch in enumerate(make_batches(rng, varying)):
            p = os.path.join(workdir, "%s_%d.safetensors" % (key, i))
            write_tensors(p, batch)
            paths.append(p)
            data.append(read_observable(p))
        files[key] = paths
        files["data"][key] = data
    return files


def summarize(results, max_details, out=None):
    out = out or sys.stdout
    groups = {}
    for r in results:
        key = "/".join(r.case.name.split("/")[:2]).split("=")[0]
        if r.case.name.startswith("error/"):
            key = "error cases"
        g = groups.setdefault(key, [0, 0, 0, 0, 0.0])
        g[0] += 1
        g[1] += r.compared
        g[2] += 1 if r.mismatches else 0
        g[3] += len(r.mismatches)
        g[4] += r.seconds
    out.write("\n%-28s %7s %9s %14s %11s %8s\n" % ("group", "cases", "tensors", "failed cases", "mismatches", "seconds"))
    totals = [0, 0, 0, 0, 0.0]
    for key in sorted(groups):
        g = groups[key]
        out.write("%-28s %7d %9d %14d %11d %8.1f\n" % (key, g[0], g[1], g[2], g[3], g[4]))
        totals = [a + b for a, b in zip(totals, g)]
    out.write("%-28s %7d %9d %14d %11d %8.1f\n" % ("total", totals[0], totals[1], totals[2], totals[3], totals[4]))
    all_mm = [m for r in results for m in r.mismatches]
    if all_mm:
        out.write("\nFirst %d of %d mismatches:\n" % (min(max_details, len(all_mm)), len(all_mm)))
        for m in all_mm[:max_details]:
            out.write("  %s\n" % m)
    return totals[3]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--calibrate", help="path of the calibrate binary")
    p.add_argument("--token_count", help="path of the token_count binary")
    p.add_argument("--observer_driver", help="instead of the tools: tests/reference:observer_driver")
    p.add_argument("--quick", action="store_true", help="a smaller set of cases")
    p.add_argument("--filter", default=None, help="only cases whose name matches this regex")
    p.add_argument("--workdir", default=None, help="keep inputs/outputs here (default: a temp dir, removed)")
    p.add_argument("--seed", type=int, default=20240601)
    p.add_argument("--gparam_mode", choices=("spec", "pytorch"), default="spec")
    p.add_argument("--mse_c1_shortcut", action="store_true")
    p.add_argument("--max_details", type=int, default=40)
    p.add_argument("--list", action="store_true", help="list the cases and exit")
    ns = p.parse_args(argv)
    cases = build_cases(ns.quick)
    if not ns.observer_driver:
        # g_idx is not in the calibrate CLI: only the driver takes it.
        cases = [c for c in cases if not c.name.startswith("driver_")]
    if ns.filter:
        cases = [c for c in cases if re.search(ns.filter, c.name)]
    if ns.list:
        for c in cases:
            print(c.name, " ".join(c.flags))
        return 0
    if ns.observer_driver:
        paths = {"observer_driver": ns.observer_driver}
        tools = {"calibrate": [ns.observer_driver, "calibrate"],
                 "token_count": [ns.observer_driver, "token_count"]}
    elif ns.calibrate and ns.token_count:
        paths = {"calibrate": ns.calibrate, "token_count": ns.token_count}
        tools = {"calibrate": [ns.calibrate], "token_count": [ns.token_count]}
    else:
        sys.stderr.write("compare_tools: give --calibrate and --token_count (or --observer_driver)\n")
        return 2
    for name, path in paths.items():
        if not (os.path.isfile(path) and os.access(path, os.X_OK)):
            sys.stderr.write("compare_tools: --%s=%s is not an executable file\n" % (name, path))
            return 2
    workdir = ns.workdir or tempfile.mkdtemp(prefix="qcal_compare_", dir=os.environ.get("TEST_TMPDIR"))
    os.makedirs(workdir, exist_ok=True)
    options = {"gparam_mode": ns.gparam_mode, "mse_c1_shortcut": ns.mse_c1_shortcut}
    try:
        files = prepare_inputs(workdir, ns.seed)
        results = []
        for i, case in enumerate(cases):
            r = run_case(case, tools[case.tool], files, workdir, options, i)
            status = "ok" if not r.mismatches else "MISMATCH (%d)" % len(r.mismatches)
            sys.stdout.write("[%4d/%d] %-80s %s\n" % (i + 1, len(cases), case.name, status))
            sys.stdout.flush()
            results.append(r)
        bad = summarize(results, ns.max_details)
    finally:
        if ns.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    print("\nseed %d, gparam_mode %s, mse_c1_shortcut %s: %s"
          % (ns.seed, ns.gparam_mode, ns.mse_c1_shortcut, "FAIL" if bad else "PASS"))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
