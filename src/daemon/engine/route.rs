//! The media path: the routes that take a recorded call's RTP to its
//! shard, installed from the call's signalled media and taken down at
//! its end, and the per-payload routing of each captured packet. Apart
//! from the call events, which only say when routes change.

use super::{ActiveCall, Engine, EngineStats, KeypadCopy};
use crate::calls::tracker::{CallKey, MediaLegs, Tracker};
use crate::daemon::media::MediaCtl;
use crate::daemon::routes::{Evidence, Route};
use crate::daemon::shard::{Leg, ShardPool};
use crate::decode::{Payload, Transport};
use crate::recording::undecodable::MediaCheck;
use crate::time::Timestamp;
// Per-packet lookups: foldhash (see the engine).
use foldhash::HashMap;
use std::net::SocketAddr;

impl Engine {
    /// When the last RTP packet of a recorded call was routed, if any was.
    pub(super) fn last_rtp(&self, key: CallKey) -> Option<Timestamp> {
        let c = self.calls.get(&key)?;
        let routes = c.dst_routes.iter().filter_map(|a| self.by_dst.get(a));
        let routes = routes.chain(c.src_routes.iter().filter_map(|a| self.by_src.get(a)));
        let last = routes
            .filter(|r| r.key == key)
            .map(|r| r.last)
            .fold(c.last_rtp, Timestamp::max);
        (last > Timestamp::ZERO).then_some(last)
    }

    /// Tells the call's shard the packets dropped as foreign on its
    /// routes since last told (before a segment closes).
    pub(super) fn flush_foreign(&mut self, key: CallKey) {
        let Some(c) = self.calls.get_mut(&key) else {
            return;
        };
        for a in &c.dst_routes {
            if let Some(r) = self.by_dst.get_mut(a).filter(|r| r.key == key) {
                c.foreign[r.leg as usize] += r.take_foreign();
            }
        }
        for leg in [Leg::Subscriber, Leg::Remote] {
            let packets = std::mem::take(&mut c.foreign[leg as usize]);
            if packets > 0 {
                self.shards.senders[c.shard].send_ctl(MediaCtl::Foreign { key, leg, packets });
            }
        }
    }

    pub(super) fn install_routes(&mut self, key: CallKey, legs: &MediaLegs) {
        let Some(call) = self.calls.get_mut(&key) else {
            return;
        };
        let learned = take_routes(key, call, &mut self.by_dst, &mut self.by_src);
        let target = |a: SocketAddr| {
            learned
                .iter()
                .find(|l| l.0 == a && l.1.is_some())
                .and_then(|l| l.1)
        };
        let sends_to = |a: SocketAddr| {
            learned
                .iter()
                .find(|l| l.0 == a && l.2.is_some())
                .and_then(|l| l.2)
        };
        // The subscriber's voice travels to the remote party's address and
        // comes from the subscriber's own; the remote voice the other way.
        // What vouches for each sender: its SDP address and signalling
        // address, and where the other party was seen sending to.
        let addr = |e: &Option<crate::calls::tracker::Endpoint>| e.as_ref().map(|e| e.addr);
        let shard = call.shard;
        let keypad_pt = call.pause.watched_pt();
        let check = self.check.set_legs(key, legs);
        let route = |leg: Leg, evidence: Evidence| {
            let mut r = Route::new(key, leg, shard, evidence);
            r.check = check;
            if leg == Leg::Subscriber {
                r.keypad_pt = keypad_pt;
            }
            r
        };
        if let Some(r) = &legs.remote {
            self.by_dst.insert(
                r.addr,
                route(
                    Leg::Subscriber,
                    Evidence {
                        sdp: addr(&legs.subscriber),
                        sip_ip: legs.subscriber_sip,
                        target: target(r.addr),
                    },
                ),
            );
            let mut src = route(Leg::Remote, Evidence::default());
            src.sends_to = sends_to(r.addr);
            self.by_src.insert(r.addr, src);
            call.dst_routes.push(r.addr);
            call.src_routes.push(r.addr);
        }
        if let Some(s) = &legs.subscriber {
            self.by_dst.insert(
                s.addr,
                route(
                    Leg::Remote,
                    Evidence {
                        sdp: addr(&legs.remote),
                        sip_ip: legs.remote_sip,
                        target: target(s.addr),
                    },
                ),
            );
            let mut src = route(Leg::Subscriber, Evidence::default());
            src.sends_to = sends_to(s.addr);
            self.by_src.insert(s.addr, src);
            call.dst_routes.push(s.addr);
            call.src_routes.push(s.addr);
        }
    }
}

/// Takes down a call's routes (before new ones are installed) and returns
/// what the routes being replaced learned: their last packet, the
/// foreign packets still to report, and where each party was seen
/// sending (symmetric RTP).
fn take_routes(
    key: CallKey,
    call: &mut ActiveCall,
    by_dst: &mut HashMap<SocketAddr, Route>,
    by_src: &mut HashMap<SocketAddr, Route>,
) -> Vec<(SocketAddr, Option<SocketAddr>, Option<SocketAddr>)> {
    let mut learned: Vec<(SocketAddr, Option<SocketAddr>, Option<SocketAddr>)> = Vec::new();
    for a in call.dst_routes.drain(..) {
        if let Some(mut r) = by_dst.remove(&a) {
            call.last_rtp = call.last_rtp.max(r.last);
            if r.key == key {
                call.foreign[r.leg as usize] += r.take_foreign();
                learned.push((a, r.evidence.target, None));
            }
        }
    }
    for a in call.src_routes.drain(..) {
        if let Some(r) = by_src.remove(&a) {
            call.last_rtp = call.last_rtp.max(r.last);
            if r.key == key {
                learned.push((a, None, r.sends_to));
            }
        }
    }
    learned
}

/// The fields the per-payload path needs while the decoder is borrowed.
pub(super) struct RouteCtx<'e> {
    pub(super) keypad: &'e mut Vec<KeypadCopy>,
    pub(super) sip_ports: &'e [u16],
    pub(super) by_dst: &'e mut HashMap<SocketAddr, Route>,
    pub(super) by_src: &'e mut HashMap<SocketAddr, Route>,
    pub(super) calls: &'e HashMap<CallKey, ActiveCall>,
    pub(super) shards: &'e mut ShardPool<MediaCtl>,
    pub(super) tracker: &'e mut Tracker,
    pub(super) stats: &'e mut EngineStats,
    pub(super) check: &'e mut MediaCheck,
}

impl RouteCtx<'_> {
    /// Hands a recorded call's media to its shard; false when no call
    /// claims the payload.
    pub(super) fn route_rtp(&mut self, p: &Payload<'_>) -> bool {
        let r = if let Some(r) = self.by_dst.get_mut(&p.dst) {
            if !r.admit(p.src, p.ts) {
                self.stats.rtp_foreign += 1;
                return true;
            }
            r
        } else if let Some(r) = self.by_src.get_mut(&p.src) {
            if r.sends_to != Some(p.dst) {
                // Where this party sends is where the other party's packets
                // come from when it is behind NAT (symmetric RTP): evidence
                // for the route of packets sent to this party.
                r.sends_to = Some(p.dst);
                if let Some(d) = self.by_dst.get_mut(&p.src) {
                    d.evidence.target = Some(p.dst);
                }
            }
            r
        } else {
            return false;
        };
        r.note(p.data, p.ts);
        self.stats.rtp_routed += 1;
        r.last = p.ts;
        // Keep the call alive against the RTP timeout, cheaply: at most
        // once a second per route.
        if p.ts.since(r.touched) > 1_000_000 {
            r.touched = p.ts;
            if let Some(call) = self.calls.get(&r.key) {
                self.tracker.touch(&call.call_id, p.ts);
            }
        }
        if r.check {
            self.check.on_packet(r.key, r.leg, p.data);
        }
        self.shards.senders[r.shard].send_rtp(r.key, r.leg, p.ts, p.data);
        if let Some(pt) = r.keypad_pt
            && p.data.get(1).is_some_and(|b| b & 0x7f == pt)
        {
            self.keypad.push((r.key, p.ts, p.data.to_vec()));
        }
        true
    }
}

/// Stream reassembly only hands out SIP over TCP, and on a SIP port
/// anything is taken as SIP (and counted when it does not parse);
/// elsewhere only what starts like a SIP message is.
pub(super) fn on_sip_port(ports: &[u16], p: &Payload<'_>) -> bool {
    p.transport == Transport::Tcp || ports.contains(&p.dst.port()) || ports.contains(&p.src.port())
}
