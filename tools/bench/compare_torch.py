#!/usr/bin/python3
"""Times qcal's CPU observers side by side with PyTorch eager.

Both sides work on the same tensors: this script generates 4096 x 4096 weights
with a fixed seed (normal(0, 0.02) with every 9973rd value multiplied by 8),
writes them as "w_f32" (F32) and "w_bf16" (BF16) into a safetensors file, and
passes it to the benchmark binary (//tools/bench:bench --weights=FILE). Both
sides use the same number of threads (torch.set_num_threads and --threads).

PyTorch side, as the Python observers (llmcompressor with compressed-tensors'
qparam math) perform the operations:
  * min/max per strategy: tensor torch.aminmax; channel amin/amax over dim 1;
    group 128 amin/amax over dim 1 of each column slice (one call per group,
    as the observer's group loop); block 128x128 torch.aminmax per block;
  * the MSE search: a port of MovingAverageMSEObserver.calculate_mse_min_max
    (candidates p = 1 - i/grid, calculate_qparams, fake_quantize, |q - x|^norm
    summed, strict improvement, shared patience counter) with
    compressed-tensors' fake_quantize semantics, one call per group for the
    group strategies, the global scale first for NVFP4;
  * a plain sum over the tensor as the read-bandwidth reference.
qcal side: the benchmark binary's minmax_kernel/*, mse/* and read_bw/* cases.

It prints a markdown table of medians and ratios, with the machine
description, for docs/PERFORMANCE.md. When a calibrate binary exists
(bazel-bin/tools/calibrate, or --calibrate=PATH) it also times
`calibrate --scheme=W4A16 --observer=minmax` over a 1 GiB bf16 checkpoint
against `cat FILE > /dev/null` from a warm page cache.

Usage (build the benchmark first):
  ./bazelw build -c opt //tools/bench
  /usr/bin/python3 tools/bench/compare_torch.py --threads=2 --repeats=5
"""

import argparse
import json
import math
import os
import platform
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time

import torch

ROWS = 4096
COLS = 4096
SEED = 1234


# ------------------------------------------------------------ safetensors

_DTYPE_NAMES = {torch.float32: "F32", torch.bfloat16: "BF16",
                torch.float16: "F16"}


def write_safetensors(path, tensors):
    """Writes {name: tensor} as a safetensors file (the format: an 8-byte
    little-endian header length, a JSON header padded with spaces to a
    multiple of 8, then the raw little-endian data)."""
    header, blobs, offset = {}, [], 0
    for name, t in tensors.items():
        t = t.contiguous()
        if t.dtype in (torch.bfloat16, torch.float16):
            data = t.view(torch.int16).numpy().tobytes()
        else:
            data = t.numpy().tobytes()
        header[name] = {"dtype": _DTYPE_NAMES[t.dtype], "shape": list(t.shape),
                        "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for blob in blobs:
            f.write(blob)
    os.replace(tmp, path)


def make_weights():
    gen = torch.Generator().manual_seed(SEED)
    w = torch.randn(ROWS, COLS, generator=gen) * 0.02
    flat = w.view(-1)
    flat[::9973] *= 8.0
    return {"f32": w, "bf16": w.to(torch.bfloat16)}


# ------------------------------------------ compressed-tensors semantics

class Args:
    """The QuantizationArgs fields the observers use."""

    def __init__(self, num_bits, type_, symmetric, strategy, group_size=None):
        self.num_bits = num_bits
        self.type = type_
        self.symmetric = symmetric
        self.strategy = strategy
        self.group_size = group_size


SCHEMES = {
    "int8_channel": Args(8, "int", True, "channel"),
    "int4_group128": Args(4, "int", True, "group", 128),
    "nvfp4": Args(4, "float", True, "tensor_group", 16),
}


def is_fp4(args):
    return args.type == "float" and args.num_bits == 4


def calculate_range(args):
    if args.type == "int":
        q_max = torch.tensor(2 ** (args.num_bits - 1) - 1.0)
        q_min = torch.tensor(-(2 ** (args.num_bits - 1)) * 1.0)
    elif args.num_bits == 4:
        q_max, q_min = torch.tensor(6.0), torch.tensor(-6.0)
    else:
        q_max, q_min = torch.tensor(448.0), torch.tensor(-448.0)
    return q_min, q_max


def to_e4m3(x):
    """Round to the nearest float8_e4m3fn value, ties to even (PyTorch 1.13
    has no float8 dtype; inputs are already clamped to +-448)."""
    xf = x.float()
    a = xf.abs()
    _, e = torch.frexp(a)
    step = torch.pow(2.0, torch.clamp(e - 4, min=-9).float())
    r = torch.clamp(torch.round(a / step) * step, max=448.0)
    return torch.sign(xf) * r


def cast_to_fp4(x):
    sign = torch.sign(x)
    x = torch.abs(x)
    x[(x >= 0.0) & (x <= 0.25)] = 0.0
    x[(x > 0.25) & (x < 0.75)] = 0.5
    x[(x >= 0.75) & (x <= 1.25)] = 1.0
    x[(x > 1.25) & (x < 1.75)] = 1.5
    x[(x >= 1.75) & (x <= 2.5)] = 2.0
    x[(x > 2.5) & (x < 3.5)] = 3.0
    x[(x >= 3.5) & (x <= 5.0)] = 4.0
    x[x > 5.0] = 6.0
    return x * sign


def calculate_qparams(min_vals, max_vals, args, global_scale=None):
    min_vals = torch.min(min_vals, torch.zeros_like(min_vals))
    max_vals = torch.max(max_vals, torch.zeros_like(max_vals))
    bit_min, bit_max = calculate_range(args)
    bit_range = bit_max - bit_min
    if args.symmetric:
        max_val_pos = torch.max(torch.abs(min_vals), torch.abs(max_vals))
        if is_fp4(args) and global_scale is not None:
            scales = global_scale * (max_val_pos / 6.0)
            scales = torch.clamp(scales, max=448.0, min=-448.0)
            scales = to_e4m3(scales)  # .to(float8_e4m3fn)
            scales = torch.where(scales == 0, torch.tensor(0.125), scales)
        else:
            scales = max_val_pos / (float(bit_range) / 2)
            scales = torch.clamp(scales, min=torch.finfo(torch.float32).eps)
        zero_points = torch.zeros(scales.shape, dtype=min_vals.dtype)
    else:
        scales = (max_vals - min_vals) / float(bit_range)
        scales = torch.clamp(scales, min=torch.finfo(torch.float32).eps)
        zero_points = bit_min - (min_vals / scales)
        zero_points = torch.clamp(zero_points, bit_min, bit_max)
    if args.type == "int":
        zero_points = torch.round(zero_points).to(torch.int8)
    else:
        zero_points = to_e4m3(zero_points)
    if scales.ndim == 0:
        scales = scales.reshape(1)
        zero_points = zero_points.reshape(1)
    return scales, zero_points


def _quantize(x, scale, zero_point, q_min, q_max, args, global_scale=None):
    if global_scale is not None:
        scale = scale.to(global_scale.dtype) / global_scale
    scaled = x / scale
    if zero_point is not None:
        scaled += zero_point.to(x.dtype)
    clamped = torch.clamp(scaled, q_min, q_max)
    if args.type == "float":
        rounded = cast_to_fp4(clamped) if args.num_bits == 4 else to_e4m3(clamped)
    else:
        rounded = torch.round(clamped)
    return rounded.to(x.dtype)


def _dequantize(x_q, scale, zero_point=None, global_scale=None):
    if global_scale is not None:
        scale = scale.to(global_scale.dtype) / global_scale
    dequant = x_q.to(scale.dtype)
    if zero_point is not None:
        dequant = dequant - zero_point.to(scale.dtype)
    return dequant * scale


def fake_quantize(x, scale, zero_point, args, global_scale=None):
    q_min, q_max = calculate_range(args)
    if args.strategy in ("group", "tensor_group"):
        gs = args.group_size
        while scale.ndim < 2:
            scale = scale.unsqueeze(1)
            zero_point = zero_point.unsqueeze(1)
        xg = x.unflatten(-1, (math.ceil(x.shape[-1] / gs), gs))
        out = _quantize(xg, scale.unsqueeze(-1), zero_point.unsqueeze(-1),
                        q_min, q_max, args, global_scale)
        out = _dequantize(out, scale.unsqueeze(-1), zero_point.unsqueeze(-1),
                          global_scale)
        return out.flatten(start_dim=-2).to(x.dtype)
    out = _quantize(x, scale, zero_point, q_min, q_max, args, global_scale)
    return _dequantize(out, scale, zero_point, global_scale)


def calculate_mse_min_max(observed, args, reduce_dims=None, global_scale=None,
                          maxshrink=0.2, patience=5, grid=100.0, norm=2.4):
    """MovingAverageMSEObserver.calculate_mse_min_max."""
    if not reduce_dims:
        absolute_min_val, absolute_max_val = torch.aminmax(observed)
    else:
        absolute_min_val = torch.amin(observed, dim=reduce_dims, keepdims=True)
        absolute_max_val = torch.amax(observed, dim=reduce_dims, keepdims=True)
    best = torch.full_like(absolute_min_val,
                           torch.finfo(absolute_min_val.dtype).max)
    min_val = torch.ones_like(absolute_min_val)
    max_val = torch.zeros_like(absolute_max_val)
    no_improve_count = 0
    for i in range(int(maxshrink * grid)):
        p = 1 - i / grid
        shrinked_min_val = p * absolute_min_val
        shrinked_max_val = p * absolute_max_val
        candidate_scales, candidate_zero_points = calculate_qparams(
            shrinked_min_val, shrinked_max_val, args, global_scale)
        q = fake_quantize(observed, candidate_scales, candidate_zero_points,
                          args, global_scale=global_scale)
        q -= observed
        q.abs_()
        q.pow_(norm)
        if not reduce_dims:
            err = torch.sum(q)
        else:
            err = torch.sum(q, reduce_dims, keepdims=True)
        tmp = err < best
        if torch.any(tmp):
            best[tmp] = err[tmp]
            min_val[tmp] = shrinked_min_val[tmp]
            max_val[tmp] = shrinked_max_val[tmp]
            no_improve_count = 0
        else:
            no_improve_count += 1
            if no_improve_count >= patience:
                break
    return min_val, max_val


def mse_qparams(observed, args, reduce_dims, global_scale=None):
    """The mse observer's calculate_qparams for one call (first observation:
    the moving average stores the values as they are)."""
    min_val, max_val = calculate_mse_min_max(observed, args, reduce_dims,
                                             global_scale)
    return calculate_qparams(min_val, max_val, args, global_scale)


def generate_gparam(min_val, max_val):
    min_vals = torch.min(min_val, torch.zeros_like(min_val))
    max_vals = torch.max(max_val, torch.zeros_like(max_val))
    max_val_pos = torch.max(torch.abs(min_vals), torch.abs(max_vals))
    global_scale = 448.0 * 6.0 / max_val_pos.float()
    return global_scale.reshape([1])


def torch_mse(w, scheme):
    """One weight through a fresh mse observer (get_qparams)."""
    args = SCHEMES[scheme]
    rows, cols = w.shape
    if args.strategy == "channel":
        return mse_qparams(w, args, (1,))
    global_scale = None
    if args.strategy == "tensor_group":
        mn, mx = torch.aminmax(w)
        global_scale = generate_gparam(mn, mx)
    gs = args.group_size
    groups = math.ceil(cols / gs)
    scale = torch.empty((rows, groups), dtype=w.dtype)
    zero_point = torch.empty((rows, groups), dtype=torch.int8)
    for g in range(groups):
        s, z = mse_qparams(w[:, g * gs:(g + 1) * gs], args, (1,), global_scale)
        scale[:, g] = s.squeeze(1)
        if args.type == "int":
            zero_point[:, g] = z.squeeze(1)
    return scale, zero_point


def torch_minmax(w, strategy):
    if strategy == "tensor":
        return torch.aminmax(w)
    if strategy == "channel":
        return (torch.amin(w, dim=(1,), keepdim=True),
                torch.amax(w, dim=(1,), keepdim=True))
    rows, cols = w.shape
    out = []
    if strategy == "group128":
        for g in range(math.ceil(cols / 128)):
            s = w[:, g * 128:(g + 1) * 128]
            out.append((torch.amin(s, dim=(1,), keepdim=True),
                        torch.amax(s, dim=(1,), keepdim=True)))
        return out
    for i in range(math.ceil(rows / 128)):
        for j in range(math.ceil(cols / 128)):
            out.append(torch.aminmax(w[i * 128:(i + 1) * 128,
                                       j * 128:(j + 1) * 128]))
    return out


def time_median(fn, repeats, warmup=1):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


# ------------------------------------------------------------------ qcal

def run_qcal_bench(bench, weights_path, threads, repeats, filt, extra=()):
    cmd = [bench, f"--threads={threads}"]
    if weights_path:
        cmd.append(f"--weights={weights_path}")
    cmd += list(extra) + [f"--benchmark_filter={filt}",
           f"--benchmark_repetitions={repeats}",
           "--benchmark_report_aggregates_only=true",
           "--benchmark_format=json"]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    data = json.loads(out.stdout)
    medians, single = {}, {}
    for b in data["benchmarks"]:
        name = b["run_name"].replace("/real_time", "")
        scale = {"ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1.0}[b["time_unit"]]
        if b.get("aggregate_name") == "median":
            medians[name] = b["real_time"] * scale
        elif b.get("run_type") == "iteration":
            single[name] = b["real_time"] * scale  # one repetition
    single.update(medians)
    return single, data.get("context", {})


# ------------------------------------------------------------- calibrate

def make_checkpoint(workdir):
    """A 1 GiB bf16 checkpoint: 32 weights of 4096 x 4096."""
    path = os.path.join(workdir, "ckpt_1gib_bf16.safetensors")
    if not os.path.exists(path):
        gen = torch.Generator().manual_seed(SEED + 1)
        tensors = {}
        for i in range(32):
            tensors[f"model.layers.{i}.mlp.weight"] = (
                torch.randn(4096, 4096, generator=gen) * 0.02).to(torch.bfloat16)
        write_safetensors(path, tensors)
        del tensors
    return path


def time_checkpoint(path, calibrate, bench, threads, repeats, workdir):
    """Times `cat FILE > /dev/null` from a warm page cache, calibrate
    --scheme=W4A16 --observer=minmax when the binary exists, and the
    benchmark's checkpoint_minmax_w4a16 case (calibrate's work minus writing
    the output). Returns (size, t_cat, t_calibrate or None, t_bench)."""
    subprocess.run(f"cat {path} > /dev/null", shell=True, check=True)

    def cat():
        subprocess.run(f"cat {path} > /dev/null", shell=True, check=True)

    t_cat = time_median(cat, repeats)
    t_cal = None
    if calibrate and os.path.exists(calibrate):
        out = os.path.join(workdir, "qparams.safetensors")

        def calib():
            subprocess.run([calibrate, f"--input={path}", f"--output={out}",
                            "--scheme=W4A16", "--observer=minmax",
                            f"--threads={threads}"], check=True,
                           stdout=subprocess.DEVNULL)
        t_cal = time_median(calib, repeats)
    times, _ = run_qcal_bench(bench, "", threads, repeats,
                              "checkpoint_minmax_w4a16",
                              extra=[f"--checkpoint={path}"])
    return os.path.getsize(path), t_cat, t_cal, times["checkpoint_minmax_w4a16"]


# ------------------------------------------------------------------ main

# The calibrate flags of each MSE scheme (the same args as SCHEMES).
CALIBRATE_ARGS = {
    "int8_channel": "--scheme=W8A16",
    "int4_group128": "--scheme=W4A16",
    "nvfp4": "--scheme=NVFP4",
}


def time_calibrate_mse(calibrate, weight, dtype, scheme, threads, repeats,
                       workdir):
    """Median time of a whole `calibrate --observer=mse` process on a
    checkpoint holding just `weight` (process start, reading, the search,
    the summary and writing the output included)."""
    path = os.path.join(workdir, f"qcal_mse_{dtype}.safetensors")
    if not os.path.exists(path):
        write_safetensors(path, {"layer.weight": weight})
    out = os.path.join(workdir, f"qcal_mse_{dtype}_{scheme}.out.safetensors")

    def calib():
        subprocess.run([calibrate, f"--input={path}", f"--output={out}",
                        CALIBRATE_ARGS[scheme], "--observer=mse",
                        f"--threads={threads}"],
                       check=True, stdout=subprocess.DEVNULL)

    return time_median(calib, repeats)


def machine_description(threads):
    lines = []
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        keep = ("Model name", "CPU(s)", "Thread(s) per core", "Core(s) per socket",
                "L1d cache", "L2 cache", "L3 cache", "Flags")
        for line in lscpu.splitlines():
            key = line.split(":")[0].strip()
            if key in keep:
                value = line.split(":", 1)[1].strip()
                if key == "Flags":
                    wanted = ("avx2", "fma", "avx512f", "avx512bw", "avx512_bf16",
                              "f16c")
                    value = " ".join(f for f in value.split() if f in wanted)
                    key = "SIMD flags"
                lines.append(f"{key}: {value}")
    except OSError:
        pass
    lines.append(f"Kernel: {platform.release()}; Python {platform.python_version()}; "
                 f"torch {torch.__version__}")
    lines.append(f"Threads (both sides): {threads}")
    lines.append("Load average at start: " + " ".join(
        f"{x:.2f}" for x in os.getloadavg()))
    return lines


def gbs(nbytes, seconds):
    return nbytes / seconds / 1e9


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--mse_repeats", type=int, default=3)
    parser.add_argument("--bench", default="bazel-bin/tools/bench/bench")
    parser.add_argument("--calibrate", default="bazel-bin/tools/calibrate")
    parser.add_argument("--workdir", default=tempfile.gettempdir())
    parser.add_argument("--skip_torch_mse", action="store_true",
                        help="time only qcal's MSE search")
    args = parser.parse_args()
    if not os.path.exists(args.bench):
        sys.exit(f"compare_torch: no benchmark binary at {args.bench}; build it "
                 "with ./bazelw build -c opt //tools/bench")
    torch.set_num_threads(args.threads)
    print("\n".join(machine_description(args.threads)))
    print()

    weights = make_weights()
    wpath = os.path.join(args.workdir, "qcal_bench_weights.safetensors")
    write_safetensors(wpath, {"w_f32": weights["f32"], "w_bf16": weights["bf16"]})

    qcal, context = run_qcal_bench(args.bench, wpath, args.threads, args.repeats,
                                   "read_bw|minmax_kernel|mse")
    print(f"qcal SIMD target: {context.get('qcal_simd_target', '?')}")
    print()

    rows = []
    for dtype in ("f32", "bf16"):
        w = weights[dtype]
        nbytes = w.numel() * w.element_size()
        t_sum = time_median(lambda: w.sum(), args.repeats)
        q_sum = qcal[f"read_bw/{dtype}"]
        rows.append(("read (sum)", dtype, t_sum, q_sum, nbytes, q_sum))
        for strategy in ("tensor", "channel", "group128", "block128"):
            t = time_median(lambda: torch_minmax(w, strategy), args.repeats)
            rows.append((f"min/max {strategy}", dtype, t,
                         qcal[f"minmax_kernel/{strategy}/{dtype}"], nbytes, q_sum))
        for scheme in ("int8_channel", "int4_group128", "nvfp4"):
            t = (float("nan") if args.skip_torch_mse else
                 time_median(lambda: torch_mse(w, scheme), args.mse_repeats,
                             warmup=0))
            rows.append((f"MSE search {scheme}", dtype, t,
                         qcal[f"mse/{scheme}/{dtype}"], nbytes, None))
            if os.path.exists(args.calibrate):
                t_proc = time_calibrate_mse(args.calibrate, w, dtype, scheme,
                                            args.threads, args.mse_repeats,
                                            args.workdir)
                rows.append((f"MSE {scheme}: whole `calibrate --observer=mse` "
                             "process", dtype, t, t_proc, nbytes, None))

    print("| operation | dtype | PyTorch eager | qcal | speed-up | qcal GB/s | "
          "qcal / read bandwidth |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for op, dtype, t, q, nbytes, q_sum in rows:
        frac = f"{q_sum / q * 100:.0f}%" if q_sum else ""
        print(f"| {op} | {dtype} | {t * 1e3:.1f} ms | {q * 1e3:.2f} ms | "
              f"{t / q:.1f}x | {gbs(nbytes, q):.2f} | {frac} |")

    path = make_checkpoint(args.workdir)
    size, t_cat, t_cal, t_bench = time_checkpoint(
        path, args.calibrate, args.bench, args.threads, args.repeats,
        args.workdir)
    print()
    print(f"1 GiB bf16 checkpoint ({size / 2**30:.2f} GiB, 32 x 4096 x 4096), "
          f"{args.threads} threads, medians of {args.repeats}:")
    print()
    print("| run | time | vs cat |")
    print("| --- | ---: | ---: |")
    print(f"| cat FILE > /dev/null (warm page cache) | {t_cat * 1e3:.0f} ms | 1.00 |")
    if t_cal is not None:
        print(f"| calibrate --scheme=W4A16 --observer=minmax | {t_cal * 1e3:.0f} ms "
              f"| {t_cal / t_cat:.2f} |")
    print(f"| bench checkpoint_minmax_w4a16 (map + minmax group-128 qparams of "
          f"every weight, no output file) | {t_bench * 1e3:.0f} ms | "
          f"{t_bench / t_cat:.2f} |")
    if t_cal is None:
        print()
        print(f"(no calibrate binary at {args.calibrate}: calibrate itself not "
              "timed)")

if __name__ == "__main__":
    main()
