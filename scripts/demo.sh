#!/usr/bin/env bash
# The main job on its embedded default: build the reference guest, publish it
# to a local repository, serve it over HTTP, verify it from the URL, and boot
# it streamed (fetching only what the guest reads), then show the stats.
# Then the browser image: build hello-i686 from its manifest, snapshot it, and
# print the run page's URL.
#
#   npm run demo               # ends after the summary
#   npm run demo -- --serve    # keeps serving, for the browser (Ctrl-C stops)
set -euo pipefail
serve_after=0
[ "${1:-}" = "--serve" ] && serve_after=1
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/guest/build-reference.sh

demo=.cache/demo
mkdir -p "$demo"
hostme() { node bin/hostme.js "$@"; }
guest=.cache/guest/hello
[ -f "$demo/publisher.key" ] || hostme keygen "$demo/publisher.key"

echo "== pack the reference guest (1 GiB disk + kernel) into $demo/repo"
hostme pack "$guest/disk-1g.raw" --repo "$demo/repo" --name hello --key "$demo/publisher.key" \
  --kernel "$guest/vmlinux" --cmdline "$(node -e "console.log(require('./$guest/guest.json').cmdline)")" \
  --description "hostme reference guest: busybox on Debian's cloud kernel, 1 GiB disk"

port=${HOSTME_DEMO_PORT:-8080}
echo "== serve it at http://127.0.0.1:$port"
node bin/hostme.js serve "$demo/repo" --port "$port" --quiet &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
for _ in $(seq 50); do curl -fsS "http://127.0.0.1:$port/index.json" >/dev/null 2>&1 && break; sleep 0.1; done

echo "== verify it from the URL"
hostme verify "http://127.0.0.1:$port" hello --pubkey "$demo/publisher.key.pub"

echo "== boot it streamed (cold cache), until the guest prints HOSTME-READY"
rm -rf "$demo/cache"
hostme run "http://127.0.0.1:$port/i/hello" --cache "$demo/cache" --fresh --until HOSTME-READY --timeout 300 \
  --console none --stats-json "$demo/stats.json"
echo "== stats ($demo/stats.json)"
cat "$demo/stats.json"
echo

echo "== the browser image: hostme build examples/hello-i686, then hostme snapshot (one boot in v86 under Node)"
if ! hostme ls "$demo/repo" 2>/dev/null | grep -q 'hello-i686'; then
  hostme build examples/hello-i686/hostme.json --repo "$demo/repo" --key "$demo/publisher.key"
  hostme snapshot hello-i686 --repo "$demo/repo" --key "$demo/publisher.key"
fi
echo "Browser:      http://127.0.0.1:$port/i/hello-i686 (the HostMe button; 'Run here' resumes the snapshot in the tab)"
echo "Landing page: http://127.0.0.1:$port/i/hello (while 'hostme serve $demo/repo' runs)"
echo "Interactive:  node bin/hostme.js run http://127.0.0.1:$port/i/hello --cache $demo/cache   (Ctrl-] stops the VM)"
echo "Accelerator:  node bin/hostme.js doctor   (KVM or TCG, and why)"
echo "Grants:       node bin/hostme.js run http://127.0.0.1:$port/i/hello --instance try   (gets a console and nothing else), then in"
echo "              another terminal: node bin/hostme.js grants try; ... grant try disk-io 1M; ... revoke try disk   (docs/grants.md)"
echo "Peers:        npm run demo:peers  (visitor B boots from visitor A's cache; the site's ISO through its torrent, docs/peers.md)"
echo "              npm run bench:p2p   (N visitors boot one image at once: origin bytes and times with peers on and off)"
echo "Next demos:   npm run demo:net    (a hub, two guests on one overlay network, each with its own address and name)"
echo "              npm run demo:host   (a hub and a visitor's node: the web example hosted in the node's VM, served through the hub)"
if [ "$serve_after" = 1 ]; then
  echo "Serving $demo/repo at http://127.0.0.1:$port until Ctrl-C"
  wait "$server"
fi
