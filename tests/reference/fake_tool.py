"""A Python stand-in for the `calibrate` / `token_count` tools (SPEC §11), for testing the harness.

Usage: fake_tool.py calibrate|token_count FLAGS... [--corrupt=NAME]
Implements the flags the harness uses on top of qcal_reference.py. `--corrupt=NAME`
flips the lowest bit of the first element of output tensor NAME, and
`--corrupt_count=MODULE` adds one to a module's count, to check that the harness
notices.
"""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import qcal_reference as R  # noqa: E402
import safetensors_io as st_io  # noqa: E402


def read_observable(path):
    tensors, _ = st_io.read(path)
    return {n: st_io.to_observed(*t) for n, t in tensors.items() if st_io.to_observed(*t) is not None}


def main(argv):
    tool = argv[0]
    flags = {}
    for a in argv[1:]:
        if not a.startswith("--") or "=" not in a:
            sys.stderr.write("%s: bad flag %r\n" % (tool, a))
            return 2
        k, v = a[2:].split("=", 1)
        flags[k] = v
    known = {"input", "inputs", "output", "scheme", "args", "observer", "observer_kwargs", "threads",
             "format", "corrupt", "corrupt_count"}
    if set(flags) - known:
        sys.stderr.write("%s: unknown flag(s) %s\n" % (tool, sorted(set(flags) - known)))
        return 2
    try:
        args, observer, kwargs = R.resolve_tool_args(flags.get("scheme"), flags.get("args"),
                                                     flags.get("observer"), flags.get("observer_kwargs"))
    except (R.ArgsError, ValueError) as e:
        sys.stderr.write("%s: %s\n" % (tool, e))
        return 2
    try:
        if tool == "calibrate":
            raw, _ = st_io.read(flags["input"])
            g_idx = {n[:-len("_g_idx")]: st_io.decode(*t) for n, t in raw.items() if n.endswith("_g_idx")}
            out = R.calibrate(read_observable(flags["input"]), args, observer, kwargs, g_idx=g_idx)
            counts = None
        else:
            batches = [read_observable(p) for p in flags["inputs"].split(",")]
            counts, out = R.token_count(batches, args, observer, kwargs)
    except (R.QcalError, NotImplementedError, OSError, st_io.FormatError) as e:
        sys.stderr.write("%s: %s\n" % (tool, e))
        return 1
    if "corrupt" in flags and flags["corrupt"] in out:
        st, shape, raw = out[flags["corrupt"]]
        out[flags["corrupt"]] = (st, shape, bytes([raw[0] ^ 1]) + raw[1:])
    if "corrupt_count" in flags and counts is not None:
        counts[flags["corrupt_count"]] = (counts.get(flags["corrupt_count"]) or 0) + 1
    if "output" in flags:
        st_io.write(flags["output"], out, {"args": json.dumps(args.to_json()), "observer": observer})
    if counts is not None:
        sys.stdout.write(json.dumps(counts, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
