#!/usr/bin/env bash
# Visitors share the site with each other (docs/peers.md): a hub (hostme serve
# --hub --iso) is the origin and the tracker; visitor A boots the reference
# guest from the origin and then shares its cache; visitor B boots the same
# image with --hub and takes its chunks from A (every chunk verified by hash,
# the origin stays the fallback). Then a real BitTorrent client (aria2c)
# downloads the site's bootable ISO through the hub's torrent (web seed).
# Prints where B's bytes came from and the ISO's digest against the hub's.
#
#   npm run demo:peers
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/guest/build-reference.sh
hostme() { node bin/hostme.js "$@"; }
demo=.cache/demo-peers
guest="${HOSTME_GUEST_DIR:-.cache/guest}/hello"
mkdir -p "$demo"
[ -f "$demo/publisher.key" ] || hostme keygen "$demo/publisher.key"
if ! hostme ls "$demo/repo" 2>/dev/null | grep -q '^hello'; then
  hostme pack "$guest/disk.raw" --repo "$demo/repo" --name hello --version 1 --key "$demo/publisher.key" \
    --kernel "$guest/vmlinux" --cmdline "$(node -p "require(require('path').resolve('$guest/guest.json')).cmdline")"
fi
port=${HOSTME_DEMO_PEERS_PORT:-8060}
hub="http://127.0.0.1:$port"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM

echo "== hub: hostme serve $demo/repo --hub --iso on port $port (origin, tracker, ISO and torrent)"
hostme serve "$demo/repo" --port "$port" --hub --hub-state "$demo/hub.db" --iso --iso-cache "$demo/iso-cache" --quiet & pids+=($!)
for _ in $(seq 100); do curl -fsS "$hub/index.json" >/dev/null 2>&1 && break; sleep 0.1; done

rm -rf "$demo/cache-a" "$demo/cache-b" "$demo/torrent"
echo "== visitor A boots hello@1 from the origin (its own cache), until HOSTME-READY"
hostme run "$hub" hello@1 --cache "$demo/cache-a" --until HOSTME-READY --timeout 300 --console none --stats-json "$demo/a.json"
echo "== visitor A shares its cache; the hub's tracker lists it"
hostme share "$hub" hello@1 --hub "$hub" --cache "$demo/cache-a" --host 127.0.0.1 --json > "$demo/share-a.log" & pids+=($!)
for _ in $(seq 100); do grep -q port "$demo/share-a.log" 2>/dev/null && break; sleep 0.1; done
for _ in $(seq 50); do curl -fsS "$hub/api/peers?image=hello@1" 2>/dev/null | grep -q '"port"' && break; sleep 0.2; done
curl -fsS "$hub/api/peers?image=hello@1"; echo

echo "== visitor B boots hello@1 with --hub: chunks from peers first, the origin as fallback"
hostme run "$hub" hello@1 --hub "$hub" --cache "$demo/cache-b" --until HOSTME-READY --timeout 300 --console none --stats-json "$demo/b.json"
node -e '
  const [a, b] = process.argv.slice(1).map((f) => require(require("path").resolve(f)));
  const mib = (n) => (n / 1048576).toFixed(2) + " MiB";
  console.log(`A fetched ${mib(a.bytesFetched)} from the origin`);
  console.log(`B fetched ${mib(b.bytesFetched)}: ${mib(b.bytesFromPeers)} from peers, ${mib(b.bytesFetched - b.bytesFromPeers)} from the origin`);
' "$demo/a.json" "$demo/b.json"

echo "== the site as a bootable ISO, downloaded by aria2c through its torrent (web seed: the hub)"
mkdir -p "$demo/torrent"
curl -fsS -o "$demo/torrent/hello.iso.torrent" "$hub/i/hello/hello.iso.torrent"
aria2c --quiet --seed-time=0 --dir "$demo/torrent" "$demo/torrent/hello.iso.torrent"
curl -fsS -o "$demo/hub.iso" "$hub/i/hello/hello.iso"
iso=$(find "$demo/torrent" -name '*.iso' | head -1)
echo "torrent download: $(sha256sum < "$iso" | cut -c1-64)"
echo "hub's ISO:        $(sha256sum < "$demo/hub.iso" | cut -c1-64)"
echo "Boot it:          qemu-system-x86_64 -m 512 -cdrom $iso -nographic   (Ctrl-A X quits)"
