#!/usr/bin/env bash
# Tests ./bazelw's package logic with stub commands on PATH: no apt call when
# everything is installed, an install of exactly the missing packages as root,
# and clear failures when it cannot install.
set -uo pipefail

BAZELW="$TEST_SRCDIR/qcal/bazelw"
[[ -f "$BAZELW" ]] || BAZELW="$(pwd)/bazelw"
work="$(mktemp -d "${TEST_TMPDIR:-/tmp}/bazelw.XXXXXX")"
failures=0

fail() { echo "FAIL: $*"; failures=$((failures + 1)); }

# setup STATE UID: stubs reporting every package installed (STATE=all) or
# libhwy-dev missing (STATE=missing), running as user UID.
setup() {
  local state=$1 uid=$2
  rm -rf "$work/bin" "$work/log"; mkdir -p "$work/bin"; : > "$work/log"
  cp "$BAZELW" "$work/bazelw"
  cat > "$work/bin/dpkg-query" <<STUB
#!/usr/bin/env bash
shift 2  # -W -f=...
for p in "\$@"; do
  if [[ "$state" == missing && "\$p" == libhwy-dev ]]; then continue; fi
  echo "\$p ii "
done
STUB
  cat > "$work/bin/apt-get" <<STUB
#!/usr/bin/env bash
echo "apt-get \$*" >> "$work/log"
[[ "\${APT_FAIL:-}" == "\$1" ]] && exit 100
exit 0
STUB
  cat > "$work/bin/id" <<STUB
#!/usr/bin/env bash
echo $uid
STUB
  cat > "$work/bin/bazel" <<STUB
#!/usr/bin/env bash
echo "bazel \$*" >> "$work/log"
STUB
  chmod +x "$work/bin/"*
}

run() { PATH="$work/bin:/usr/bin:/bin" "$work/bazelw" "$@" 2> "$work/stderr"; }

# 1. Everything installed: no apt call, bazel runs with the arguments.
setup all 0
run test //foo || fail "bazelw failed with all packages present"
grep -q "apt-get" "$work/log" && fail "apt-get was called although nothing is missing"
grep -qx "bazel test //foo" "$work/log" || fail "bazel was not run with the arguments: $(cat "$work/log")"

# 2. A package missing, as root: update, then install exactly that package.
setup missing 0
run build //x || fail "bazelw failed installing as root"
grep -q "^apt-get update" "$work/log" || fail "no apt-get update"
grep -q "^apt-get install -y -q --no-install-recommends libhwy-dev$" "$work/log" \
  || fail "did not install exactly the missing package: $(cat "$work/log")"
grep -qx "bazel build //x" "$work/log" || fail "bazel not run after install"

# 3. Missing, not root, no sudo: exit 1 naming the package, bazel not run.
setup missing 1000
rm -f "$work/bin/sudo"
if PATH="$work/bin:/bin" "$work/bazelw" test //... 2> "$work/stderr"; then
  fail "bazelw succeeded without being able to install"
fi
grep -q "libhwy-dev" "$work/stderr" || fail "message does not name the package"
grep -q "bazel" "$work/log" && fail "bazel ran although packages are missing"

# 4. The archive is unreachable: clear message.
setup missing 0
APT_FAIL=update run test //... && fail "bazelw succeeded although apt-get update failed"
grep -q "archive" "$work/stderr" || fail "no message about the archive: $(cat "$work/stderr")"

# 5. QCAL_BAZELW_NO_INSTALL=1 reports instead of installing.
setup missing 0
QCAL_BAZELW_NO_INSTALL=1 run test //... && fail "NO_INSTALL did not fail"
grep -q "apt-get install libhwy-dev" "$work/stderr" || fail "NO_INSTALL message lacks the command"
grep -q "^apt-get" "$work/log" && fail "NO_INSTALL called apt-get"

# 6. --config=fuzz asks for clang too.
setup all 0
cat > "$work/bin/dpkg-query" <<'STUB'
#!/usr/bin/env bash
shift 2
for p in "$@"; do [[ "$p" == clang || "$p" == libclang-rt-14-dev ]] || echo "$p ii "; done
STUB
chmod +x "$work/bin/dpkg-query"
run build --config=fuzz //x || fail "fuzz install failed"
grep -q "install -y -q --no-install-recommends clang libclang-rt-14-dev" "$work/log" \
  || fail "fuzz config did not install clang: $(cat "$work/log")"

# 7. On CI, --config=ci follows the command word, after startup options.
setup all 0
CI=true run --output_base=/tmp/ob test //a || fail "CI run failed"
grep -qx "bazel --output_base=/tmp/ob test --config=ci //a" "$work/log" \
  || fail "CI config misplaced: $(cat "$work/log")"
: > "$work/log"
CI=true run version || fail "CI version failed"
grep -qx "bazel version" "$work/log" || fail "CI changed a non-build command: $(cat "$work/log")"

rm -rf "$work"
if ((failures)); then echo "$failures failure(s)"; exit 1; fi
echo "all bazelw checks passed"
