#!/usr/bin/env bash
# The HostMe network on one machine: a hub (hostme serve --net), two QEMU
# guests that join network "demo" through it (as two machines would), and the
# browser tab that can join too. Prints each guest's address and DNS name from
# the hub's leases, then keeps running until Ctrl-C so you can try:
#   - the two consoles: logs in .cache/demo-net/{alpha,beta}.log;
#   - hostme net leases demo --dir .cache/demo-net/repo/.net
#   - the printed browser URL: the tab's guest gets its own address and can
#     `wget -O - http://alpha.demo.hostme/` ... `ping beta.demo.hostme`.
#
#   npm run demo:net
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/guest/build-reference.sh
hostme() { node bin/hostme.js "$@"; }
demo=.cache/demo-net
guest="${HOSTME_GUEST_DIR:-.cache/guest}/hello"
mkdir -p "$demo"
[ -f "$demo/publisher.key" ] || hostme keygen "$demo/publisher.key"
if ! hostme ls "$demo/repo" 2>/dev/null | grep -q '^hello'; then
  hostme pack "$guest/disk.raw" --repo "$demo/repo" --name hello --key "$demo/publisher.key" \
    --kernel "$guest/vmlinux" --cmdline "$(node -p "require(require('path').resolve('$guest/guest.json')).cmdline")"
fi
port=${HOSTME_DEMO_NET_PORT:-8070}
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM
echo "== hub: hostme serve $demo/repo --net on port $port"
node bin/hostme.js serve "$demo/repo" --net --port "$port" --quiet & pids+=($!)
for _ in $(seq 100); do curl -fsS "http://127.0.0.1:$port/index.json" >/dev/null 2>&1 && break; sleep 0.1; done
token=$(hostme net token demo --dir "$demo/repo/.net" | tail -1)
for name in alpha beta; do
  echo "== guest $name joins demo@http://127.0.0.1:$port"
  node bin/hostme.js run "$demo/repo" hello --instance "$name" --cache "$demo/cache" --fresh \
    --net "demo@http://127.0.0.1:$port" --net-token "$token" --console none > "$demo/$name.log" 2>&1 & pids+=($!)
done
for _ in $(seq 300); do
  [ "$(hostme net leases demo --dir "$demo/repo/.net" --json 2>/dev/null | grep -c '"instance"')" -ge 2 ] && break
  sleep 1
done
echo "== addresses and names, from the hub's leases"
grep -h 'joined network' "$demo/alpha.log" "$demo/beta.log" || true
hostme net leases demo --dir "$demo/repo/.net" || true
echo
echo "Browser guest: build the i686 image into $demo/repo (npm run demo does it for its own repo), then open"
echo "  http://127.0.0.1:$port/i/hello-i686/run?net=demo&token=$token"
echo "Ctrl-C stops the hub and both guests."
wait "${pids[0]}"
