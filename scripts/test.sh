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
bash scripts/guest/build-9p.sh
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
# Shared fixtures are made once, before files run side by side.
node -e "import('./dist/testing/published-guest.js').then((m) => m.publishedReferenceGuest())"
node -e "import('./dist/testing/web-site.js').then((m) => m.publishedWebSite())"
# Two files at a time (HOSTME_TEST_JOBS): every file uses its own ports, temp
# dirs and homes, so they do not share state. The slow end-to-end files start
# first so the two workers finish together.
mapfile -t slow < <(printf '%s\n' "${files[@]}" | grep -E 'e2e|web\.test|faults|formats\.test|v2v\.test' || true)
mapfile -t rest < <(printf '%s\n' "${files[@]}" | grep -vE 'e2e|web\.test|faults|formats\.test|v2v\.test' || true)
# A test without its own timeout gets 20 min: a hang must fail the run, not hold CI.
node --test --test-timeout=1200000 --test-concurrency="${HOSTME_TEST_JOBS:-2}" --test-reporter=spec "${slow[@]}" "${rest[@]}"
