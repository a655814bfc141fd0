#!/usr/bin/env bash
# Runs each libFuzzer target for a bounded time.
#
#   tools/fuzz.sh [SECONDS_PER_TARGET] [TARGET ...]
#
# TARGETs: safetensors, quant_args, observer (default: all). Builds with clang
# and --config=fuzz (AddressSanitizer + UndefinedBehaviorSanitizer) in its own
# Bazel output base, so the normal gcc build is not invalidated. Each target
# starts from its seed corpus in tests/fuzz/corpus/<target> (copied, so the
# checked-in corpus only grows by hand). A crash, leak, timeout or sanitizer
# report stops that target, leaves the reproducer in fuzz-artifacts/<target>/
# and makes the script exit 1: fix the bug, then add the reproducer to
# tests/fuzz/corpus/<target>/ so the <target>_regression test keeps it fixed.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

seconds="${1:-60}"
shift || true
targets=("$@")
if ((${#targets[@]} == 0)); then
  targets=(safetensors quant_args observer)
fi
if ! [[ "$seconds" =~ ^[0-9]+$ ]] || ((seconds < 1)); then
  echo "fuzz.sh: SECONDS_PER_TARGET must be a positive integer, got '$seconds'" >&2
  exit 2
fi
labels=()
for t in "${targets[@]}"; do
  case "$t" in
    safetensors|quant_args|observer) labels+=("//tests/fuzz:${t}_fuzzer") ;;
    *) echo "fuzz.sh: unknown target '$t' (safetensors, quant_args, observer)" >&2; exit 2 ;;
  esac
done

output_base="${QCAL_FUZZ_OUTPUT_BASE:-${HOME:-/tmp}/.cache/qcal-fuzz-output}"
export CC=clang CXX=clang++
# --symlink_prefix=/: no bazel-* links in the workspace. Links into this
# output base would replace the normal build's, and the normal build would
# then descend into them (`bazel test //...` fails on them).
./bazelw --output_base="$output_base" build --config=fuzz --symlink_prefix=/ \
  "${labels[@]}"
bin="$(./bazelw --output_base="$output_base" info --config=fuzz bazel-bin 2>/dev/null)"

status=0
summary=()
for t in "${targets[@]}"; do
  work="$(mktemp -d)"
  mkdir -p "$work/corpus" "fuzz-artifacts/$t"
  cp -r "tests/fuzz/corpus/$t/." "$work/corpus/"
  log="fuzz-artifacts/$t/last_run.log"
  echo "== fuzzing $t for ${seconds}s"
  set +e
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    "$bin/tests/fuzz/${t}_fuzzer" -max_total_time="$seconds" -timeout=10 \
      -rss_limit_mb=2048 -max_len=8192 -print_final_stats=1 \
      -artifact_prefix="fuzz-artifacts/$t/" "$work/corpus" > "$log" 2>&1
  rc=$?
  set -e
  runs="$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || true)"
  cov="$(grep -o 'cov: [0-9]*' "$log" | tail -1 | grep -o '[0-9]*' || true)"
  if ((rc == 0)); then
    summary+=("$(printf '%-12s ok      runs=%-10s cov=%s' "$t" "${runs:-?}" "${cov:-?}")")
  else
    status=1
    summary+=("$(printf '%-12s FAILED  (exit %d; see %s and the artifact in fuzz-artifacts/%s/)' "$t" "$rc" "$log" "$t")")
    tail -40 "$log"
  fi
  rm -rf "$work"
done
echo
echo "fuzz summary (${seconds}s per target):"
printf '  %s\n' "${summary[@]}"
exit "$status"
