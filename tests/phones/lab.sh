#!/usr/bin/env bash
# The phones' network: four namespaces made for one test run.
#   T-br: a bridge (br0) with br_netfilter on, where callrec runs;
#   T-a (192.0.2.11), T-b (192.0.2.12): the phones; T-p (192.0.2.10): Kamailio.
# Every frame between them crosses br0, so callrec sees SIP and RTP on br0
# and the kernel's FORWARD hook sees each bridged IPv4 packet.
# usage: lab.sh up T | lab.sh down T
set -euo pipefail
cmd=$1 t=$2
nsx() { ip netns exec "$t-$1" "${@:2}"; }
if [ "$cmd" = down ]; then
  for n in br a b p; do ip netns del "$t-$n" 2>/dev/null || true; done
  exit 0
fi
for n in br a b p; do
  ip netns del "$t-$n" 2>/dev/null || true
  ip netns add "$t-$n"
  nsx "$n" sysctl -q -w net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
  nsx "$n" ip link set lo up
done
nsx br ip link add br0 type bridge
nsx br ip link set br0 up
for pair in a:11 b:12 p:10; do
  n=${pair%%:*} host=${pair##*:}
  nsx br ip link add "v$n" type veth peer name eth0 netns "$t-$n"
  nsx br ip link set "v$n" master br0 up
  nsx "$n" ip addr add "192.0.2.$host/24" dev eth0
  nsx "$n" ip link set eth0 up
  # linphonec listens only once it believes the network is up: a default route.
  nsx "$n" ip route add default dev eth0
done
nsx br sysctl -q -w net.bridge.bridge-nf-call-iptables=1
