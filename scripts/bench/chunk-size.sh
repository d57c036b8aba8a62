#!/usr/bin/env bash
# Benchmark (not a test): how the chunk size changes what a cold boot fetches.
# Packs the 1 GiB reference guest at 64K, 128K, 256K and 1M, boots each cold
# over loopback HTTP to HOSTME-READY, and writes bench/results/chunk-size.json
# (the table in docs/format.md "Choosing the chunk size").
set -euo pipefail
cd "$(dirname "$0")/../.."
guest=.cache/guest/hello
[ -f "$guest/guest.json" ] || bash scripts/guest/build-reference.sh
work=$(mktemp -d "${TMPDIR:-/tmp}/hostme-chunk-bench-XXXXXX")
server=""
cleanup() { [ -n "$server" ] && kill "$server" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
hostme() { node bin/hostme.js "$@"; }
hostme keygen "$work/key" >/dev/null
port=$(node -e "const s=require('net').createServer().listen(0,'127.0.0.1',()=>{console.log(s.address().port);s.close()})")
rows=()
for size in 64K 128K 256K 1M; do
  repo="$work/repo-$size"
  hostme pack "$guest/disk-1g.raw" --repo "$repo" --name hello --key "$work/key" --kernel "$guest/vmlinux" \
    --cmdline "$(jq -r .cmdline "$guest/guest.json")" --chunk-size "$size" --json > "$work/pack.json"
  node bin/hostme.js serve "$repo" --port "$port" --quiet > /dev/null & server=$!
  for _ in $(seq 50); do curl -fsS "http://127.0.0.1:$port/index.json" >/dev/null 2>&1 && break; sleep 0.1; done
  hostme run "http://127.0.0.1:$port/i/hello" --cache "$work/cache-$size" --until HOSTME-READY --timeout 180 \
    --console none --stats-json "$work/run.json" 2>/dev/null
  kill "$server"; wait "$server" 2>/dev/null || true; server=""
  kernel=$(hostme inspect "$repo" hello --json | jq '[.blobs[] | select(.label == "kernel")][0].distinctObjects')
  row=$(jq -n --arg size "$size" --argjson kernel "$kernel" --slurpfile p "$work/pack.json" --slurpfile r "$work/run.json" \
    '{chunkSize: $size, diskChunksAtBoot: ($r[0].chunksFetched - $kernel - 2), bytesFetched: $r[0].bytesFetched,
      requests: $r[0].requests, msToReady: $r[0].msToReady, repositoryBytes: $p[0].storedBytes}')
  rows+=("$row")
  echo "$row" | jq -r '"\(.chunkSize)\t\(.diskChunksAtBoot) disk chunks at boot\t\(.bytesFetched) bytes fetched\t\(.requests) requests\t\(.repositoryBytes) bytes stored"'
done
mkdir -p bench/results
printf '%s\n' "${rows[@]}" | jq -s --arg date "$(date -u +%FT%TZ)" --argjson cpus "$(nproc)" \
  '{date: $date, cpus: $cpus, note: "cold hostme run over loopback HTTP, 1 GiB reference guest, one run each", results: .}' \
  > bench/results/chunk-size.json
echo "wrote bench/results/chunk-size.json"
