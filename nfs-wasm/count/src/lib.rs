//! `count`: forwards every packet and counts packets and payload bytes in the node's
//! state, in total (`count:packets`, `count:bytes`) and per flow (`flow:<key>:packets`).
//! Drops packets whose payload is larger than the configured `max_payload` (default:
//! no limit), counting them in `count:dropped`. A refused add (a key that holds no
//! integer) only loses that count.
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;

use alloc::format;
use alloc::string::String;
use estate_guest::{HostState, Nf, Packet, State, Verdict};

struct Count {
    max_payload: Option<usize>,
}

impl Nf for Count {
    fn init(config: &str) -> Result<Self, String> {
        let mut max_payload = None;
        for line in config.lines().map(str::trim).filter(|l| !l.is_empty()) {
            match line.split_once('=').map(|(k, v)| (k.trim(), v.trim())) {
                Some(("max_payload", v)) => {
                    max_payload = Some(v.parse().map_err(|_| format!("count: bad max_payload {v:?}"))?);
                }
                _ => return Err(format!("count: unknown configuration line {line:?}")),
            }
        }
        Ok(Count { max_payload })
    }

    fn on_packet(&mut self, packet: &Packet<'_>) -> Verdict {
        let mut state = HostState;
        if self.max_payload.is_some_and(|max| packet.payload.len() > max) {
            let _ = state.counter_add("count:dropped", 1);
            return Verdict::Drop;
        }
        let _ = state.counter_add("count:packets", 1);
        let _ = state.counter_add("count:bytes", packet.payload.len() as i64);
        let _ = state.counter_add(&format!("flow:{}:packets", packet.flow), 1);
        Verdict::Forward
    }
}

estate_guest::nf!(Count);
