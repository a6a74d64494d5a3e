#!/usr/bin/env bash
# Installs what callrec builds against and what its tests use as real peers:
# libpcap (capture), libssh2 (SFTP), OpenSSH server (delivery tests), tshark
# (cross-checks), SIPp (live calls), sox (audio checks), Open JTalk (prompt
# synthesis), iproute2 (network namespaces), nftables/iptables (inline mode's
# NFQUEUE diversion), baresip, linphonec and Kamailio (real phones through a
# real proxy in tests/phones_live.rs), prometheus (promtool for the
# metrics and alert rules), systemd (systemd-analyze for the unit), dpkg
# and passwd (the package installed into a clean root), SQLite (the call
# history index), gnumeric (ssconvert reads the CSV back), PostgreSQL (the
# fleet database test starts its own server), Node.js (runs hep-js, the
# Homer project's HEPv3 decoder, against the HEP export); FFmpeg's libraries
# (codecs, resampling, MP3/Opus/FLAC encoding) with clang for their
# bindings, libsrtp2 (SRTP), libbcg729-dev (G.729 A/B and RFC 3389
# comfort noise are decoded by libbcg729; -dev for the link), and the ffmpeg command line, sox's AMR formats
# and pylibsrtp as the independent encoders the codec and SRTP tests use.
# Then the cargo tools CI runs: cargo-deb (the .deb) and cargo-deny
# (licences, bans, advisories), each installed only when absent. Needs root
# or sudo.
set -euo pipefail
pkgs=(pkg-config libpcap-dev libssl-dev libssh2-1-dev openssh-server openssh-client
      tshark sip-tester sox tcpdump tcpreplay iproute2 open-jtalk open-jtalk-mecab-naist-jdic
      prometheus systemd dpkg passwd util-linux
      libavcodec-dev libavformat-dev libavutil-dev libswresample-dev clang libclang-dev
      libsrtp2-dev ffmpeg libsox-fmt-all libopencore-amrnb0 libopencore-amrwb0 libvo-amrwbenc0 libbcg729-0
      libbcg729-dev
      iptables nftables baresip-core linphone-cli kamailio libsqlite3-dev gnumeric postgresql nodejs)
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
# The prometheus package starts a server on :9090 where systemd runs; the
# tests only need promtool.
if command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
  systemctl disable --now prometheus >/dev/null 2>&1 || true
  # Likewise postgresql's cluster: the fleet test starts a server of its own.
  systemctl disable --now postgresql >/dev/null 2>&1 || true
fi
for tool in cargo-deb cargo-deny; do
  command -v "$tool" >/dev/null || cargo install "$tool" --locked --quiet
done
rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy rustfmt 2>/dev/null || true
# pylibsrtp (PyPI, with its own libsrtp build) and cryptography (for
# tests/support/srtp_mki.py, an SRTP sender written from RFC 3711): the
# independent SRTP implementations tests/srtp.rs encrypts with.
if ! python3 -c "import pylibsrtp, cryptography" 2>/dev/null; then
  python3 -m pip install --quiet pylibsrtp cryptography
fi
# pjsua2-python (PyPI): its wheel carries pjproject's copy of the RFC 3951
# iLBC reference encoder (exported initEncode/iLBC_encode), the independent
# iLBC encoder tests/codecs.rs drives through tests/support/encoders.py
# (no iLBC encoder exists in Debian's ffmpeg, sox or libraries).
if ! python3 -c "import importlib.util as u, sys; sys.exit(u.find_spec('pjsua2') is None)" 2>/dev/null; then
  python3 -m pip install --quiet pjsua2-python
fi
# npm for hep-js below: Debian's npm package only where no npm came with
# nodejs (a NodeSource nodejs ships its own and conflicts with Debian's).
if ! command -v npm >/dev/null; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends npm
fi
# hep-js (npm; the Homer project's own HEPv3 library): the independent
# decoder tests/hep_export.rs checks the HEP export with, and the
# independent encoder tests/hep_source.rs feeds `callrec run` (issue 17). Kept in a cache
# folder outside the repository (the test looks there, or in $HEPJS_DIR).
HEPJS_DIR="${HEPJS_DIR:-/var/cache/callrec-test/hep-js}"
if [ ! -f "$HEPJS_DIR/node_modules/hep-js/package.json" ]; then
  mkdir -p "$HEPJS_DIR"
  npm install --prefix "$HEPJS_DIR" --no-audit --no-fund --silent hep-js@1.0.22
fi
