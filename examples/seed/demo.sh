#!/usr/bin/env bash
# The seed scenario on a real two-node lab (network namespaces, pods wired by the reference
# CNI bridge plugin from /usr/lib/cni, one agent per node finding pods by their addresses,
# nftables, etcd as the datastore):
#   1. lab up with the seed's namespaces, pods and two policies (web-deny-all held back);
#   2. app-web's labels; curl app-web:80 and ping it from other pods: both work;
#   3. apply web-deny-all: curl and ping now fail, and the node's counters show the drops,
#      attributed to default/web-deny-all (before and after the traffic); `palisade drops`
#      shows each dropped packet (curl's SYNs, ping's echo request), attributed to
#      default/web-deny-all;
#   4. delete the policy: traffic flows again;
#   5. lab down (also on error or Ctrl-C).
# Needs root, etcd, curl, ping and the reference CNI plugins (scripts/setup installs them). PALISADE=/path/to/palisade overrides the binary (default:
# the newest of target/release/palisade and target/debug/palisade, else palisade on PATH).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
if [[ -z "${PALISADE:-}" ]]; then
  # The most recently built of target/{release,debug}/palisade, else the one on PATH.
  PALISADE="$(ls -t "$root/target/release/palisade" "$root/target/debug/palisade" 2>/dev/null | head -n 1 || true)"
  [[ -n "$PALISADE" ]] || PALISADE="$(command -v palisade || true)"
fi
[[ -n "${PALISADE:-}" ]] || { echo "demo: no palisade binary (cargo build --release first)" >&2; exit 1; }
[[ $(id -u) -eq 0 ]] || { echo "demo: needs root (network namespaces)" >&2; exit 1; }
command -v etcd >/dev/null || { echo "demo: needs etcd on PATH" >&2; exit 1; }

lab="demo-$$"
work="$(mktemp -d)"
etcd_pid=""
cleanup() {
  "$PALISADE" lab --name "$lab" down >/dev/null 2>&1 || true
  if [[ -n "$etcd_pid" ]]; then kill "$etcd_pid" 2>/dev/null || true; wait "$etcd_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT INT TERM

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
p() { echo "+ palisade $*"; "$PALISADE" "$@"; }
lab() { p lab --name "$lab" "$@"; }

free_port() {
  local port
  while :; do
    port=$((20000 + RANDOM % 20000))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then echo "$port"; return; fi
  done
}

say "etcd on loopback (the datastore)"
client=$(free_port); peer=$(free_port)
etcd --name demo --data-dir "$work/etcd" \
  --listen-client-urls "http://127.0.0.1:$client" --advertise-client-urls "http://127.0.0.1:$client" \
  --listen-peer-urls "http://127.0.0.1:$peer" --initial-advertise-peer-urls "http://127.0.0.1:$peer" \
  --initial-cluster "demo=http://127.0.0.1:$peer" >"$work/etcd.log" 2>&1 &
etcd_pid=$!
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$client/health" >/dev/null && break; sleep 0.1; done
curl -sf "http://127.0.0.1:$client/health" >/dev/null || { echo "demo: etcd did not start" >&2; cat "$work/etcd.log" >&2; exit 1; }
ds="etcd://127.0.0.1:$client"
echo "etcd at $ds"

say "lab up: 2 nodes, bridge CNI, nftables, every seed object but web-deny-all"
lab up --nodes 2 --cni bridge --endpoint-match address --dataplane nftables --datastore "$ds" \
  -f "$here/namespaces.yaml" "$here/pods.yaml" "$here/backend-allow-frontend.yaml" "$here/frontend-allow-bob.yaml"

read -r web_node web_ip < <("$PALISADE" lab --name "$lab" status | awk '$1 == "default/app-web" { print $2, $3 }')
echo "app-web runs on node $web_node with address $web_ip"

say "app-web's labels (as the datastore holds them)"
p get endpoints -n default -o wide --datastore "$ds"

say "curl app-web:80 from bob/client, ping it from default/client: both work"
lab exec bob/client -- curl -sS -m 2 "http://$web_ip/"
lab exec default/client -- ping -c 1 -W 1 "$web_ip"

say "apply web-deny-all (selects app=web for Ingress, allows nothing)"
lab apply -f "$here/web-deny-all.yaml"
echo "counters of node $web_node for default/web-deny-all, before the traffic:"
p counters --node "$web_node" --policy default/web-deny-all --datastore "$ds"

say "curl and ping again: both fail now"
if lab exec bob/client -- curl -sS -m 2 "http://$web_ip/"; then echo "demo: curl should have failed" >&2; exit 1; fi
echo "curl failed, as it should"
if lab exec default/client -- ping -c 1 -W 1 "$web_ip"; then echo "demo: ping should have failed" >&2; exit 1; fi
echo "ping failed, as it should"
echo "counters of node $web_node for default/web-deny-all, after the traffic (the end-of-chain drop of app-web's ingress):"
p counters --node "$web_node" --policy default/web-deny-all --datastore "$ds"

say "the dropped packets, as the agents read them from NFLOG: curl's SYNs and ping's echo request"
p drops --namespace default --datastore "$ds"
p drops --namespace default --datastore "$ds" -o json | grep '"from":"bob/client"' | grep -q '"default/web-deny-all"' \
  || { echo "demo: curl's dropped SYNs should be attributed to default/web-deny-all" >&2; exit 1; }

say "the whole matrix, packets against the engine"
lab probe --probe 80/TCP --probe icmp

say "delete web-deny-all: traffic flows again"
lab delete networkpolicy default/web-deny-all
lab exec bob/client -- curl -sS -m 2 "http://$web_ip/"
lab exec default/client -- ping -c 1 -W 1 "$web_ip"

say "lab down"
lab down
echo "demo: done"
