//! The flow table: which node each flow goes to, and the path each flow took.

use std::collections::HashMap;

use serde::Serialize;

use super::*;

/// Where a packet goes: its flow's node and mark.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Route {
    /// The node (an index into the switch's nodes).
    pub node: usize,
    /// The flow's mark ([`mark_of_move`] of its number of moves).
    pub mark: u16,
}

/// A stretch of a flow's life on one node: from one move of the flow to the next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Stint {
    pub(crate) node: usize,
    pub(crate) mark: u16,
    pub(crate) packets: u64,
    pub(crate) undeliverable: u64,
}

/// The table of the node each flow goes to, and the path each flow took.
///
/// A flow seen for the first time goes to one of the start nodes, chosen by a stable hash
/// of its key. Moves change the node of flows already seen; a drain also takes its node
/// out of the start nodes (its successor takes its place if none is left).
#[derive(Clone, Debug)]
pub struct Assignment {
    pub(crate) nodes: Vec<String>,
    /// The nodes new flows are spread over.
    pub(crate) start: Vec<usize>,
    /// Each flow's stints, the current one last.
    pub(crate) flows: HashMap<String, Vec<Stint>>,
}

impl Assignment {
    /// A table for `nodes` (names, unique) whose new flows are spread over `start` (the
    /// first node if empty).
    pub fn new(nodes: Vec<String>, start: &[String]) -> Result<Assignment, SwitchError> {
        if nodes.is_empty() {
            return Err(SwitchError::Nodes("the switch needs at least one node".into()));
        }
        for (i, name) in nodes.iter().enumerate() {
            if !valid_name(name) {
                return Err(SwitchError::Nodes(format!("{name:?} is not a node name")));
            }
            if nodes[..i].contains(name) {
                return Err(SwitchError::Nodes(format!("node {name} is named twice")));
            }
        }
        let mut spread = Vec::new();
        for name in start {
            let i = nodes.iter().position(|n| n == name).ok_or_else(|| {
                SwitchError::Nodes(format!("start node {name:?} is not a node (nodes: {})", nodes.join(", ")))
            })?;
            if !spread.contains(&i) {
                spread.push(i);
            }
        }
        if spread.is_empty() {
            spread.push(0);
        }
        Ok(Assignment { nodes, start: spread, flows: HashMap::new() })
    }

    /// The nodes' names; a node's index is its position here.
    pub fn nodes(&self) -> &[String] {
        &self.nodes
    }

    /// The index of the node `name`.
    pub fn index(&self, name: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n == name)
    }

    /// The route of the next packet of `flow` (assigning the flow if it is new), counted
    /// as sent on it.
    pub fn route(&mut self, flow: &str) -> Route {
        if !self.flows.contains_key(flow) {
            let node = self.start[(stable_hash(0, flow) % self.start.len() as u64) as usize];
            self.flows.insert(flow.to_string(), vec![Stint { node, mark: 0, packets: 0, undeliverable: 0 }]);
        }
        let stint = self.flows.get_mut(flow).and_then(|s| s.last_mut()).expect("a flow has a stint");
        stint.packets += 1;
        Route { node: stint.node, mark: stint.mark }
    }

    /// Counts the last packet routed for `flow` as undeliverable.
    pub fn undeliverable(&mut self, flow: &str) {
        if let Some(stint) = self.flows.get_mut(flow).and_then(|s| s.last_mut()) {
            stint.undeliverable += 1;
        }
    }

    /// The current route of `flow`, if it was seen.
    pub fn current(&self, flow: &str) -> Option<Route> {
        self.flows.get(flow).and_then(|s| s.last()).map(|s| Route { node: s.node, mark: s.mark })
    }

    /// The number of flows now assigned to `node`.
    pub fn flows_at(&self, node: usize) -> usize {
        self.flows.values().filter(|s| s.last().is_some_and(|s| s.node == node)).count()
    }

    /// Moves `fraction` of `from`'s flows to `to`: round(fraction × n) of its n flows, at
    /// least one, chosen by a stable hash of the flow key salted with `salt` (so two moves
    /// from the same node pick independently). Returns how many moved.
    pub fn move_share(&mut self, from: usize, to: usize, fraction: f64, salt: u64) -> usize {
        let mut candidates: Vec<(u64, &String)> = self
            .flows
            .iter()
            .filter(|(_, s)| s.last().is_some_and(|s| s.node == from))
            .map(|(flow, _)| (stable_hash(salt, flow), flow))
            .collect();
        if candidates.is_empty() || from == to {
            return 0;
        }
        candidates.sort();
        let n = ((fraction.clamp(0.0, 1.0) * candidates.len() as f64).round() as usize).clamp(1, candidates.len());
        let chosen: Vec<String> = candidates[..n].iter().map(|(_, flow)| (*flow).clone()).collect();
        for flow in &chosen {
            self.move_flow(flow, to);
        }
        n
    }

    /// Moves every flow of `from` to `to` and stops sending new flows to `from`. Returns
    /// how many moved.
    pub fn drain(&mut self, from: usize, to: usize) -> usize {
        let chosen: Vec<String> = self
            .flows
            .iter()
            .filter(|(_, s)| s.last().is_some_and(|s| s.node == from))
            .map(|(flow, _)| flow.clone())
            .collect();
        if from != to {
            for flow in &chosen {
                self.move_flow(flow, to);
            }
        }
        self.start.retain(|n| *n != from);
        if self.start.is_empty() {
            self.start.push(to);
        }
        chosen.len()
    }

    pub(crate) fn move_flow(&mut self, flow: &str, to: usize) {
        let stints = self.flows.get_mut(flow).expect("only known flows move");
        let mark = mark_of_move(stints.len() as u32);
        stints.push(Stint { node: to, mark, packets: 0, undeliverable: 0 });
    }

    /// Every flow seen: its packets, its node now and the path it took, by flow key.
    pub fn summary(&self) -> Vec<FlowSummary> {
        let mut flows: Vec<FlowSummary> = self
            .flows
            .iter()
            .map(|(flow, stints)| FlowSummary {
                flow: flow.clone(),
                packets: stints.iter().map(|s| s.packets).sum(),
                node: self.nodes[stints.last().expect("a flow has a stint").node].clone(),
                moves: stints.len() as u32 - 1,
                path: stints
                    .iter()
                    .map(|s| StintSummary {
                        node: self.nodes[s.node].clone(),
                        mark: s.mark,
                        packets: s.packets,
                        undeliverable: s.undeliverable,
                    })
                    .collect(),
            })
            .collect();
        flows.sort_by(|a, b| a.flow.cmp(&b.flow));
        flows
    }
}

/// One flow at the end of a switch run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FlowSummary {
    /// The canonical flow key (as in the NF's `flow:<key>:…` state keys).
    pub flow: String,
    /// Packets of the flow in the stream (delivered or not).
    pub packets: u64,
    /// The node the flow was assigned to at the end.
    pub node: String,
    /// How often the flow moved.
    pub moves: u32,
    /// Where the flow went: one entry per node it was assigned to, in order.
    pub path: Vec<StintSummary>,
}

/// A stretch of a flow's life on one node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct StintSummary {
    /// The node.
    pub node: String,
    /// The mark the flow's packets carried there (0: never moved).
    pub mark: u16,
    /// Packets of the flow sent there.
    pub packets: u64,
    /// Of those, packets that could not be delivered.
    pub undeliverable: u64,
}
