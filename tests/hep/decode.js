// Decodes HEPv3 datagrams with hep-js, the Homer project's own HEP library
// (npm "hep-js", sipcapture/hep-js): an implementation independent of
// callrec's encoder, used by tests/hep_export.rs.
//
// Input (stdin): one datagram per line, in hex. Output (stdout): one JSON
// object per line, {"rcinfo": {...hep-js fields...}, "payload_hex": "..."},
// or {"error": "..."} for a datagram hep-js cannot decode.
// The folder holding node_modules/hep-js comes from HEPJS_DIR.
'use strict';
const path = require('path');
const HEPjs = require(path.join(process.env.HEPJS_DIR, 'node_modules', 'hep-js'));

let input = '';
process.stdin.setEncoding('ascii');
process.stdin.on('data', (d) => { input += d; });
process.stdin.on('end', () => {
  for (const line of input.split('\n')) {
    if (!line.trim()) continue;
    const msg = Buffer.from(line.trim(), 'hex');
    const dec = HEPjs.decapsulate(msg);
    if (!dec || !dec.rcinfo) {
      process.stdout.write(JSON.stringify({ error: 'not HEPv3: ' + line.slice(0, 16) }) + '\n');
      continue;
    }
    // hep-js hands the payload chunk over as a UTF-8 string: back to bytes
    // (a byte that was not UTF-8 would come back changed and fail the test).
    const payload = Buffer.from(dec.payload || '', 'utf8').toString('hex');
    process.stdout.write(JSON.stringify({ rcinfo: dec.rcinfo, payload_hex: payload }) + '\n');
  }
});
