//! The golden frames of docs/protocol.md round-trip through the real codec and types.

use odu_proto::{
    Configure, HeaderFrame, LogChunk, LogFrame, LogItem, Message, NodesFrame, RunsFrame, StartParams,
    Started, decode_line, encode_frame, item_frame, log_frame_json, log_item_frame,
};
use serde_json::Value;

fn to_value(value: impl serde::Serialize) -> Value {
    serde_json::to_value(value).unwrap()
}

fn golden_pairs() -> Vec<(String, String)> {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/protocol.md")).unwrap();
    let mut blocks: Vec<(String, String)> = Vec::new();
    let mut lines = doc.lines();
    while let Some(line) = lines.next() {
        if let Some(kind) = line.strip_prefix("```").filter(|k| *k == "json" || *k == "frame") {
            let body: Vec<&str> = lines.by_ref().take_while(|l| *l != "```").collect();
            blocks.push((kind.to_string(), body.join("\n")));
        }
    }
    let pairs: Vec<(String, String)> = blocks
        .chunks(2)
        .map(|pair| {
            assert_eq!(
                (pair[0].0.as_str(), pair[1].0.as_str()),
                ("json", "frame"),
                "blocks come in json/frame pairs"
            );
            (pair[0].1.clone(), pair[1].1.clone())
        })
        .collect();
    assert!(pairs.len() >= 10, "the protocol doc lost its golden frames");
    pairs
}

#[test]
fn golden_frames_round_trip_byte_for_byte() {
    for (json, frame) in golden_pairs() {
        let mut encoded = Vec::new();
        encode_frame(json.as_bytes(), &mut encoded);
        assert_eq!(String::from_utf8(encoded).unwrap(), format!("{frame}\n"), "encoding {json}");
        assert_eq!(decode_line(frame.as_bytes()).unwrap().unwrap(), json.as_bytes(), "decoding {frame}");
        let message = Message::parse(json.as_bytes()).unwrap_or_else(|e| panic!("{json}: {e}"));
        assert_eq!(String::from_utf8(message.to_json()).unwrap(), json, "re-serialising {json}");
        match message {
            Message::Notification { method, params } if method == "$/item" => {
                let value = params["value"].clone();
                let round_trip = |typed: Value| assert_eq!(typed, value, "item fields");
                if value.get("header").is_some() {
                    round_trip(to_value(serde_json::from_value::<HeaderFrame>(value.clone()).unwrap()));
                } else if value.get("runs").is_some() {
                    round_trip(to_value(serde_json::from_value::<RunsFrame>(value.clone()).unwrap()));
                } else if value.get("revision").is_some() {
                    round_trip(to_value(serde_json::from_value::<NodesFrame>(value.clone()).unwrap()));
                } else {
                    let typed = serde_json::from_value::<LogFrame>(value.clone());
                    assert!(typed.is_ok(), "item is no frame of the contract: {value}");
                    let text = value.to_string();
                    assert!(LogItem::parse(&text).is_ok(), "the clients' reader reads {value}");
                }
            }
            Message::Request { method, params, .. } if method == "run.configure" => {
                let typed: Configure = serde_json::from_value(params.clone()).unwrap();
                assert_eq!(serde_json::to_value(&typed).unwrap(), params);
            }
            Message::Request { method, params, .. } if method == "run.start" => {
                let typed: StartParams = serde_json::from_value(params.clone()).unwrap();
                assert_eq!(serde_json::to_value(&typed).unwrap(), params);
            }
            Message::Response { result: Ok(result), .. } if result.get("hosts_source").is_some() => {
                let typed: Started = serde_json::from_value(result.clone()).unwrap();
                assert_eq!(serde_json::to_value(&typed).unwrap(), result);
            }
            _ => {}
        }
    }
}

#[test]
fn the_hand_built_log_frames_match_the_golden_ones() {
    let pairs = golden_pairs();
    let find = |needle: &str| pairs.iter().find(|(json, _)| json.contains(needle)).unwrap().1.clone();
    let id = Value::from(4);
    let snapshot =
        item_frame(&id, &log_frame_json(LogChunk::Snapshot { generation: 0, bytes: b"building\n" }));
    assert_eq!(String::from_utf8(snapshot).unwrap().trim_end(), find("\"kind\":\"snapshot\",\"generation\""));
    let append = item_frame(&id, &log_frame_json(LogChunk::Append(b"error\n")));
    assert_eq!(String::from_utf8(append).unwrap().trim_end(), find("\"kind\":\"append\""));
    let end = log_item_frame(&id, LogChunk::End);
    assert_eq!(String::from_utf8(end).unwrap().trim_end(), find("\"kind\":\"end\""));
}
