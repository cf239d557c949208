//! Moved flows whose state is on its way here: their packets wait, in arrival order,
//! while the NF goes on with every other flow.

use std::collections::{HashMap, VecDeque};
use std::sync::mpsc;
use std::time::Instant;

use crate::global::GlobalError;
use crate::nf::input::synth::OwnedPacket;

/// Most packets held for moved flows at once; past it the NF waits for the oldest
/// flow's state instead of holding more.
pub(crate) const MAX_HELD: usize = 65_536;

/// A moved flow's state being brought here: the number of keys, or why not.
#[derive(Debug)]
pub enum Adoption {
    /// Done already (fetched synchronously).
    Ready(Result<usize, String>),
    /// A take in flight through the node's I/O thread.
    Take(mpsc::Receiver<Result<usize, GlobalError>>),
}

impl Adoption {
    /// The outcome, if it is in.
    fn poll(&mut self) -> Option<Result<usize, String>> {
        match self {
            Adoption::Ready(result) => Some(std::mem::replace(result, Ok(0))),
            Adoption::Take(rx) => match rx.try_recv() {
                Ok(result) => Some(result.map_err(|e| e.to_string())),
                Err(mpsc::TryRecvError::Empty) => None,
                Err(mpsc::TryRecvError::Disconnected) => Some(Err(GlobalError::Shutdown.to_string())),
            },
        }
    }

    /// The outcome, waiting for it (the I/O thread ends every take at its deadline).
    fn wait(self) -> Result<usize, String> {
        match self {
            Adoption::Ready(result) => result,
            Adoption::Take(rx) => rx.recv().map_err(|_| GlobalError::Shutdown.to_string())?.map_err(|e| e.to_string()),
        }
    }
}

/// A packet waiting, with the time the NF thread took it.
pub(crate) type Held = (OwnedPacket, Instant);

/// A flow whose state came in (or failed to): its outcome and its packets, in order.
pub(crate) type Arrived = (String, Result<usize, String>, VecDeque<Held>);

/// The flows waiting for their state, oldest first.
#[derive(Debug, Default)]
pub(crate) struct Parking {
    flows: HashMap<String, (Adoption, VecDeque<Held>)>,
    order: VecDeque<String>,
    held: usize,
}

impl Parking {
    pub(crate) fn is_parked(&self, flow: &str) -> bool {
        self.flows.contains_key(flow)
    }

    /// Parks `packet`'s flow until `adoption` is in.
    pub(crate) fn park(&mut self, packet: OwnedPacket, started: Instant, adoption: Adoption) {
        let flow = packet.flow.clone();
        self.order.push_back(flow.clone());
        self.flows.insert(flow, (adoption, VecDeque::from([(packet, started)])));
        self.held += 1;
    }

    /// Holds a packet of a parked flow behind the ones before it.
    pub(crate) fn hold(&mut self, packet: OwnedPacket, started: Instant) {
        if let Some((_, queue)) = self.flows.get_mut(&packet.flow) {
            queue.push_back((packet, started));
            self.held += 1;
        }
    }

    /// Packets held, all flows together.
    pub(crate) fn held(&self) -> usize {
        self.held
    }

    /// The flows whose state is in, oldest first.
    pub(crate) fn arrived(&mut self) -> Vec<Arrived> {
        let mut done = Vec::new();
        self.order.retain(|flow| {
            let Some((adoption, _)) = self.flows.get_mut(flow) else { return false };
            let Some(result) = adoption.poll() else { return true };
            let (_, queue) = self.flows.remove(flow).expect("parked");
            self.held -= queue.len();
            done.push((flow.clone(), result, queue));
            false
        });
        done
    }

    /// The oldest parked flow, once its state is in; `None` if nothing is parked.
    pub(crate) fn wait_oldest(&mut self) -> Option<Arrived> {
        let flow = self.order.pop_front()?;
        let (adoption, queue) = self.flows.remove(&flow).expect("parked");
        self.held -= queue.len();
        Some((flow, adoption.wait(), queue))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use estate_guest::nf::Direction;

    fn packet(flow: &str, n: u8) -> OwnedPacket {
        let mut p = OwnedPacket::new(6, ([10, 0, 0, 1], 1), ([10, 0, 0, 2], 2), Direction::Forward, vec![n]);
        p.flow = flow.into();
        p
    }

    #[test]
    fn a_flow_waits_in_order_until_its_state_is_in_and_others_pass() {
        let mut parking = Parking::default();
        let (tx, rx) = mpsc::channel();
        let now = Instant::now();
        parking.park(packet("f", 1), now, Adoption::Take(rx));
        parking.hold(packet("f", 2), now);
        parking.park(packet("g", 1), now, Adoption::Ready(Ok(3)));
        assert!(parking.is_parked("f") && parking.is_parked("g"));
        assert_eq!(parking.held(), 3);
        // g's state is in, f's is not: only g comes out.
        let arrived = parking.arrived();
        assert_eq!(arrived.len(), 1);
        assert_eq!((arrived[0].0.as_str(), arrived[0].1.clone()), ("g", Ok(3)));
        assert!(parking.is_parked("f") && !parking.is_parked("g"));
        tx.send(Ok(2)).unwrap();
        let (flow, result, queue) = parking.arrived().pop().unwrap();
        assert_eq!((flow.as_str(), result), ("f", Ok(2)));
        let order: Vec<u8> = queue.iter().map(|(p, _)| p.payload[0]).collect();
        assert_eq!(order, [1, 2], "in arrival order");
        assert_eq!(parking.held(), 0);
        assert!(parking.wait_oldest().is_none());
    }

    #[test]
    fn a_take_whose_node_stopped_is_a_failure_not_a_hang() {
        let mut parking = Parking::default();
        let (tx, rx) = mpsc::channel::<Result<usize, GlobalError>>();
        parking.park(packet("f", 1), Instant::now(), Adoption::Take(rx));
        drop(tx);
        let (_, result, _) = parking.wait_oldest().unwrap();
        assert!(result.is_err());
    }
}
