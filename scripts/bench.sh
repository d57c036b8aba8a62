#!/usr/bin/env bash
# npm run bench: build, the reference guest, then the benchmarks one after the
# other (they are CPU-heavy; never run them in parallel on a small machine).
# Results: bench/results/*.json. Extra arguments go to bench:boot (e.g. --runs 1).
set -euo pipefail
cd "$(dirname "$0")/.."
echo "== benchmark tools (bench:serve compares against nginx with wrk)"
for pkg in wrk nginx-light; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || ${SUDO:-$( [ "$(id -u)" -eq 0 ] || echo sudo )} apt-get install -y -q "$pkg"
done
echo "== build"
npx tsc -p .
echo "== reference guest"
bash scripts/guest/build-reference.sh
echo "== bench:pack"
node dist/bench/pack.bench.js
echo "== bench:nbd"
node dist/bench/nbd.bench.js
echo "== bench:chunk-size"
bash scripts/bench/chunk-size.sh
echo "== bench:boot"
node dist/bench/boot.bench.js "$@"
echo "== bench:browser"
node dist/bench/browser.bench.js
echo "== bench:serve"
node dist/bench/serve.bench.js
