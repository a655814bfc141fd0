#!/usr/bin/env bash
# gpu_check.sh: the check to run on a machine with an NVIDIA GPU. Builds qcal
# with -c opt, lists the CUDA devices, runs every test tagged "cuda" (without
# cached results; among them the CPU-vs-CUDA parity suite
# //tests/cuda:parity_test), runs the GPU benchmarks (cuda/bench/gpu_bench)
# and the kernel parity cases under compute-sanitizer (memcheck, racecheck;
# when the tool is installed; QCAL_SANITIZE=0 skips them) when a GPU is
# present, and prints one line per test (target, result, and
# how many test cases passed, skipped and failed) and the benchmark summary
# (min/max bandwidth as a fraction of the copy bandwidth, MSE search times).
# QCAL_BENCH_MIN_TIME sets the seconds per benchmark case (default 0.2).
#
# Usage: tools/gpu_check.sh [--require-gpu]
#
# Exit status: 0 when every CUDA test (and benchmark) passed; 1 when a build,
# a test or a benchmark failed;
# 2 when there is nothing to check (no CUDA toolkit, or QCAL_DISABLE_CUDA set);
# 3 with --require-gpu when no GPU is usable. Without a GPU the device tests
# skip themselves, which this script reports plainly.
set -euo pipefail

require_gpu=0
for arg in "$@"; do
  case "$arg" in
    --require-gpu) require_gpu=1 ;;
    -h | --help)
      sed -n '2,19p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
      exit 0
      ;;
    *)
      echo "gpu_check: unknown argument '$arg' (see --help)" >&2
      exit 2
      ;;
  esac
done

cd "$(dirname "${BASH_SOURCE[0]}")/.."
bazel=(./bazelw)
opt=(-c opt)

section() { printf '\n=== %s\n' "$*"; }

section "CUDA tests"
mapfile -t tests < <("${bazel[@]}" query --noshow_progress \
  'attr(tags, "[\[ ]cuda[,\]]", tests(//...))' 2>/dev/null)
if ((${#tests[@]} == 0)); then
  echo "No CUDA tests are defined: the CUDA toolkit was not found (or"
  echo "QCAL_DISABLE_CUDA is set), so there is nothing to check. See"
  echo "bazel/cuda_configure.bzl for where the toolkit is looked for."
  exit 2
fi
printf '  %s\n' "${tests[@]}"

section "Build (-c opt)"
if ! "${bazel[@]}" build "${opt[@]}" //...; then
  echo "gpu_check: the -c opt build failed" >&2
  exit 1
fi

section "CUDA devices"
bin_dir=$("${bazel[@]}" info "${opt[@]}" bazel-bin 2>/dev/null)
testlogs=$("${bazel[@]}" info "${opt[@]}" bazel-testlogs 2>/dev/null)
gpu_present=1
if ! devices=$("$bin_dir/cuda/cuda_devices"); then
  echo "gpu_check: probing for CUDA devices failed (broken driver?)" >&2
  exit 1
fi
echo "$devices"
if [[ "$devices" == "no CUDA device"* ]]; then
  gpu_present=0
  echo
  echo "*** NO GPU: no usable CUDA device on this machine. The tests below"
  echo "*** still run, but every test case that needs a device SKIPS."
fi

section "Run the CUDA tests (-c opt)"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
"${bazel[@]}" test "${opt[@]}" --nocache_test_results --test_output=errors \
  "${tests[@]}" 2>&1 | tee "$log"
test_rc=${PIPESTATUS[0]}
set -e

# ----------------------------------------------------------------------------
# The kernel parity cases under compute-sanitizer, when the toolkit has it:
# memcheck (out-of-bounds and misaligned accesses) and racecheck (shared
# memory races). QCAL_SANITIZE=0 skips this.
sanitize_rc=0
sanitize_note=""
if ((gpu_present)) && [[ "${QCAL_SANITIZE:-1}" != 0 ]]; then
  sanitizer=$(command -v compute-sanitizer || true)
  for candidate in "${CUDA_PATH:-}/bin/compute-sanitizer" \
    /usr/local/cuda/bin/compute-sanitizer \
    /usr/local/cuda/compute-sanitizer/compute-sanitizer; do
    if [[ -z "$sanitizer" && -x "$candidate" ]]; then sanitizer=$candidate; fi
  done
  if [[ -n "$sanitizer" ]]; then
    section "compute-sanitizer (memcheck, racecheck) on the kernel parity cases"
    for tool in memcheck racecheck; do
      if ! "$sanitizer" --tool "$tool" --error-exitcode 9 \
        "$bin_dir/tests/cuda/parity_test" \
        --gtest_filter='CudaKernelParityTest.*-*BeyondTwoBillion*'; then
        sanitize_rc=1
        sanitize_note+=" $tool:FAILED"
      else
        sanitize_note+=" $tool:clean"
      fi
    done
  else
    sanitize_note=" not run (compute-sanitizer not found)"
  fi
fi

# ----------------------------------------------------------------------------
# GPU benchmarks (cuda/bench/gpu_bench, built above with -c opt): min/max
# bandwidth against the device's copy bandwidth, MSE search times.
bench_rc=0
bench_summary=""
if ((gpu_present)); then
  section "GPU benchmarks (-c opt)"
  bench_log=$(mktemp)
  trap 'rm -f "$log" "$bench_log"' EXIT
  set +e
  "$bin_dir/cuda/bench/gpu_bench" --benchmark_min_time="${QCAL_BENCH_MIN_TIME:-0.2}" \
    2>&1 | tee "$bench_log"
  bench_rc=${PIPESTATUS[0]}
  set -e
  bench_summary=$(sed -n '/^=== GPU benchmark summary/,$p' "$bench_log")
  if grep -q ' ERROR: ' <<<"$bench_summary"; then bench_rc=1; fi
fi

section "Summary"
failures=0
printf '%-40s %-20s %s\n' "TEST" "RESULT" "CASES (passed/skipped/failed)"
for t in "${tests[@]}"; do
  # Bazel's own verdict for the target, from the test summary.
  verdict=$(grep -E "^${t}[[:space:]]" "$log" | tail -n 1 |
    sed -E 's/^[^[:space:]]+[[:space:]]+(\(cached\) )?//; s/ in [0-9.]+s.*$//')
  verdict=${verdict:-NO STATUS}
  # gtest's per-case results, from the XML it writes (XML_OUTPUT_FILE).
  rel="${t#//}"
  xml="$testlogs/${rel/://}/test.xml"
  counts="-"
  skipped=0
  passed=0
  if [[ -f "$xml" ]]; then
    read -r passed skipped failed < <(awk '
      /<testcase / {
        if (open) { if (fail) f++; else if (skip) s++; else p++ }
        open = 1; fail = 0; skip = ($0 ~ /result="skipped"/)
      }
      /<failure/ { fail = 1 }
      END {
        if (open) { if (fail) f++; else if (skip) s++; else p++ }
        print p + 0, s + 0, f + 0
      }' "$xml")
    counts="$passed/$skipped/$failed"
  fi
  if [[ "$verdict" != PASSED ]]; then
    result="FAIL ($verdict)"
    failures=$((failures + 1))
  elif ((skipped > 0 && passed == 0)); then
    result="PASS (all skipped)"
  elif ((skipped > 0)); then
    result="PASS (some skipped)"
  else
    result="PASS"
  fi
  printf '%-40s %-20s %s\n' "$t" "$result" "$counts"
done

if [[ -n "$bench_summary" ]]; then
  echo
  echo "$bench_summary" | sed 's/^=== //'
fi
if ((gpu_present == 0)); then
  echo
  echo "NO GPU was present: the device test cases above were skipped, not run,"
  echo "and the GPU benchmarks were not run."
fi
if [[ -n "$sanitize_note" ]]; then
  echo
  echo "compute-sanitizer:$sanitize_note"
fi
if ((sanitize_rc != 0)); then
  echo
  echo "gpu_check: compute-sanitizer found errors in the kernels"
  failures=$((failures + 1))
fi
if ((bench_rc != 0)); then
  echo
  echo "gpu_check: the GPU benchmarks failed (exit $bench_rc or an ERROR line)"
  failures=$((failures + 1))
fi
if ((failures > 0 || test_rc != 0)); then
  echo
  echo "gpu_check: FAILED ($failures failing test target(s), bazel exit $test_rc)"
  exit 1
fi
if ((gpu_present == 0 && require_gpu)); then
  echo "gpu_check: --require-gpu given and no GPU is usable"
  exit 3
fi
echo
echo "gpu_check: OK"
