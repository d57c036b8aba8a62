#!/usr/bin/env bash
# The test command (README): set up, lint, build the reference guest, run every test.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
echo "== lint"
npx eslint src
npx tsc -p tsconfig.web.json --noEmit
echo "== reference guest"
bash scripts/guest/build-reference.sh
bash scripts/guest/build-i686.sh
echo "== accelerator"
# Decided once, from a real boot (a KVM that passes a probe may still hang a
# real kernel): every QEMU test of this run uses the same answer.
if [ -z "${HOSTME_ACCEL:-}" ]; then
  HOSTME_ACCEL="$(node dist/testing/decide-accel.js)"
  export HOSTME_ACCEL
fi
echo "tests run QEMU with HOSTME_ACCEL=$HOSTME_ACCEL"
echo "== tests"
mapfile -t files < <(find dist -name '*.test.js' | sort)
if [ -n "${HOSTME_TEST_FILTER:-}" ]; then
  mapfile -t files < <(printf '%s\n' "${files[@]}" | grep -E "$HOSTME_TEST_FILTER")
fi
# Tests that boot QEMU are heavy on a 2-core machine: run files one at a time.
node --test --test-concurrency=1 --test-reporter=spec "${files[@]}"
