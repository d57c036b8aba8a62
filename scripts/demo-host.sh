#!/usr/bin/env bash
# HostMe hosting on one machine: build examples/web, serve it from a hub,
# start a node, host the site on the node (its VM boots), and print the public
# URL through which curl gets the page. Ctrl-C stops everything (the node
# stops its VM cleanly).
#
#   npm run demo:host            # needs the set-up of the README (scripts/setup.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
hostme() { node bin/hostme.js "$@"; }
demo=.cache/demo-host
mkdir -p "$demo"
[ -f "$demo/publisher.key" ] || hostme keygen "$demo/publisher.key"
if [ ! -d "$demo/repo/manifests/web" ]; then
  echo "== build examples/web into $demo/repo"
  hostme build examples/web/hostme.json --repo "$demo/repo" --key "$demo/publisher.key" --input title="Hosted by a HostMe node"
fi
hub_port=${HOSTME_DEMO_HUB_PORT:-8090}
node_port=${HOSTME_DEMO_NODE_PORT:-7480}
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM
echo "== hub at http://127.0.0.1:$hub_port"
# Started directly (not through the hostme function): $! must be node itself, so Ctrl-C reaches it.
node bin/hostme.js serve "$demo/repo" --hub --port "$hub_port" --quiet --hub-state "$demo/hub.db" & pids+=($!)
echo "== node (dashboard http://127.0.0.1:$node_port/)"
node bin/hostme.js host --home "$demo/node" --port "$node_port" & pids+=($!)
sleep 2
hostme host add "http://127.0.0.1:$hub_port/i/web" --home "$demo/node"
url="http://127.0.0.1:$hub_port/s/web/"
echo "== waiting for the node's VM to serve the site (a few seconds under KVM, longer under TCG)"
for _ in $(seq 1 300); do
  if curl -fsS "$url" >/dev/null 2>&1; then break; fi
  sleep 1
done
curl -fsS -D - "$url"
echo
echo "public URL: $url   (the x-hostme-node header names the node that served it)"
echo "dashboard:  http://127.0.0.1:$node_port/    site page with the HostMe button: http://127.0.0.1:$hub_port/i/web"
echo "Ctrl-C stops the hub and the node."
wait
