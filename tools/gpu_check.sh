#!/usr/bin/env bash
# gpu_check.sh: the check to run on a machine with an NVIDIA GPU. Builds qcal
# with -c opt, lists the CUDA devices, runs every test tagged "cuda" (without
# cached results) and prints one line per test: target, result, and how many
# test cases passed, skipped and failed.
#
# Usage: tools/gpu_check.sh [--require-gpu]
#
# Exit status: 0 when every CUDA test passed; 1 when a build or a test failed;
# 2 when there is nothing to check (no CUDA toolkit, or QCAL_DISABLE_CUDA set);
# 3 with --require-gpu when no GPU is usable. Without a GPU the device tests
# skip themselves, which this script reports plainly.
set -euo pipefail

require_gpu=0
for arg in "$@"; do
  case "$arg" in
    --require-gpu) require_gpu=1 ;;
    -h | --help)
      sed -n '2,12p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
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
# GPU benchmarks go here, once there are any: run each benchmark binary built
# above (cc_binary tags = ["benchmark"], -c opt) and add its lines to the table
# or a table of its own. Nothing to run yet.
# ----------------------------------------------------------------------------

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

if ((gpu_present == 0)); then
  echo
  echo "NO GPU was present: the device test cases above were skipped, not run."
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
