#!/bin/bash
# Per-packet cost of the bridged anti-spoofing means, N bound pods: flood ping between two pods
# on one bridge (br_netfilter on), the sender's address bound last.
set -e
N=${N:-250}
C=${C:-20000}
ND=pal-bm-n; P1=pal-bm-a; P2=pal-bm-b
cleanup() { for n in $ND $P1 $P2; do ip netns del $n 2>/dev/null || true; done; }
trap cleanup EXIT
cleanup
for n in $ND $P1 $P2; do ip netns add $n; done
ip -n $ND link add br0 type bridge; ip -n $ND link set br0 up
i=1; for p in $P1 $P2; do
  ip -n $ND link add vb$i type veth peer name eth0 netns $p
  ip -n $ND link set vb$i master br0; ip -n $ND link set vb$i up
  ip -n $p addr add 10.7.0.$i/24 dev eth0; ip -n $p link set eth0 up; ip -n $p link set lo up
  i=$((i+1)); done
ip netns exec $ND sysctl -qw net.bridge.bridge-nf-call-iptables=1
run() { ip netns exec $P1 ping -f -q -c $C 10.7.0.2 | tail -1; }
echo "baseline (no rules):"; run; run
# (a) bridge family: one set lookup
{
echo "add table bridge t"
echo "add chain bridge t pre { type filter hook prerouting priority -200 ; policy accept ; }"
echo "add set bridge t local4 { type ipv4_addr ; }"
echo "add set bridge t bind4 { type ipv4_addr . ifname ; }"
echo "add rule bridge t pre ether type ip ip saddr . iifname @bind4 return"
echo "add rule bridge t pre ether type ip ip saddr @local4 counter drop"
for k in $(seq 1 $N); do echo "add element bridge t local4 { 10.8.$((k/250)).$((k%250+1)) }"; echo "add element bridge t bind4 { 10.8.$((k/250)).$((k%250+1)) . \"x$k\" }"; done
echo "add element bridge t local4 { 10.7.0.1, 10.7.0.2 }"
echo "add element bridge t bind4 { 10.7.0.1 . \"vb1\", 10.7.0.2 . \"vb2\" }"
} | ip netns exec $ND nft -f -
echo "bridge family set lookup ($N bindings):"; run; run
ip netns exec $ND nft delete table bridge t
# (b) iptables physdev: one rule per bound pod, the sender's last
ip netns exec $ND iptables -N spoof
for k in $(seq 1 $N); do ip netns exec $ND iptables -A spoof -s 10.8.$((k/250)).$((k%250+1)) -m physdev --physdev-in x$k -j RETURN; done
ip netns exec $ND iptables -A spoof -s 10.7.0.2 -m physdev --physdev-in vb2 -j RETURN
ip netns exec $ND iptables -A spoof -s 10.7.0.1 -m physdev --physdev-in vb1 -j RETURN
ip netns exec $ND iptables -A spoof -s 10.7.0.0/24 -j DROP
ip netns exec $ND iptables -A FORWARD -j spoof
echo "iptables physdev, one rule per pod ($N+2 rules):"; run; run
