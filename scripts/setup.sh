#!/usr/bin/env bash
# Installs what callrec builds against and what its tests use as real peers:
# libpcap (capture), libssh2 (SFTP), OpenSSH server (delivery tests), tshark
# (cross-checks), SIPp (live calls), sox (audio checks), Open JTalk (prompt
# synthesis), iproute2 (network namespaces), nftables/iptables (inline mode's
# NFQUEUE diversion), baresip, linphonec and Kamailio (real phones through a
# real proxy in tests/phones_live.rs). Needs root or sudo.
set -euo pipefail
pkgs=(pkg-config libpcap-dev libssl-dev libssh2-1-dev openssh-server openssh-client
      tshark sip-tester sox tcpdump tcpreplay iproute2 open-jtalk open-jtalk-mecab-naist-jdic
      iptables nftables baresip-core linphone-cli kamailio)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
