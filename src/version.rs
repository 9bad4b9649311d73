//! What `--version` says of a build: its version, the git commit it was built from (when the
//! build knew it, see build.rs) and the protocol version its two ends speak.

/// This build's version, as in Cargo.toml.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The full git commit this build was made from, if known.
pub fn commit() -> Option<&'static str> {
    Some(env!("ODU_GIT_REV")).filter(|rev| !rev.is_empty())
}

/// `0.1.0 (commit 0123abcd…, protocol 1)`: the text after a binary's name in `--version`.
pub fn long() -> &'static str {
    static LONG: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    LONG.get_or_init(|| describe(VERSION, commit(), odu_proto::PROTOCOL_VERSION))
}

fn describe(version: &str, commit: Option<&str>, protocol: u32) -> String {
    match commit {
        Some(rev) => format!("{version} (commit {rev}, protocol {protocol})"),
        None => format!("{version} (protocol {protocol})"),
    }
}

/// The protocol version in a `--version` line of either binary (`None`: not such a line).
pub fn protocol_of(line: &str) -> Option<u32> {
    let inner = line.trim().strip_suffix(')')?.rsplit_once('(')?.1;
    inner.split(", ").find_map(|part| part.strip_prefix("protocol ")?.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_version_line_names_the_commit_when_known_and_always_the_protocol() {
        let rev = "0123456789abcdef0123456789abcdef01234567";
        assert_eq!(describe("0.1.0", Some(rev), 1), format!("0.1.0 (commit {rev}, protocol 1)"));
        assert_eq!(describe("0.1.0", None, 2), "0.1.0 (protocol 2)");
        assert_eq!(protocol_of(&format!("odu-runner 0.1.0 (commit {rev}, protocol 7)\n")), Some(7));
        assert_eq!(protocol_of("odu-runner 0.1.0 (protocol 1)"), Some(1));
        assert_eq!(protocol_of("odu-runner 0.1.0"), None);
        assert_eq!(protocol_of("bash: odu-runner: command not found"), None);
    }
}
