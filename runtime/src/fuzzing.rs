//! Fuzz targets: one function per decoder that takes bytes from outside the node, run
//! by the cargo-fuzz crate in `fuzz/` (libFuzzer, one binary per target) and, over the
//! seed corpus and bounded mutations of it, by `tests/all/fuzz_smoke.rs` in every test
//! run. See `docs/security.md`, "Fuzzing".
//!
//! Every target takes any bytes and must never panic on them. Where the decoded value
//! allows it, a target also checks an invariant of the decoder (a message re-encodes to
//! bytes that decode to the same message, a parsed frame's payload lies within the
//! frame, a configuration that parses re-parses the same) and panics when it does not
//! hold: a panic here is a finding, never a way to report bad input.
//!
//! Not a stable API.

use std::io::Cursor;

use estate_guest::codec::{self, ItemsWriter, Value};

use crate::control::auth::{Credential, Principal, parse_accepted};
use crate::nf::input::pcap::{self, FlowDirections, PcapSource};
use crate::tenancy::{self, Quotas, Tenants};
use crate::wire;

mod sealed;
mod seeds;

pub use sealed::peer_frame_sealed;

pub use seeds::seeds;

/// A fuzz target: takes any bytes, panics only when an invariant does not hold.
pub type Target = fn(&[u8]);

/// Every target by name; each has a binary `fuzz/fuzz_targets/NAME.rs` and a seed
/// corpus `fuzz/corpus/NAME/`.
pub const TARGETS: &[(&str, Target)] = &[
    ("peer_frame", peer_frame),
    ("peer_frame_sealed", peer_frame_sealed),
    ("control_request", control_request),
    ("control_reply", control_reply),
    ("ethernet", ethernet),
    ("pcap_file", pcap_file),
    ("guest_value", guest_value),
    ("guest_items", guest_items),
    ("nf_config", nf_config),
    ("tenants_file", tenants_file),
    ("credentials", credentials),
];

/// Re-encodes a decoded message and checks that the encoding is stable: it decodes
/// again, and encodes to the same bytes. (Comparing encodings, not values, keeps a NaN
/// float from failing the check; the input itself need not be canonical.)
fn stable<T, E: std::fmt::Display>(what: &str, msg: &T, encode: fn(&T) -> Vec<u8>, decode: fn(&[u8]) -> Result<T, E>) {
    let first = encode(msg);
    let again = decode(&first).unwrap_or_else(|e| panic!("{what}: a re-encoded message does not decode: {e}"));
    assert!(encode(&again) == first, "{what}: the encoding of a decoded message is not stable");
}

/// A peer frame (`ES`), as a node's listen socket receives it from anyone.
pub fn peer_frame(data: &[u8]) {
    if let Ok(env) = wire::decode(data) {
        stable("peer frame", &env, wire::encode, wire::decode);
    }
}

/// A control request (`EC`), as a node's control socket receives it from anyone, and
/// the principal its credential names.
pub fn control_request(data: &[u8]) {
    if let Ok(call) = wire::decode_request(data) {
        stable("control request", &call, wire::encode_request, wire::decode_request);
        if let Some(credential) = &call.credential
            && let Ok(principal) = credential.principal.parse::<Principal>()
        {
            assert_eq!(principal.to_string(), credential.principal, "a principal's name is its text");
        }
        if let Some(tenant) = &call.tenant {
            let _ = tenancy::valid_name(tenant);
        }
    }
}

/// A control reply (`EC`), as the control client receives it from a node.
pub fn control_reply(data: &[u8]) {
    if let Ok(reply) = wire::decode_reply(data) {
        stable("control reply", &reply, wire::encode_reply, wire::decode_reply);
    }
}

/// An Ethernet frame, as a steered input receives it from the switch (or a pcap file
/// holds it). A parsed frame's payload lies within the frame, and the frame the switch
/// would build from the packet parses to the same packet.
pub fn ethernet(data: &[u8]) {
    let Some(parsed) = pcap::parse(data) else {
        return;
    };
    let frame = data.as_ptr_range();
    let payload = parsed.payload.as_ptr_range();
    assert!(frame.start <= payload.start && payload.end <= frame.end, "the payload lies within the frame");
    assert!(matches!(parsed.proto, 6 | 17), "only TCP and UDP are parsed");
    // Ethernet, the smallest IPv4 header, the smallest TCP (20) or UDP (8) header.
    let headers = 14 + 20 + if parsed.proto == 6 { 20 } else { 8 };
    let offset = payload.start as usize - frame.start as usize;
    assert!(offset >= headers, "the payload starts after the headers, at {offset} (at least {headers})");
    assert!(parsed.mark <= 0x0fff, "a mark is a VLAN id");
    let packet = FlowDirections::default().packet(&parsed);
    let rebuilt = pcap::frame(&packet);
    let again = pcap::parse(&rebuilt).unwrap_or_else(|| panic!("the frame built from a parsed packet does not parse"));
    assert_eq!(
        (again.proto, again.src, again.dst, again.mark, again.payload),
        (parsed.proto, parsed.src, parsed.dst, parsed.mark, parsed.payload),
        "the frame built from a parsed packet parses to the same packet"
    );
}

/// A whole pcap file (`--input pcap:FILE`, `estate traffic … --pcap FILE`), replayed to
/// its end. Every packet comes from a record of at least 16 header bytes.
pub fn pcap_file(data: &[u8]) {
    let Ok(mut source) = PcapSource::from_reader(Cursor::new(data), "fuzz input") else {
        return;
    };
    let mut packets = 0u64;
    for packet in source.by_ref() {
        packets += 1;
        assert!(packet.payload.len() <= data.len(), "a payload is no larger than the file");
    }
    let records = packets + source.skipped;
    assert!(records <= (data.len() as u64).saturating_sub(24) / 16, "{records} records in {} bytes", data.len());
}

/// One guest-codec value, as the host reads it out of a guest's memory. The codec is
/// canonical: a value that decodes encodes to exactly its input.
pub fn guest_value(data: &[u8]) {
    if let Ok(value) = Value::decode_exact(data) {
        let mut out = Vec::with_capacity(data.len());
        value.encode(&mut out);
        assert!(out == data, "a decoded value re-encodes to its input");
    }
}

/// A guest-codec item list, as the host reads a reducer's or an NF's output. The
/// encoding is canonical, and `ItemsWriter` makes the same bytes as `encode_items`.
pub fn guest_items(data: &[u8]) {
    if let Ok(items) = codec::decode_items(data) {
        let mut out = Vec::with_capacity(data.len());
        codec::encode_items(&items, &mut out);
        assert!(out == data, "a decoded item list re-encodes to its input");
        let mut writer = ItemsWriter::default();
        for i in &items {
            writer.push(&i.key, (&i.value).into(), &i.origin, &i.writer, i.version);
        }
        assert!(writer.finish() == data, "ItemsWriter makes the bytes encode_items makes");
    }
}

/// An NF configuration (`key = value` lines, `estate_guest::config`), when the input is
/// UTF-8 (the control request carries a `String`). Its settings, written again one per
/// line, parse to the same settings.
pub fn nf_config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let settings: Vec<_> = estate_guest::config::settings("nf", text, "expected `key = value`").collect();
    let mut written = String::new();
    let mut parsed = Vec::new();
    for setting in &settings {
        match setting {
            Ok(s) => {
                assert!(!s.key.contains('=') && s.key.trim() == s.key && s.value.trim() == s.value, "{s:?}");
                written.push_str(&format!("{} = {}\n", s.key, s.value));
                parsed.push((s.key, s.value));
            }
            Err(e) => assert!(e.starts_with("nf: line "), "an error names the NF and the line: {e}"),
        }
    }
    let again: Vec<_> = estate_guest::config::settings("nf", &written, "")
        .map(|s| s.map(|s| (s.key, s.value)))
        .collect::<Result<_, _>>()
        .unwrap_or_else(|e| panic!("written settings do not parse: {e}"));
    assert_eq!(again, parsed, "written settings parse to the same settings");
}

/// A tenants file (`estate node --tenants FILE`), when the input is UTF-8. Its
/// tenants have valid names, and the file written again parses to the same tenants.
pub fn tenants_file(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(tenants) = Tenants::parse(text, "fuzz input") else {
        return;
    };
    let mut written = String::from("[tenants]\n");
    for name in tenants.names() {
        assert!(tenancy::valid_name(name), "tenant name {name:?}");
        let Some(quotas) = tenants.quotas(name) else {
            panic!("a listed tenant {name:?} has no quotas");
        };
        written.push_str(&format!("[tenants.\"{name}\"]\n{}", quota_lines(quotas)));
    }
    let again = Tenants::parse(&written, "written").unwrap_or_else(|e| panic!("a written tenants file: {e}"));
    assert_eq!(again, tenants, "a written tenants file parses to the same tenants");
}

fn quota_lines(q: &Quotas) -> String {
    let Quotas {
        keys,
        bytes,
        reducers,
        modules,
        module_bytes,
        reads,
        wasm_jobs,
        fuel,
        wall_ms,
        memory_bytes,
        output_bytes,
    } = q;
    let fields = [
        ("keys", keys),
        ("bytes", bytes),
        ("reducers", reducers),
        ("modules", modules),
        ("module_bytes", module_bytes),
        ("reads", reads),
        ("wasm_jobs", wasm_jobs),
        ("fuel", fuel),
        ("wall_ms", wall_ms),
        ("memory_bytes", memory_bytes),
        ("output_bytes", output_bytes),
    ];
    fields.iter().filter_map(|(name, value)| value.map(|v| format!("{name} = {v}\n"))).collect()
}

/// A client credential (`PRINCIPAL SECRET`, from a file or `$ESTATE_CREDENTIAL`) and a
/// node's credentials file (`PRINCIPAL sha256:HEX` lines), when the input is UTF-8.
/// What parses, written again, parses the same; a credential's accept line accepts it.
pub fn credentials(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(credential) = Credential::parse(text, "fuzz input") {
        let again = Credential::parse(&format!("{} {}\n", credential.principal, credential.secret), "written")
            .unwrap_or_else(|e| panic!("a written credential: {e}"));
        assert!(again == credential, "a written credential parses to the same credential");
        let line = credential.accept_line();
        let accepted = parse_accepted(&line, "accept line").unwrap_or_else(|e| panic!("an accept line: {e}"));
        assert_eq!(accepted.len(), 1, "an accept line names one principal");
    }
    if let Ok(accepted) = parse_accepted(text, "fuzz input") {
        let mut written = String::new();
        for (principal, digests) in &accepted {
            assert!(!digests.is_empty(), "a listed principal has a digest");
            for digest in digests {
                written.push_str(&format!("{principal} sha256:{}\n", hex::encode(digest)));
            }
        }
        let again = parse_accepted(&written, "written").unwrap_or_else(|e| panic!("a written credentials file: {e}"));
        assert!(again == accepted, "a written credentials file parses to the same credentials");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_target_takes_its_seeds_and_nothing() {
        for (name, target) in TARGETS {
            target(&[]);
            let seeds = seeds(name);
            assert!(!seeds.is_empty(), "{name} has seeds");
            for seed in seeds {
                target(&seed);
            }
        }
    }
}
