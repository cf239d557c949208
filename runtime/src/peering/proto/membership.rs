//! Cluster membership as a sans-IO state machine: messages and ticks in, actions out.
//!
//! It never touches a socket or a clock; the node's ZeroMQ driver feeds it received
//! [`MemberMsg`]s and the current time in milliseconds, and carries out the
//! [`Action`]s it emits. Tests drive it deterministically with made-up time.
//!
//! The protocol:
//!
//! - **Join**: a node sends `Hello` to each seed endpoint. A node that receives `Hello`
//!   records the sender as *joining* and answers `HelloAck` with the members it knows.
//!   The joiner marks the acknowledging node *alive*, answers `Ready`, and says `Hello`
//!   to every member it did not know yet. `Ready` (or a heartbeat, which is only sent to
//!   alive members) turns *joining* into *alive* on the other side. Only alive and
//!   suspect members are used for global reads: the handshake comes first, so no
//!   request goes to a peer that has not proven it can be reached both ways.
//! - **Failure detection**: every member sends `Heartbeat` to every live member each
//!   `heartbeat_ms`. A member not heard from (any message counts) for `suspect_ms` is
//!   *suspect*; for `remove_ms`, it is removed. A suspect that is heard from again is
//!   alive again.
//! - **Leave**: a leaving node sends `Leave` to every member, which removes it at once.
//! - **Rejoin**: seeds that are not members are greeted again every `rejoin_ms`, so a
//!   node that started before its seed, or was removed by mistake, finds its way back.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Membership messages between nodes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum MemberMsg {
    /// "I am here": opens the handshake. Carries the sender's listen endpoint.
    Hello {
        /// The sender's listen endpoint.
        endpoint: String,
    },
    /// Answers `Hello` with the members the sender knows (id, endpoint).
    HelloAck {
        /// The sender's listen endpoint.
        endpoint: String,
        /// Members the sender knows (joining ones too), not counting the sender and the
        /// receiver.
        members: Vec<(String, String)>,
    },
    /// Completes the handshake.
    Ready,
    /// "Still alive".
    Heartbeat,
    /// The sender leaves the cluster.
    Leave,
}

/// Timing of failure detection, in milliseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    /// Interval between heartbeats.
    pub heartbeat_ms: u64,
    /// Silence after which a member is suspect.
    pub suspect_ms: u64,
    /// Silence after which a member is removed.
    pub remove_ms: u64,
    /// Interval between greetings of seeds that are not members.
    pub rejoin_ms: u64,
}

impl Default for Timing {
    fn default() -> Self {
        Timing { heartbeat_ms: 200, suspect_ms: 1000, remove_ms: 3000, rejoin_ms: 1000 }
    }
}

/// Where a member stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemberState {
    /// Said `Hello`; the handshake is not complete. Not used for reads.
    Joining,
    /// Heard from recently.
    Alive,
    /// Silent for longer than `suspect_ms`; still asked, may be removed soon.
    Suspect,
}

impl MemberState {
    /// The state's name as the CLI shows it.
    pub fn name(self) -> &'static str {
        match self {
            MemberState::Joining => "joining",
            MemberState::Alive => "alive",
            MemberState::Suspect => "suspect",
        }
    }
}

/// One known peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    /// Listen endpoint.
    pub endpoint: String,
    /// Where it stands.
    pub state: MemberState,
    /// When it was last heard from.
    pub last_heard: u64,
}

/// Why a member went away.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DownReason {
    /// It said `Leave`.
    Left,
    /// It was silent for `remove_ms`.
    Failed,
}

/// What the driver must do.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Send `msg` to the node listening at `endpoint`.
    Send {
        /// Destination endpoint.
        endpoint: String,
        /// The message.
        msg: MemberMsg,
    },
    /// A member became usable (handshake complete).
    Up(String),
    /// A member became suspect.
    Suspect(String),
    /// A member was removed.
    Down(String, DownReason),
}

/// The membership state machine of one node.
#[derive(Debug)]
pub struct Membership {
    me: String,
    endpoint: String,
    seeds: Vec<String>,
    timing: Timing,
    members: BTreeMap<String, Member>,
    next_heartbeat: u64,
    next_rejoin: u64,
}

impl Membership {
    /// Membership of node `me` listening at `endpoint`, joining through `seeds`.
    pub fn new(me: &str, endpoint: &str, seeds: Vec<String>, timing: Timing) -> Membership {
        let seeds = seeds.into_iter().filter(|s| s != endpoint).collect();
        Membership {
            me: me.into(),
            endpoint: endpoint.into(),
            seeds,
            timing,
            members: BTreeMap::new(),
            next_heartbeat: 0,
            next_rejoin: 0,
        }
    }

    /// Every known member (joining ones included), by id.
    pub fn members(&self) -> &BTreeMap<String, Member> {
        &self.members
    }

    /// Ids of the members a global read asks: alive and suspect ones.
    pub fn live(&self) -> impl Iterator<Item = (&String, &Member)> {
        self.members.iter().filter(|(_, m)| m.state != MemberState::Joining)
    }

    /// Whether `id` is a live member.
    pub fn is_live(&self, id: &str) -> bool {
        self.members.get(id).is_some_and(|m| m.state != MemberState::Joining)
    }

    /// The endpoint of a known member.
    pub fn endpoint_of(&self, id: &str) -> Option<&str> {
        self.members.get(id).map(|m| m.endpoint.as_str())
    }

    /// When [`Membership::tick`] next has something to do.
    pub fn next_deadline(&self) -> u64 {
        self.next_heartbeat.min(self.next_rejoin)
    }

    fn hello(&self, endpoint: &str, out: &mut Vec<Action>) {
        out.push(Action::Send { endpoint: endpoint.into(), msg: MemberMsg::Hello { endpoint: self.endpoint.clone() } });
    }

    fn known_endpoint(&self, endpoint: &str) -> bool {
        endpoint == self.endpoint || self.members.values().any(|m| m.endpoint == endpoint)
    }

    /// Handles a message from node `from`.
    pub fn handle(&mut self, from: &str, msg: MemberMsg, now: u64, out: &mut Vec<Action>) {
        if from == self.me {
            return; // Our own greeting through a seed list that names us.
        }
        match msg {
            MemberMsg::Hello { endpoint } => {
                let others: Vec<(String, String)> = self
                    .members
                    .iter()
                    .filter(|(id, _)| id.as_str() != from)
                    .map(|(id, m)| (id.clone(), m.endpoint.clone()))
                    .collect();
                let member = self.members.entry(from.to_string()).or_insert(Member {
                    endpoint: endpoint.clone(),
                    state: MemberState::Joining,
                    last_heard: now,
                });
                // A node that restarted (new endpoint) starts over with the handshake.
                if member.endpoint != endpoint {
                    member.endpoint = endpoint.clone();
                    member.state = MemberState::Joining;
                }
                member.last_heard = now;
                out.push(Action::Send {
                    endpoint,
                    msg: MemberMsg::HelloAck { endpoint: self.endpoint.clone(), members: others },
                });
            }
            MemberMsg::HelloAck { endpoint, members } => {
                let was_live = self.is_live(from);
                self.members.insert(
                    from.to_string(),
                    Member { endpoint: endpoint.clone(), state: MemberState::Alive, last_heard: now },
                );
                out.push(Action::Send { endpoint, msg: MemberMsg::Ready });
                if !was_live {
                    out.push(Action::Up(from.to_string()));
                }
                for (id, ep) in members {
                    if id != self.me && !self.members.contains_key(&id) && !self.known_endpoint(&ep) {
                        self.hello(&ep, out);
                    }
                }
            }
            MemberMsg::Ready | MemberMsg::Heartbeat => {
                let Some(member) = self.members.get_mut(from) else {
                    return; // Not a member: ignored (the driver counts it).
                };
                member.last_heard = now;
                if member.state != MemberState::Alive {
                    let was_joining = member.state == MemberState::Joining;
                    member.state = MemberState::Alive;
                    if was_joining {
                        out.push(Action::Up(from.to_string()));
                    }
                }
            }
            MemberMsg::Leave => {
                if let Some(member) = self.members.remove(from)
                    && member.state != MemberState::Joining
                {
                    out.push(Action::Down(from.to_string(), DownReason::Left));
                }
            }
        }
    }

    /// Notes that `from` was heard from (any message counts as a sign of life).
    pub fn heard(&mut self, from: &str, now: u64) {
        if let Some(m) = self.members.get_mut(from)
            && m.state != MemberState::Joining
        {
            m.last_heard = now;
            m.state = MemberState::Alive;
        }
    }

    /// Advances time: heartbeats, failure detection, rejoining.
    pub fn tick(&mut self, now: u64, out: &mut Vec<Action>) {
        let mut removed = Vec::new();
        for (id, m) in &mut self.members {
            let silent = now.saturating_sub(m.last_heard);
            if silent >= self.timing.remove_ms {
                removed.push((id.clone(), m.state));
            } else if silent >= self.timing.suspect_ms && m.state == MemberState::Alive {
                m.state = MemberState::Suspect;
                out.push(Action::Suspect(id.clone()));
            }
        }
        for (id, state) in removed {
            self.members.remove(&id);
            if state != MemberState::Joining {
                out.push(Action::Down(id, DownReason::Failed));
            }
        }
        if now >= self.next_heartbeat {
            self.next_heartbeat = now + self.timing.heartbeat_ms;
            for (_, m) in self.live() {
                out.push(Action::Send { endpoint: m.endpoint.clone(), msg: MemberMsg::Heartbeat });
            }
        }
        if now >= self.next_rejoin {
            self.next_rejoin = now + self.timing.rejoin_ms;
            for seed in &self.seeds {
                if !self.live().any(|(_, m)| &m.endpoint == seed) {
                    self.hello(seed, out);
                }
            }
        }
    }

    /// Leaves the cluster: tells every member and forgets them.
    pub fn leave(&mut self, out: &mut Vec<Action>) {
        for (_, m) in std::mem::take(&mut self.members) {
            out.push(Action::Send { endpoint: m.endpoint, msg: MemberMsg::Leave });
        }
        self.seeds.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{HashMap, VecDeque};

    /// A deterministic network of membership machines with made-up time.
    struct Sim {
        nodes: BTreeMap<String, Membership>,
        by_endpoint: HashMap<String, String>,
        queue: VecDeque<(String, String, MemberMsg)>,
        down: Vec<String>,
        now: u64,
    }

    impl Sim {
        fn new() -> Sim {
            Sim { nodes: BTreeMap::new(), by_endpoint: HashMap::new(), queue: VecDeque::new(), down: vec![], now: 0 }
        }

        fn add(&mut self, id: &str, seeds: &[&str]) {
            let ep = format!("ep-{id}");
            let seeds = seeds.iter().map(|s| format!("ep-{s}")).collect();
            self.nodes.insert(id.into(), Membership::new(id, &ep, seeds, Timing::default()));
            self.by_endpoint.insert(ep, id.into());
            let mut out = vec![];
            self.nodes.get_mut(id).unwrap().tick(self.now, &mut out);
            self.apply(id, out);
        }

        fn apply(&mut self, from: &str, actions: Vec<Action>) {
            for a in actions {
                if let Action::Send { endpoint, msg } = a
                    && let Some(to) = self.by_endpoint.get(&endpoint)
                {
                    self.queue.push_back((from.into(), to.clone(), msg));
                }
            }
        }

        fn deliver_all(&mut self) {
            while let Some((from, to, msg)) = self.queue.pop_front() {
                if self.down.contains(&to) {
                    continue;
                }
                let mut out = vec![];
                if let Some(node) = self.nodes.get_mut(&to) {
                    node.handle(&from, msg, self.now, &mut out);
                }
                self.apply(&to, out);
            }
        }

        fn advance(&mut self, ms: u64) {
            let end = self.now + ms;
            while self.now < end {
                self.now += 10;
                let ids: Vec<String> = self.nodes.keys().filter(|id| !self.down.contains(id)).cloned().collect();
                for id in ids {
                    let mut out = vec![];
                    self.nodes.get_mut(&id).unwrap().tick(self.now, &mut out);
                    self.apply(&id, out);
                }
                self.deliver_all();
            }
        }

        fn live(&self, id: &str) -> Vec<String> {
            self.nodes[id].live().map(|(id, _)| id.clone()).collect()
        }
    }

    #[test]
    fn nodes_joining_through_one_seed_all_meet() {
        let mut sim = Sim::new();
        sim.add("a", &[]);
        for id in ["b", "c", "d", "e"] {
            sim.add(id, &["a"]);
        }
        sim.advance(100);
        for id in ["a", "b", "c", "d", "e"] {
            assert_eq!(sim.live(id).len(), 4, "{id} sees {:?}", sim.live(id));
        }
    }

    #[test]
    fn a_silent_member_is_suspected_then_removed() {
        let mut sim = Sim::new();
        sim.add("a", &[]);
        sim.add("b", &["a"]);
        sim.add("c", &["a"]);
        sim.advance(100);
        sim.down.push("c".into());
        sim.advance(1100);
        assert_eq!(sim.nodes["a"].members()["c"].state, MemberState::Suspect);
        assert!(sim.nodes["a"].is_live("c"), "a suspect is still asked");
        sim.advance(2000);
        assert_eq!(sim.live("a"), ["b"]);
        assert_eq!(sim.live("b"), ["a"]);
    }

    #[test]
    fn leave_removes_at_once() {
        let mut sim = Sim::new();
        sim.add("a", &[]);
        sim.add("b", &["a"]);
        sim.advance(50);
        let mut out = vec![];
        sim.nodes.get_mut("b").unwrap().leave(&mut out);
        sim.apply("b", out);
        sim.down.push("b".into());
        sim.deliver_all();
        assert!(sim.live("a").is_empty());
    }

    #[test]
    fn a_node_started_before_its_seed_joins_later() {
        let mut sim = Sim::new();
        sim.add("b", &["a"]);
        sim.advance(500);
        sim.add("a", &[]);
        sim.advance(1500);
        assert_eq!(sim.live("a"), ["b"]);
        assert_eq!(sim.live("b"), ["a"]);
    }

    #[test]
    fn handshake_comes_before_use() {
        let mut a = Membership::new("a", "ep-a", vec![], Timing::default());
        let mut out = vec![];
        a.handle("b", MemberMsg::Hello { endpoint: "ep-b".into() }, 0, &mut out);
        assert!(!a.is_live("b"), "a peer that only said hello is not used yet");
        assert!(matches!(&out[0], Action::Send { msg: MemberMsg::HelloAck { .. }, .. }));
        out.clear();
        a.handle("b", MemberMsg::Ready, 1, &mut out);
        assert!(a.is_live("b"));
        assert_eq!(out, [Action::Up("b".into())]);
    }

    #[test]
    fn strangers_heartbeats_are_ignored() {
        let mut a = Membership::new("a", "ep-a", vec![], Timing::default());
        let mut out = vec![];
        a.handle("x", MemberMsg::Heartbeat, 0, &mut out);
        a.handle("x", MemberMsg::Ready, 0, &mut out);
        assert!(out.is_empty() && a.members().is_empty());
    }
}
