//! A recorded run as JUnit XML, for CI systems that read it (Jenkins, GitLab, Buildkite): one
//! `testsuite` per platform, one `testcase` per node (`classname` the platform, `name` the
//! recipe), `failure` for a failed node and `error` for an errored one with the exit code and
//! the last 64 KiB of its log, `skipped` for skipped and cancelled nodes. Log bytes XML cannot
//! carry (control characters, invalid UTF-8) are written as `\xNN`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use odu_core::{NodeId, NodeStatus};

use super::ledger::{self, NodeRecord, RunRecord};

/// How much of a red node's log goes into its `failure` or `error`.
pub const LOG_TAIL: u64 = 64 * 1024;

/// The run `record` is (an ended run: its nodes recorded), its logs read from `ci`.
pub fn render(record: &RunRecord, ci: &Path) -> String {
    let mut suites: BTreeMap<String, Vec<(String, &NodeRecord)>> = BTreeMap::new();
    for node in &record.nodes {
        let (platform, recipe) = match NodeId::parse(&node.id) {
            Some(id) => (id.platform, id.task),
            None => (String::new(), node.id.clone()),
        };
        suites.entry(platform).or_default().push((recipe, node));
    }
    let count =
        |nodes: &[&NodeRecord], of: &[NodeStatus]| nodes.iter().filter(|n| of.contains(&n.status)).count();
    let all: Vec<&NodeRecord> = record.nodes.iter().collect();
    let seconds = |ms: u64| format!("{}.{:03}", ms / 1000, ms % 1000);
    let run_ms = record.finished_at.map_or(0, |end| end.saturating_sub(record.started_at));
    let mut xml = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        xml,
        "<testsuites name=\"{}\" tests=\"{}\" failures=\"{}\" errors=\"{}\" skipped=\"{}\" time=\"{}\">",
        attr(&format!("{} {}", record.pipeline, record.reference())),
        all.len(),
        count(&all, &[NodeStatus::Failed]),
        count(&all, &[NodeStatus::Errored]),
        count(&all, &[NodeStatus::Skipped, NodeStatus::Cancelled]),
        seconds(run_ms),
    );
    for (platform, cases) in &suites {
        let nodes: Vec<&NodeRecord> = cases.iter().map(|(_, n)| *n).collect();
        let host = record.lanes.iter().find(|l| &l.platform == platform).map_or("", |l| l.host.as_str());
        let _ = writeln!(
            xml,
            "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{}\" errors=\"{}\" skipped=\"{}\" time=\"{}\" timestamp=\"{}\" hostname=\"{}\">",
            attr(platform),
            nodes.len(),
            count(&nodes, &[NodeStatus::Failed]),
            count(&nodes, &[NodeStatus::Errored]),
            count(&nodes, &[NodeStatus::Skipped, NodeStatus::Cancelled]),
            seconds(nodes.iter().filter_map(|n| n.duration_ms).sum()),
            timestamp(record.started_at),
            attr(host),
        );
        let _ = writeln!(xml, "    <properties>");
        for (name, value) in [
            ("run", record.reference()),
            ("sha", record.sha.clone()),
            ("outcome", record.outcome.to_string()),
        ] {
            let _ = writeln!(xml, "      <property name=\"{name}\" value=\"{}\"/>", attr(&value));
        }
        let _ = writeln!(xml, "    </properties>");
        for (recipe, node) in cases {
            let _ = write!(
                xml,
                "    <testcase classname=\"{}\" name=\"{}\" time=\"{}\"",
                attr(platform),
                attr(recipe),
                seconds(node.duration_ms.unwrap_or(0))
            );
            let exit =
                node.exit_code.map_or_else(|| "no exit code".to_string(), |c| format!("exit code {c}"));
            match node.status {
                NodeStatus::Failed | NodeStatus::Errored => {
                    let tag = if node.status == NodeStatus::Failed { "failure" } else { "error" };
                    let _ = writeln!(
                        xml,
                        ">\n      <{tag} message=\"{} {}\" type=\"{}\">{}</{tag}>\n    </testcase>",
                        node.status,
                        attr(&exit),
                        node.status,
                        text(&log_tail(ci, record, &node.id, &exit)),
                    );
                }
                NodeStatus::Skipped | NodeStatus::Cancelled => {
                    let _ = writeln!(xml, ">\n      <skipped message=\"{}\"/>\n    </testcase>", node.status);
                }
                // Pending or running in an ended run: it never finished.
                NodeStatus::Pending | NodeStatus::Running => {
                    let _ = writeln!(
                        xml,
                        ">\n      <skipped message=\"{} when the run ended\"/>\n    </testcase>",
                        node.status
                    );
                }
                NodeStatus::Ok => xml.push_str("/>\n"),
            }
        }
        xml.push_str("  </testsuite>\n");
    }
    xml.push_str("</testsuites>\n");
    xml
}

/// The exit code, then the last [`LOG_TAIL`] bytes of node `id`'s log (or why there is none).
fn log_tail(ci: &Path, record: &RunRecord, id: &str, exit: &str) -> Vec<u8> {
    let mut body = format!("{exit}\n").into_bytes();
    let mut file = match ledger::open_run_log(ci, record, id, ledger::Access::Read) {
        Ok(file) => file,
        Err(e) => {
            body.extend_from_slice(format!("(no log: {e})\n").as_bytes());
            return body;
        }
    };
    let size = file.metadata().map(|m| m.len()).unwrap_or(0);
    let start = size.saturating_sub(LOG_TAIL);
    if start > 0 {
        body.extend_from_slice(format!("(the last {LOG_TAIL} bytes of {size})\n").as_bytes());
    }
    let mut tail = Vec::new();
    if file.seek(SeekFrom::Start(start)).and_then(|_| file.take(LOG_TAIL).read_to_end(&mut tail)).is_err() {
        body.extend_from_slice(b"(the log could not be read)\n");
        return body;
    }
    // A cut inside a character starts at the next one.
    let skip =
        if start > 0 { tail.iter().take(3).take_while(|b| (0x80..0xC0).contains(*b)).count() } else { 0 };
    body.extend_from_slice(&tail[skip..]);
    body
}

/// Text content: markup escaped, and what XML 1.0 cannot hold written as `\xNN` (each byte
/// of invalid UTF-8, each control character but tab, newline and carriage return) or
/// `\u{…}` (the non-characters U+FFFE and U+FFFF).
pub fn text(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '&' => out.push_str("&amp;"),
                '<' => out.push_str("&lt;"),
                '>' => out.push_str("&gt;"),
                '"' => out.push_str("&quot;"),
                '\'' => out.push_str("&apos;"),
                '\t' | '\n' | '\r' => out.push(c),
                c if (c as u32) < 0x20 || c == '\u{7f}' => {
                    let _ = write!(out, "\\x{:02x}", c as u32);
                }
                '\u{fffe}' | '\u{ffff}' => {
                    let _ = write!(out, "\\u{{{:x}}}", c as u32);
                }
                c => out.push(c),
            }
        }
        for byte in chunk.invalid() {
            let _ = write!(out, "\\x{byte:02x}");
        }
    }
    out
}

/// An attribute value: as [`text`], with tabs and line breaks kept as character references
/// (a parser would fold them into spaces).
fn attr(value: &str) -> String {
    text(value.as_bytes()).replace('\t', "&#9;").replace('\n', "&#10;").replace('\r', "&#13;")
}

/// `ms` since the epoch as an ISO 8601 UTC time without a zone (`2026-12-02T14:40:43`), as
/// JUnit's `timestamp` has it.
fn timestamp(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rest) = (secs / 86_400, secs % 86_400);
    // Howard Hinnant's civil_from_days.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}", rest / 3600, rest % 3600 / 60, rest % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_escapes_markup_controls_and_invalid_utf8() {
        assert_eq!(text(b"a ]]> <b> & \"c\""), "a ]]&gt; &lt;b&gt; &amp; &quot;c&quot;");
        assert_eq!(text(b"nul\0 esc\x1b tab\t nl\n"), "nul\\x00 esc\\x1b tab\t nl\n");
        assert_eq!(text(b"bad \xff\xfe ok \xc3\xa9"), "bad \\xff\\xfe ok \u{e9}");
        assert_eq!(text("\u{fffe}".as_bytes()), "\\u{fffe}");
        assert_eq!(attr("two\nlines"), "two&#10;lines");
    }

    #[test]
    fn timestamps_are_utc_civil_times() {
        assert_eq!(timestamp(0), "1970-01-01T00:00:00");
        assert_eq!(timestamp(1_798_814_443_000), "2027-01-01T14:40:43");
        assert_eq!(timestamp(951_782_400_000), "2000-02-29T00:00:00");
    }
}
