//! The seed inputs of every fuzz target: small valid inputs, encoded by the project's
//! own encoders from real messages, so the committed corpus (`fuzz/corpus/NAME/`)
//! follows the formats when they change. `tests/all/fuzz_smoke.rs` writes them out
//! (`write_corpus`, an ignored test).

use std::time::Duration;

use estate_guest::codec::{self, Item, Value};
use estate_guest::nf::Direction;
use pcap_file::pcap::{PcapPacket, PcapWriter};

use crate::control::auth::{Credential, Principal};
use crate::global::{Answer, Consistency};
use crate::nf::input::pcap;
use crate::nf::input::synth::OwnedPacket;
use crate::peering::proto::membership::MemberMsg;
use crate::reduce::registry::ReducerInfo;
use crate::reduce::{Builtin, Partial, Reduced};
use crate::store::Moving;
use crate::wire::{
    Body, Budget, ControlCall, ControlReply, ControlRequest, Envelope, GlobalAnswer, HandoffReport, LimitOverrides,
    MemberView, RemoteReducer, SecurityEntry,
};
use crate::wire::{encode, encode_reply, encode_request};

/// The seed inputs of target `name` (none for a name that is not a target).
pub fn seeds(name: &str) -> Vec<Vec<u8>> {
    match name {
        "peer_frame" => peer_frames(),
        "peer_frame_sealed" => super::sealed::frames(),
        "control_request" => control_requests(),
        "control_reply" => control_replies(),
        "ethernet" => frames().iter().map(pcap::frame).collect(),
        "pcap_file" => vec![pcap_bytes(&[]), pcap_bytes(&frames()), pcap_bytes(&frames()[..1])],
        "guest_value" => values()
            .iter()
            .map(|v| {
                let mut out = Vec::new();
                v.encode(&mut out);
                out
            })
            .collect(),
        "guest_items" => [vec![], items(), vec![Item::of(Value::Int(1))]]
            .iter()
            .map(|list| {
                let mut out = Vec::new();
                codec::encode_items(list, &mut out);
                out
            })
            .collect(),
        "nf_config" => text(&[
            "# ids\npattern = attack\nthreshold = 3\nprefilter = on\n",
            "inside = 10.0.0.0/8\ninside = 192.168.1.0/24\nidle_timeout_ms = 30000\n",
            "ports = 1024-65535\nblock = 64\n",
            "rate = 100\r\nburst = 20\r\n",
            "\n  # nothing but a comment\n\nkey=value=more\n",
        ]),
        "tenants_file" => text(&[
            "[tenants.default]\n",
            "[tenants.a]\nkeys = 10\nfuel = 5\n[tenants.b]\n",
            concat!(
                "[tenants.acme]\nkeys = 100000\nbytes = 67108864\nreducers = 8\nmodules = 16\n",
                "module_bytes = 8388608\nreads = 64\nwasm_jobs = 2\nfuel = 100000000\nwall_ms = 200\n",
                "memory_bytes = 67108864\noutput_bytes = 1048576\n\n[tenants.globex]  # no quotas\n",
            ),
            "tenants = { \"x.y-z_1\" = { keys = 1 } }\n",
        ]),
        "credentials" => credentials(),
        _ => Vec::new(),
    }
}

fn text(texts: &[&str]) -> Vec<Vec<u8>> {
    texts.iter().map(|t| t.as_bytes().to_vec()).collect()
}

fn values() -> Vec<Value> {
    vec![
        Value::Int(-5),
        Value::Float(1.5),
        Value::Text("hé".into()),
        Value::Bytes(vec![0, 255]),
        Value::Text("".into()),
    ]
}

fn items() -> Vec<Item> {
    let item = |key: &str, value, writer: &str, version| Item {
        key: key.into(),
        value,
        origin: "n1".into(),
        writer: writer.into(),
        version,
    };
    vec![
        item("flow:6:10.0.0.1:5-10.0.0.2:80", Value::Int(3), "n1", 7),
        item("b", Value::Float(-0.25), "n2", 8),
        item("c", Value::Text("x".into()), "n1", 9),
        item("", Value::Bytes(vec![1]), "", 0),
    ]
}

fn moving() -> Vec<Moving> {
    items().into_iter().enumerate().map(|(i, item)| Moving { item, counter: i % 2 == 0 }).collect()
}

fn peer_frames() -> Vec<Vec<u8>> {
    let bodies = vec![
        Body::Member(MemberMsg::Hello { endpoint: "tcp://127.0.0.1:7000".into() }),
        Body::Member(MemberMsg::HelloAck {
            endpoint: "tcp://127.0.0.1:7000".into(),
            members: vec![("b".into(), "tcp://127.0.0.1:7001".into())],
        }),
        Body::Member(MemberMsg::Ready),
        Body::Member(MemberMsg::Heartbeat),
        Body::Member(MemberMsg::Leave),
        Body::GlobalRequest {
            id: 1 << 100,
            tenant: "default".into(),
            pattern: "flow:.*".into(),
            reducer: None,
            take: false,
        },
        Body::GlobalRequest {
            id: 2,
            tenant: "a".into(),
            pattern: "c".into(),
            reducer: Some(RemoteReducer::Builtin(Builtin::Sum)),
            take: false,
        },
        Body::GlobalRequest {
            id: 3,
            tenant: "a".into(),
            pattern: "k.*".into(),
            reducer: Some(RemoteReducer::Wasm {
                hash: [7; 32],
                budget: Budget { fuel: 1, wall_ms: 2, memory_bytes: 3, output_bytes: 4 },
            }),
            take: true,
        },
        Body::GlobalReply { id: 1, result: Ok(Answer::Items(items())) },
        Body::GlobalReply { id: 2, result: Ok(Answer::Taken(moving())) },
        Body::GlobalReply { id: 3, result: Ok(Answer::Builtin(Partial::Avg { sum: 2.5, count: 2 })) },
        Body::GlobalReply { id: 4, result: Ok(Answer::Builtin(Partial::Count(9))) },
        Body::GlobalReply { id: 5, result: Ok(Answer::Wasm(Some(Item::of(Value::Int(1))))) },
        Body::GlobalReply { id: 6, result: Err("unknown tenant".into()) },
        Body::ModuleRequest { tenant: "a".into(), hash: [1; 32] },
        Body::ModuleData { tenant: "a".into(), hash: [1; 32], bytes: b"\0asm\x01\0\0\0".to_vec() },
        Body::Handoff { id: 8, tenant: "default".into(), items: moving() },
        Body::HandoffAck { id: 8, stored: 3, refused: vec![("c".into(), "quota keys of 6 reached".into())] },
    ];
    bodies.into_iter().map(|body| encode(&Envelope { from: "node-1".into(), clock: 1 << 40, body })).collect()
}

fn control_requests() -> Vec<Vec<u8>> {
    let module = b"\0asm\x01\0\0\0".to_vec();
    let requests = vec![
        ControlRequest::Set { key: "k".into(), value: Value::Int(1) },
        ControlRequest::Set { key: "f".into(), value: Value::Float(0.5) },
        ControlRequest::Set { key: "t".into(), value: Value::Text("v".into()) },
        ControlRequest::Get { key: "k".into() },
        ControlRequest::Del { key: "k".into() },
        ControlRequest::Global {
            pattern: "flow:.*".into(),
            reducer: "sum".into(),
            timeout_ms: 500,
            consistency: Consistency::All,
            remote: true,
        },
        ControlRequest::Members,
        ControlRequest::ReducerLoad {
            name: "top".into(),
            bytes: module.clone(),
            limits: LimitOverrides { fuel: Some(1000), wall_ms: None, memory_bytes: Some(1 << 20), output_bytes: None },
        },
        ControlRequest::ReducerUnload { name: "top".into() },
        ControlRequest::ReducerList,
        ControlRequest::NfLoad { bytes: module.clone(), config: "threshold = 3\n".into() },
        ControlRequest::NfReplace { bytes: module, config: String::new() },
        ControlRequest::NfUnload,
        ControlRequest::NfStatus,
        ControlRequest::Stats,
        ControlRequest::SecurityLog,
        ControlRequest::Leave { timeout_ms: 5000 },
    ];
    let tenant = Credential { principal: Principal::Tenant("acme".into()).to_string(), secret: "0123abcd".into() };
    requests
        .into_iter()
        .enumerate()
        .map(|(i, request)| {
            let (credential, tenant) = match i % 3 {
                0 => (None, None),
                1 => (Some(tenant.clone()), Some("acme".to_string())),
                _ => (Some(Credential { principal: "admin".into(), secret: "s".into() }), Some("b".into())),
            };
            encode_request(&ControlCall { credential, tenant, request })
        })
        .collect()
}

fn control_replies() -> Vec<Vec<u8>> {
    let info =
        ReducerInfo { name: "top".into(), kind: "wasm".into(), hash: "ab".repeat(32), size: 8, combinable: true };
    let replies = vec![
        ControlReply::Set(42),
        ControlReply::Value(Some((Value::Bytes(vec![1, 2]), 7))),
        ControlReply::Value(None),
        ControlReply::Deleted(true),
        ControlReply::Global(GlobalAnswer {
            reducer: "list".into(),
            remote: false,
            result: Reduced::Items(items()),
            answered: vec!["a".into(), "b".into()],
            missing: vec!["c".into()],
        }),
        ControlReply::Global(GlobalAnswer {
            reducer: "sum".into(),
            remote: true,
            result: Reduced::Value(Value::Int(12)),
            answered: vec!["a".into()],
            missing: vec![],
        }),
        ControlReply::Members(vec![MemberView {
            id: "a".into(),
            endpoint: "tcp://127.0.0.1:7000".into(),
            state: "self".into(),
        }]),
        ControlReply::Stats(vec![("frames_in".into(), 10), ("unknown_tenant".into(), 0)]),
        ControlReply::SecurityLog(vec![SecurityEntry {
            reason: "forbidden".into(),
            principal: "tenant:a".into(),
            object: "members".into(),
            count: 2,
            first_ms: 1,
            last_ms: 2,
        }]),
        ControlReply::Loaded(info.clone()),
        ControlReply::Unloaded(false),
        ControlReply::Reducers(vec![info]),
        ControlReply::Nf("running".into()),
        ControlReply::Left(HandoffReport { items: 3, members: vec![("b".into(), 3)], micros: 900 }),
        ControlReply::Error("quota keys of 6 reached".into()),
    ];
    replies.iter().map(encode_reply).collect()
}

fn frames() -> Vec<OwnedPacket> {
    let mut moved =
        OwnedPacket::new(17, ([10, 0, 0, 2], 53), ([10, 0, 0, 1], 4000), Direction::Reverse, b"dns".to_vec());
    moved.mark = 42;
    vec![
        OwnedPacket::new(6, ([10, 0, 0, 1], 4000), ([10, 0, 0, 2], 80), Direction::Forward, b"GET / HTTP/1.1".to_vec()),
        moved,
        OwnedPacket::new(17, ([192, 168, 1, 9], 1), ([8, 8, 8, 8], 2), Direction::Forward, Vec::new()),
    ]
}

/// A pcap file of `packets`, as `pcap::write` makes it, in memory.
fn pcap_bytes(packets: &[OwnedPacket]) -> Vec<u8> {
    let mut out = Vec::new();
    // Writing to a Vec fails only past u32 lengths, which these small frames are not.
    if let Ok(mut writer) = PcapWriter::new(&mut out) {
        for (i, p) in packets.iter().enumerate() {
            let data = pcap::frame(p);
            let packet = PcapPacket::new(Duration::from_micros(i as u64 * 10), data.len() as u32, &data);
            if writer.write_packet(&packet).is_err() {
                break;
            }
        }
    }
    out
}

fn credentials() -> Vec<Vec<u8>> {
    let a = Credential { principal: "tenant:acme".into(), secret: "4f9a0c6e".into() };
    let admin = Credential { principal: "admin".into(), secret: "s3cr3t".into() };
    vec![
        b"tenant:acme 4f9a0c6e\n".to_vec(),
        b"admin s3cr3t".to_vec(),
        format!(
            "# node credentials\n{}\n{}  # rolled\n{}\n",
            a.accept_line(),
            admin.accept_line(),
            admin.accept_line()
        )
        .into_bytes(),
    ]
}

/// A heartbeat from `from`, as a message to seal.
pub(super) fn heartbeat(from: &str) -> Envelope {
    Envelope { from: from.into(), clock: 1, body: Body::Member(MemberMsg::Heartbeat) }
}
