// Sends a capture's packets to a HEP collector as HEPv3 built by hep-js
// (the Homer project's own library: an encoder independent of callrec's).
//
// Usage: node send.js HEPJS_DIR HOST PORT PACKETS.jsonl
// Each input line: {"t": microseconds from the first packet, "src", "sport",
// "dst", "dport", "proto" (17/6), "type" (HEP protocol type), "hex"
// (payload), "via" ("udp"/"tcp"), "ids" ([capture ids])}. Packets go out
// at their capture pace, stamped with the wall clock at the start plus
// their offset (as an agent stamps what it captures); one copy per
// capture id (several ids: the same packet from several capture points),
// over UDP or one TCP connection per capture id.
//
// hep-js writes the payload as a string (Buffer.write): binary RTP would
// be mangled by UTF-8, so hep-js encodes a placeholder of the payload's
// length and the payload's bytes are copied over it (the payload chunk
// is the last one hep-js writes without vendor extensions; checked).
'use strict';
const path = require('path');
const dgram = require('dgram');
const net = require('net');
const fs = require('fs');
const [hepjsDir, host, port, file] = process.argv.slice(2);
const HEPJS = require(path.join(hepjsDir, 'node_modules', 'hep-js'));

const lines = fs.readFileSync(file, 'utf8').split('\n').filter((l) => l.length);
const pkts = lines.map((l) => JSON.parse(l));
const udp = dgram.createSocket('udp4');
const tcp = new Map();

function encode(p, id, stampUs) {
  const payload = Buffer.from(p.hex, 'hex');
  const rcinfo = {
    protocolFamily: 2,
    protocol: p.proto,
    srcIp: p.src,
    dstIp: p.dst,
    srcPort: p.sport,
    dstPort: p.dport,
    timeSeconds: Math.floor(stampUs / 1e6),
    timeUseconds: stampUs % 1e6,
    payloadType: p.type,
    captureId: id,
    capturePass: p.key,
  };
  const buf = HEPJS.encapsulate('x'.repeat(payload.length), rcinfo);
  const tail = buf.subarray(buf.length - payload.length);
  if (!tail.equals(Buffer.alloc(payload.length, 'x'))) throw new Error('payload is not the last chunk');
  payload.copy(tail);
  return buf;
}

function conn(id) {
  if (!tcp.has(id)) {
    const s = net.connect(Number(port), host);
    s.setNoDelay(true);
    tcp.set(id, s);
  }
  return tcp.get(id);
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function main() {
  const startWall = Date.now() * 1000;
  const startMono = process.hrtime.bigint();
  let sent = 0;
  for (const p of pkts) {
    const due = BigInt(p.t) * 1000n;
    for (;;) {
      const el = process.hrtime.bigint() - startMono;
      if (el >= due) break;
      await sleep(Math.max(1, Number((due - el) / 1000000n)));
    }
    for (const id of p.ids) {
      const b = encode(p, id, startWall + p.t);
      if (p.via === 'tcp') conn(id).write(b);
      else udp.send(b, Number(port), host);
      sent++;
    }
  }
  await sleep(200);
  for (const s of tcp.values()) s.end();
  udp.close();
  console.log(JSON.stringify({ sent }));
}
main().catch((e) => { console.error(e); process.exit(1); });
