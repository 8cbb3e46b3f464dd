#!/usr/bin/env bash
# The batched UDP addon (native/batch_udp.c) under a memory checker: builds it with
# AddressSanitizer and UndefinedBehaviorSanitizer into a temporary directory and runs its fuzz
# target, socket tests and send-queue test against that build (Node itself is not
# instrumented: the sanitizer runtimes are preloaded into it). With --valgrind, the ordinary
# build runs under valgrind's memcheck instead (slow: fewer fuzz iterations).
#
#   bash bench/native-asan.sh [--valgrind] [--iterations N]
#
# Prints each test file's counts and a closing verdict; exits non-zero on a failed test or any
# sanitizer / memcheck report. Needs `npm run build` first (the compiled tests in dist/).
set -euo pipefail
cd "$(dirname "$0")/.."

mode=asan
iterations=
while (($#)); do
  case $1 in
    --valgrind) mode=valgrind ;;
    --iterations) iterations=$2; shift ;;
    *) echo "usage: bash bench/native-asan.sh [--valgrind] [--iterations N]" >&2; exit 2 ;;
  esac
  shift
done

tests=(dist/test/net/batch-udp-fuzz.test.js dist/test/net/batch-udp.test.js dist/test/net/batch-udp-queue.test.js)
for t in "${tests[@]}"; do
  [[ -f $t ]] || { echo "missing $t: run npm run build first" >&2; exit 2; }
done

node_gyp=${npm_config_node_gyp:-$(dirname "$(command -v node)")/../lib/node_modules/npm/node_modules/node-gyp/bin/node-gyp.js}
nodedir=${npm_config_nodedir:-$(cd "$(dirname "$(command -v node)")/.." && pwd)}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

run_file() { # label, env..., -- command...
  local label=$1; shift
  local out=$work/out.txt
  set +e
  "$@" >"$out" 2>&1
  local rc=$?
  set -e
  local pass fail
  pass=$(sed -n 's/^# pass \([0-9]*\)$/\1/p' "$out" | tail -1)
  fail=$(sed -n 's/^# fail \([0-9]*\)$/\1/p' "$out" | tail -1)
  pass=${pass:-0} fail=${fail:-?}
  local reports
  reports=$(grep -Ec 'ERROR: AddressSanitizer|runtime error:|ERROR SUMMARY: [1-9]|Invalid (read|write)|uninitialised' "$out" || true)
  printf '%-34s exit %s: %s passed, %s failed; memory error reports: %s\n' "$label" "$rc" "$pass" "$fail" "$reports"
  { grep -E 'seed [0-9]+' "$out" || true; } | head -1 | sed 's/^# */    /'
  { grep -E 'ERROR SUMMARY' "$out" || true; } | tail -1 | sed 's/^==[0-9]*== */    valgrind: /'
  if [[ $rc != 0 || $fail != 0 || $reports != 0 ]]; then
    echo "---- $label output (last 60 lines) ----"
    tail -60 "$out"
    status=1
  fi
}

status=0
if [[ $mode == asan ]]; then
  cp native/batch_udp.c native/binding.gyp "$work/"
  flags='-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer -g -O1'
  if ! (cd "$work" && CFLAGS="$flags" LDFLAGS='-fsanitize=address,undefined' node "$node_gyp" rebuild --release --nodedir="$nodedir" >"$work/build.log" 2>&1); then
    tail -30 "$work/build.log"
    echo "ASan build failed" >&2
    exit 1
  fi
  addon=$work/build/Release/batch_udp.node
  ldd "$addon" | grep -q libasan || { echo "the build is not instrumented (no libasan in ldd)" >&2; exit 1; }
  preload="$(gcc -print-file-name=libasan.so) $(gcc -print-file-name=libubsan.so)"
  echo "ASan+UBSan build: $addon"
  for t in "${tests[@]}"; do
    # Node frees little at exit by design, so leak checking is off; everything else aborts.
    run_file "$(basename "$t") (ASan)" env PRIVDNS_BATCH_UDP_ADDON="$addon" LD_PRELOAD="$preload" \
      ASAN_OPTIONS=detect_leaks=0:abort_on_error=1:halt_on_error=1:detect_stack_use_after_return=1 \
      UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
      ${iterations:+PRIVDNS_FUZZ_ITERATIONS=$iterations} node "$t"
  done
else
  [[ -f native/build/Release/batch_udp.node ]] || { echo "no native/build/Release/batch_udp.node: npm run build:native" >&2; exit 2; }
  command -v valgrind >/dev/null || { echo "valgrind is not installed" >&2; exit 2; }
  echo "valgrind memcheck on native/build/Release/batch_udp.node"
  # V8's garbage collector scans the stack conservatively, reading words valgrind thinks unset.
  cat >"$work/v8.supp" <<'EOF'
{
   v8-conservative-stack-scan
   Memcheck:Cond
   fun:*IteratePointersInStack*
}
{
   v8-conservative-stack-scan-value
   Memcheck:Value8
   fun:*IteratePointersInStack*
}
EOF
  for t in "${tests[@]}"; do
    run_file "$(basename "$t") (valgrind)" env PRIVDNS_FUZZ_ITERATIONS="${iterations:-300}" \
      valgrind --error-exitcode=99 --smc-check=all-non-file --undef-value-errors=yes --leak-check=no \
      --suppressions="$work/v8.supp" node "$t"
  done
fi

if ((status == 0)); then echo "native addon under $mode: all tests passed, no memory errors reported"; else echo "native addon under $mode: FAILED"; fi
exit $status
