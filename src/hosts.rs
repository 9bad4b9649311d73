//! Where lanes run: `--host` pins, else `$ODU_HOSTS`, else `$XDG_CONFIG_HOME/odu/hosts.json`
//! (default `~/.config/odu/hosts.json`), else `~/.config/justci/hosts.json`; with no config at
//! all, one localhost lane for the local platform.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::{CliError, CliResult};

/// One configured host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostEntry {
    /// `localhost` or an ssh destination.
    pub host: String,
    pub port: Option<u16>,
    pub identity: Option<String>,
    pub ssh_config: Option<String>,
    /// What detection would find, when the key is only a label.
    pub platform: Option<String>,
    pub jobs: Option<usize>,
}

impl HostEntry {
    pub fn plain(host: &str) -> Self {
        HostEntry {
            host: host.into(),
            port: None,
            identity: None,
            ssh_config: None,
            platform: None,
            jobs: None,
        }
    }

    pub fn is_local(&self) -> bool {
        matches!(self.host.as_str(), "localhost" | "127.0.0.1" | "::1")
    }
}

/// The resolved hosts, keyed by platform, and where they came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hosts {
    pub entries: BTreeMap<String, HostEntry>,
    /// The file that was read, `--host` pins, or the local default.
    pub source: String,
    /// True when nothing was configured and the local default applies.
    pub defaulted: bool,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawHost {
    Address(String),
    Detailed {
        host: String,
        #[serde(default)]
        port: Option<u16>,
        #[serde(default)]
        identity: Option<String>,
        #[serde(default)]
        ssh_config: Option<String>,
        #[serde(default)]
        platform: Option<String>,
        #[serde(default)]
        jobs: Option<usize>,
    },
}

/// The platform odu itself was built for, as a Nix system tuple.
pub fn local_platform() -> String {
    let os = match std::env::consts::OS {
        "macos" => "darwin",
        other => other,
    };
    format!("{}-{os}", std::env::consts::ARCH)
}

/// Parses `--host P=ADDR`.
pub fn parse_pin(pin: &str) -> CliResult<(String, String)> {
    match pin.split_once('=') {
        Some((platform, addr)) if !platform.is_empty() && !addr.is_empty() => {
            Ok((platform.to_string(), addr.to_string()))
        }
        _ => Err(CliError::usage(format!(
            "--host expects PLATFORM=ADDR (like x86_64-linux=localhost), got {pin:?}"
        ))),
    }
}

/// The candidate config files, in lookup order.
pub fn config_paths(env: &dyn Fn(&str) -> Option<String>) -> Vec<PathBuf> {
    let mut paths = Vec::new();
    if let Some(p) = env("ODU_HOSTS").filter(|p| !p.is_empty()) {
        paths.push(PathBuf::from(p));
        return paths;
    }
    let home = env("HOME").map(PathBuf::from);
    let xdg = env("XDG_CONFIG_HOME").filter(|p| !p.is_empty()).map(PathBuf::from);
    if let Some(base) = xdg.clone().or_else(|| home.as_ref().map(|h| h.join(".config"))) {
        paths.push(base.join("odu/hosts.json"));
    }
    if let Some(home) = home {
        paths.push(home.join(".config/justci/hosts.json"));
    }
    paths
}

/// Resolves the hosts for a run. `--host` pins override the file's entry for their platform.
pub fn resolve(pins: &[(String, String)], env: &dyn Fn(&str) -> Option<String>) -> CliResult<Hosts> {
    let explicit = env("ODU_HOSTS").filter(|p| !p.is_empty());
    let mut hosts = None;
    for path in config_paths(env) {
        if path.exists() || explicit.is_some() {
            hosts = Some(load(&path)?);
            break;
        }
    }
    let mut hosts = match hosts {
        Some(h) => h,
        None if !pins.is_empty() => {
            Hosts { entries: BTreeMap::new(), source: "--host".into(), defaulted: false }
        }
        None => {
            let platform = local_platform();
            return Ok(Hosts {
                entries: BTreeMap::from([(platform, HostEntry::plain("localhost"))]),
                source: "no hosts config: one localhost lane".into(),
                defaulted: true,
            });
        }
    };
    for (platform, addr) in pins {
        hosts.entries.insert(platform.clone(), HostEntry::plain(addr));
    }
    if !pins.is_empty() && hosts.source != "--host" {
        hosts.source = format!("{} + --host", hosts.source);
    }
    Ok(hosts)
}

/// Reads one hosts.json.
pub fn load(path: &Path) -> CliResult<Hosts> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        CliError::refused(format!(
            "cannot read the hosts config {}: {e} (unset ODU_HOSTS or create the file)",
            path.display()
        ))
    })?;
    let raw: BTreeMap<String, RawHost> = serde_json::from_str(&text).map_err(|e| {
        CliError::refused(format!(
            "{} is not a JSON object of platform → host ({e}): write it like {{\"x86_64-linux\": \"localhost\"}}",
            path.display()
        ))
    })?;
    let mut entries = BTreeMap::new();
    for (platform, host) in raw {
        if !odu_core::platform::is_system_tuple(&platform) {
            return Err(CliError::refused(format!(
                "{}: {platform:?} is not a platform: keys are Nix system tuples like x86_64-linux or aarch64-darwin",
                path.display()
            )));
        }
        let entry = match host {
            RawHost::Address(host) => HostEntry::plain(&host),
            RawHost::Detailed { host, port, identity, ssh_config, platform, jobs } => {
                HostEntry { host, port, identity, ssh_config, platform, jobs }
            }
        };
        if entry.host.is_empty() {
            return Err(CliError::refused(format!("{}: the host for {platform:?} is empty", path.display())));
        }
        entries.insert(platform, entry);
    }
    Ok(Hosts { entries, source: path.display().to_string(), defaulted: false })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_of(vars: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |k| vars.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string())
    }

    #[test]
    fn no_config_means_one_localhost_lane_for_the_local_platform() {
        let hosts = resolve(&[], &env_of(&[("HOME", "/nonexistent-home")])).unwrap();
        assert!(hosts.defaulted);
        assert_eq!(hosts.entries[&local_platform()].host, "localhost");
    }

    #[test]
    fn pins_need_an_equals_sign() {
        assert!(parse_pin("x86_64-linux").is_err());
        assert!(parse_pin("=localhost").is_err());
        assert_eq!(parse_pin("a-b=c").unwrap(), ("a-b".into(), "c".into()));
    }

    #[test]
    fn hosts_json_accepts_strings_and_objects() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hosts.json");
        std::fs::write(
            &path,
            r#"{"x86_64-linux":"localhost","aarch64-linux":{"host":"b","port":2222,"jobs":2}}"#,
        )
        .unwrap();
        let hosts = load(&path).unwrap();
        assert_eq!(hosts.entries["aarch64-linux"].port, Some(2222));
        std::fs::write(&path, "[1]").unwrap();
        assert!(load(&path).unwrap_err().message.contains("not a JSON object"));
        std::fs::write(&path, r#"{"linux":"x"}"#).unwrap();
        assert!(load(&path).unwrap_err().message.contains("not a platform"));
    }
}
