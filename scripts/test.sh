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
# virt-v2v's file (a debootstrap build, then a libguestfs appliance under TCG:
# 15-25 min, mostly one CPU-bound process) runs beside the two workers at a
# lower priority from the start, so it holds no worker slot and takes the CPU
# the others leave; its report follows theirs.
mapfile -t background < <(printf '%s\n' "${files[@]}" | grep -E 'v2v\.test' || true)
mapfile -t files < <(printf '%s\n' "${files[@]}" | grep -vE 'v2v\.test' || true)
mkdir -p .cache
background_pid=""
if [ ${#background[@]} -gt 0 ]; then
  nice -n 10 node --test --test-timeout=3600000 --test-reporter=spec "${background[@]}" >.cache/test-background.log 2>&1 &
  background_pid=$!
fi
# Shared fixtures are made once, before files run side by side.
node -e "import('./dist/testing/published-guest.js').then((m) => m.publishedReferenceGuest())"
node -e "import('./dist/testing/web-site.js').then((m) => m.publishedWebSite())"
# Two files at a time (HOSTME_TEST_JOBS): every file uses its own ports, temp
# dirs and homes, so they do not share state. The slow end-to-end files start
# first so the two workers finish together.
mapfile -t slow < <(printf '%s\n' "${files[@]}" | grep -E 'e2e|web\.test|faults|formats\.test' || true)
mapfile -t rest < <(printf '%s\n' "${files[@]}" | grep -vE 'e2e|web\.test|faults|formats\.test' || true)
status=0
# A test without its own timeout gets 20 min: a hang must fail the run, not hold CI.
node --test --test-timeout=1200000 --test-concurrency="${HOSTME_TEST_JOBS:-2}" --test-reporter=spec "${slow[@]}" "${rest[@]}" || status=$?
if [ -n "$background_pid" ]; then
  echo "== tests run beside the others: ${background[*]}"
  wait "$background_pid" || status=$?
  cat .cache/test-background.log
fi
exit "$status"
