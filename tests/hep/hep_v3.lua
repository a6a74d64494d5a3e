-- A minimal HEPv3 dissector for tshark, written for callrec's tests:
-- Debian's tshark (Wireshark 4.0) has no HEP dissector. It walks the
-- chunks (HEP3 spec: vendor u16, type u16, length u16 incl. header,
-- value), exposes the payload type, correlation id and payload, and
-- hands SIP payloads (type 1) to Wireshark's own SIP dissector.
local p = Proto("hep3test", "HEPv3 (callrec test dissector)")
local f_proto = ProtoField.uint8("hep3test.proto", "Payload type")
local f_corr = ProtoField.string("hep3test.correlation", "Correlation ID")
local f_payload = ProtoField.bytes("hep3test.payload", "Payload")
local f_sport = ProtoField.uint16("hep3test.sport", "Source port")
local f_dport = ProtoField.uint16("hep3test.dport", "Destination port")
local f_secs = ProtoField.uint32("hep3test.secs", "Seconds")
local f_usecs = ProtoField.uint32("hep3test.usecs", "Microseconds")
p.fields = { f_proto, f_corr, f_payload, f_sport, f_dport, f_secs, f_usecs }

function p.dissector(buf, pinfo, tree)
  if buf:len() < 6 or buf(0, 4):string() ~= "HEP3" then return 0 end
  local total = buf(4, 2):uint()
  local t = tree:add(p, buf(0, total))
  local i, ptype = 6, 0
  while i + 6 <= total do
    local kind = buf(i + 2, 2):uint()
    local len = buf(i + 4, 2):uint()
    if len < 6 then break end
    local v = buf(i + 6, len - 6)
    if kind == 0x0b then ptype = v:uint(); t:add(f_proto, v)
    elseif kind == 0x07 then t:add(f_sport, v)
    elseif kind == 0x08 then t:add(f_dport, v)
    elseif kind == 0x09 then t:add(f_secs, v)
    elseif kind == 0x0a then t:add(f_usecs, v)
    elseif kind == 0x11 then t:add(f_corr, v)
    elseif kind == 0x0f then
      t:add(f_payload, v)
      if ptype == 1 then Dissector.get("sip"):call(v:tvb(), pinfo, tree) end
    end
    i = i + len
  end
  pinfo.cols.protocol = "HEP3"
  return total
end
DissectorTable.get("udp.port"):add_for_decode_as(p)
