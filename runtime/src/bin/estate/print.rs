//! Printing replies: text for people, `--json` for scripts.

use std::process::ExitCode;

use crate::cli::*;
use anyhow::bail;
use estate::control::{ControlReply, GlobalAnswer, MemberView};
use estate::reduce::Reduced;
use estate::text::human;
use estate_guest::{Item, Value};
use serde_json::json;

pub(crate) fn reply(command: &Command, reply: ControlReply) -> anyhow::Result<ExitCode> {
    let json = match command {
        Command::Get { json, .. }
        | Command::Global { json, .. }
        | Command::Members { json }
        | Command::Stats { json }
        | Command::SecurityLog { json }
        | Command::Leave { json, .. }
        | Command::Reducer { action: ReducerAction::List { json } } => *json,
        _ => false,
    };
    match reply {
        ControlReply::Error(e) => bail!("{e}"),
        ControlReply::Set(_) => println!("OK"),
        ControlReply::Deleted(existed) => {
            println!("{}", existed as u8);
        }
        ControlReply::Value(None) => {
            if json {
                println!("null");
            }
            eprintln!("not found");
            return Ok(ExitCode::from(1));
        }
        ControlReply::Value(Some((value, version))) => {
            if json {
                println!("{}", json!({ "value": value_json(&value), "version": version }));
            } else {
                println!("{}", human(&value));
            }
        }
        ControlReply::Global(answer) => global(&answer, json),
        ControlReply::Members(list) => members(&list, json),
        ControlReply::Nf(text) => println!("{text}"),
        ControlReply::Left(report) if json => {
            println!("{}", json!({ "items": report.items, "micros": report.micros, "members": report.members }))
        }
        ControlReply::Left(report) => {
            let to: Vec<String> = report.members.iter().map(|(m, n)| format!("{m}={n}")).collect();
            println!("left: handed {} items over in {} µs ({})", report.items, report.micros, to.join(" "));
        }
        ControlReply::Loaded(info) => {
            println!("loaded {} sha256={} size={} combinable={}", info.name, info.hash, info.size, info.combinable);
        }
        ControlReply::Unloaded(existed) => {
            println!("{}", existed as u8);
            if !existed {
                eprintln!("no such reducer");
                return Ok(ExitCode::from(1));
            }
        }
        ControlReply::Reducers(list) => {
            if json {
                println!("{}", serde_json::to_string(&list)?);
            } else {
                for r in list {
                    let hash = if r.hash.is_empty() { "-".to_string() } else { r.hash[..16].to_string() };
                    let combinable = if r.combinable { "combinable" } else { "not-combinable" };
                    println!("{}\t{}\t{}\t{}\t{}", r.name, r.kind, combinable, r.size, hash);
                }
            }
        }
        ControlReply::SecurityLog(entries) => {
            if json {
                println!("{}", serde_json::to_string(&entries)?);
            } else {
                for e in entries {
                    let (first, last) = (e.first_ms, e.last_ms);
                    println!(
                        "{}\t{}\t{}\tcount={}\tfirst_ms={first}\tlast_ms={last}",
                        e.reason, e.principal, e.object, e.count
                    );
                }
            }
        }
        ControlReply::Stats(stats) => {
            if json {
                let map: serde_json::Map<String, serde_json::Value> =
                    stats.into_iter().map(|(k, v)| (k, json!(v))).collect();
                println!("{}", serde_json::Value::Object(map));
            } else {
                for (k, v) in stats {
                    println!("{k} {v}");
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn global(answer: &GlobalAnswer, json: bool) {
    if json {
        let result = match &answer.result {
            Reduced::Nothing => serde_json::Value::Null,
            Reduced::Value(v) => value_json(v),
            Reduced::Item(item) => item_json(item),
            Reduced::Items(items) => items.iter().map(item_json).collect(),
        };
        println!(
            "{}",
            json!({
                "reducer": answer.reducer,
                "remote": answer.remote,
                "result": result,
                "answered": answer.answered,
                "missing": answer.missing,
            })
        );
        return;
    }
    match &answer.result {
        Reduced::Nothing => eprintln!("no items matched"),
        Reduced::Value(v) => println!("{}", human(v)),
        Reduced::Item(item) => println!("{}", human(&item.value)),
        Reduced::Items(items) => {
            for item in items {
                println!("{}\t{}\t{}\t{}\t{}", item.key, human(&item.value), item.origin, item.version, item.writer);
            }
        }
    }
    if !answer.missing.is_empty() {
        eprintln!("incomplete: no answer from {}", answer.missing.join(", "));
    }
}

fn members(members: &[MemberView], json: bool) {
    if json {
        let list: Vec<_> =
            members.iter().map(|m| json!({ "id": m.id, "endpoint": m.endpoint, "state": m.state })).collect();
        println!("{}", serde_json::Value::Array(list));
    } else {
        for m in members {
            println!("{}\t{}\t{}", m.id, m.endpoint, m.state);
        }
    }
}

fn value_json(value: &Value) -> serde_json::Value {
    match value {
        Value::Int(v) => json!(v),
        Value::Float(v) if v.is_finite() => json!(v),
        Value::Float(v) => json!(v.to_string()),
        Value::Text(s) => json!(s),
        Value::Bytes(b) => json!({ "bytes": hex::encode(b) }),
    }
}

fn item_json(item: &Item) -> serde_json::Value {
    json!({
        "key": item.key,
        "value": value_json(&item.value),
        "origin": item.origin,
        "writer": item.writer,
        "version": item.version,
    })
}
