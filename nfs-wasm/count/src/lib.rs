//! `count`: forwards every packet and counts packets and bytes in the node's state
//! (`count:packets`, `count:bytes`). Drops empty packets, which are malformed.
#![no_std]
#![forbid(unsafe_code)]

use estate_guest::{Verdict, state};

fn on_packet(packet: &[u8]) -> Verdict {
    if packet.is_empty() {
        state::counter_add("count:dropped", 1);
        return Verdict::Drop;
    }
    state::counter_add("count:packets", 1);
    state::counter_add("count:bytes", packet.len() as i64);
    Verdict::Forward
}

estate_guest::nf!(on_packet);
