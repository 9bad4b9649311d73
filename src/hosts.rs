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
    /// The flake a host of another platform than odu's builds its runner from, when it has Nix
    /// (default: odu's own at this build's commit).
    pub flake: Option<String>,
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
            flake: None,
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

/// The platform odu itself was built for, as a Nix system tuple.
pub fn local_platform() -> String {
    let os = match std::env::consts::OS {
        "macos" => "darwin",
        other => other,
    };
    format!("{}-{os}", std::env::consts::ARCH)
}

/// The longest platform name odu accepts: real ones are a few dozen bytes, and a platform
/// names a folder under `.ci/`.
pub const MAX_PLATFORM_LEN: usize = 64;

/// Why `name` cannot be a lane's platform, if it cannot. The one check for `--host` pins and
/// hosts-file keys alike: a platform becomes a folder under `.ci/<sha7>/`, so only a Nix system
/// tuple (letters, digits, `_` and `-`) of a sane length passes, never a path.
pub fn check_platform(name: &str) -> Result<(), String> {
    if name.len() <= MAX_PLATFORM_LEN && odu_core::platform::is_system_tuple(name) {
        Ok(())
    } else {
        Err(format!(
            "{:?} is not a platform: platforms are Nix system tuples like x86_64-linux or aarch64-darwin",
            shorten(name)
        ))
    }
}

/// Why `host` cannot be a lane's host, if it cannot.
fn host_problem(host: &str) -> Option<&'static str> {
    if host.trim().is_empty() {
        Some("the host is empty")
    } else if host.starts_with('-') {
        Some("ssh would read a host starting with '-' as an option")
    } else {
        None
    }
}

/// Whether `flake` can name the flake a host builds its runner from: one word, not an option,
/// and without an attribute (odu adds `#packages.<system>.odu-runner` itself).
fn is_flake_reference(flake: &str) -> bool {
    !flake.is_empty()
        && !flake.starts_with('-')
        && !flake.contains('#')
        && !flake.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// Parses `--host P=ADDR`; `P` is checked like a hosts-file key.
pub fn parse_pin(pin: &str) -> CliResult<(String, String)> {
    match pin.split_once('=') {
        Some((platform, addr)) if !platform.is_empty() && !addr.is_empty() => {
            check_platform(platform).map_err(|why| CliError::usage(format!("--host {pin:?}: {why}")))?;
            if let Some(why) = host_problem(addr) {
                return Err(CliError::usage(format!(
                    "--host {pin:?}: {why}: pass an ssh destination or localhost"
                )));
            }
            Ok((platform.to_string(), addr.to_string()))
        }
        _ => Err(CliError::usage(format!(
            "--host expects PLATFORM=ADDR (like x86_64-linux=localhost), got {pin:?}"
        ))),
    }
}

/// `text`, cut to a length a message can show.
fn shorten(text: &str) -> String {
    const SHOWN: usize = 80;
    if text.len() <= SHOWN {
        return text.to_string();
    }
    let mut end = SHOWN;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
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

/// Resolves the hosts configured for this checkout, as `odu hosts` shows them. `--host` pins
/// override the file's entry for their platform.
pub fn resolve(pins: &[(String, String)], env: &dyn Fn(&str) -> Option<String>) -> CliResult<Hosts> {
    let explicit = env("ODU_HOSTS").filter(|p| !p.is_empty());
    let fix = if explicit.is_some() {
        "point ODU_HOSTS at a hosts.json file, or unset it"
    } else {
        "make it a hosts.json file, or remove it"
    };
    let mut hosts = None;
    for path in config_paths(env) {
        if path.exists() || explicit.is_some() {
            hosts = Some(load_with(&path, fix)?);
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

/// The hosts a run uses: [`resolve`]'s, where a localhost lane must be this machine's
/// platform (a lane under another platform's name would record that platform as tested).
pub fn for_run(pins: &[(String, String)], env: &dyn Fn(&str) -> Option<String>) -> CliResult<Hosts> {
    let hosts = resolve(pins, env)?;
    let here = local_platform();
    for (platform, entry) in &hosts.entries {
        let claimed = entry.platform.as_deref().unwrap_or(platform);
        if !entry.is_local() || (platform == &here && claimed == here) {
            continue;
        }
        let wrong = if platform == &here { claimed } else { platform.as_str() };
        let (origin, fix) = if pins.iter().any(|(p, _)| p == platform) {
            (format!("--host {platform}={}", entry.host), format!("--host {wrong}=user@box"))
        } else {
            let file = hosts.source.strip_suffix(" + --host").unwrap_or(&hosts.source);
            (file.to_string(), format!("\"{wrong}\": \"user@box\""))
        };
        return Err(CliError::refused(format!(
            "{origin}: this machine is {here}, so localhost cannot run the {wrong} lane: give {wrong} \
             an ssh host of that platform ({fix}), or run localhost as {here}"
        )));
    }
    Ok(hosts)
}

/// The most a config file may hold.
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// Reads a config file: only a regular file of at most [`MAX_CONFIG_BYTES`], so that a FIFO, a
/// device or an endless file cannot block or exhaust odu. What is checked is the opened file
/// itself (fstat, never a second lookup by name); it is opened without blocking (a FIFO would
/// otherwise wait for a writer), and at most one byte over the limit is ever read. `fix` says
/// what to do about a refused file.
pub fn read_config(path: &Path, fix: &str) -> CliResult<String> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let refuse = |what: String| CliError::refused(format!("{} {what}: {fix}", path.display()));
    // A first look by name spares opening a device (opening some has effects); the fstat
    // below is the check that counts.
    if let Ok(meta) = std::fs::metadata(path)
        && !meta.is_file()
    {
        return Err(refuse(format!("is {}, not a regular file", file_kind(&meta))));
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(|e| refuse(format!("cannot be read ({e})")))?;
    let meta = file.metadata().map_err(|e| refuse(format!("cannot be read ({e})")))?;
    if !meta.is_file() {
        return Err(refuse(format!("is {}, not a regular file", file_kind(&meta))));
    }
    let too_big = || refuse(format!("is over the {} MiB a hosts config may hold", MAX_CONFIG_BYTES >> 20));
    if meta.len() > MAX_CONFIG_BYTES {
        return Err(too_big());
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(MAX_CONFIG_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| refuse(format!("cannot be read ({e})")))?;
    if bytes.len() as u64 > MAX_CONFIG_BYTES {
        return Err(too_big());
    }
    String::from_utf8(bytes).map_err(|_| refuse("is not UTF-8 text".into()))
}

/// What a file that is not a regular file is, for a message.
fn file_kind(meta: &std::fs::Metadata) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    let kind = meta.file_type();
    if kind.is_dir() {
        "a directory"
    } else if kind.is_fifo() {
        "a FIFO"
    } else if kind.is_char_device() {
        "a character device"
    } else if kind.is_block_device() {
        "a block device"
    } else if kind.is_socket() {
        "a socket"
    } else {
        "not a file"
    }
}

/// Reads one hosts.json.
pub fn load(path: &Path) -> CliResult<Hosts> {
    load_with(path, "make it a hosts.json file")
}

fn load_with(path: &Path, fix: &str) -> CliResult<Hosts> {
    let text = read_config(path, fix)?;
    let entries = parse(&text).map_err(|e| match e {
        Mistake::Syntax(e) => CliError::refused(format!(
            "{} is not valid JSON ({e}): write it like {{\"x86_64-linux\": \"localhost\"}}",
            path.display()
        )),
        Mistake::Duplicate(e) => CliError::refused(format!("{}: {e}: keep one of them", path.display())),
        Mistake::Content(why) => CliError::refused(format!("{}: {why}", path.display())),
    })?;
    Ok(Hosts { entries, source: path.display().to_string(), defaulted: false })
}

/// What is wrong with a hosts file's text.
#[derive(Debug)]
enum Mistake {
    /// Not JSON at all.
    Syntax(serde_json::Error),
    /// A key repeated in one object (serde_json's message names it and where).
    Duplicate(serde_json::Error),
    /// JSON, but not a hosts config: names the key, what was expected and what was found.
    Content(String),
}

/// The keys of a detailed host entry.
const ENTRY_KEYS: [&str; 7] = ["host", "port", "identity", "ssh_config", "platform", "jobs", "flake"];

/// Parses a hosts config, refusing anything it does not understand.
fn parse(text: &str) -> Result<BTreeMap<String, HostEntry>, Mistake> {
    let json: Json = serde_json::from_str(text).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => Mistake::Duplicate(e),
        _ => Mistake::Syntax(e),
    })?;
    let Json::Object(platforms) = json else {
        return Err(Mistake::Content(format!(
            "expected a JSON object of platform → host, like {{\"x86_64-linux\": \"localhost\"}}, found {}",
            json.found()
        )));
    };
    let mut entries = BTreeMap::new();
    for (platform, value) in platforms {
        check_platform(&platform).map_err(Mistake::Content)?;
        let entry = entry(&platform, value).map_err(Mistake::Content)?;
        entries.insert(platform, entry);
    }
    Ok(entries)
}

/// One platform's host: an address, or an object with `host` and the optional keys.
fn entry(platform: &str, value: Json) -> Result<HostEntry, String> {
    let fields = match value {
        Json::String(host) if host_problem(&host).is_none() => return Ok(HostEntry::plain(&host)),
        Json::Object(fields) => fields,
        other => {
            return Err(format!(
                "{platform:?}: expected a host (a string like \"localhost\" or \"user@box\") or an object with \"host\", found {}",
                other.found_why()
            ));
        }
    };
    let mut entry = HostEntry::plain("");
    let mut has_host = false;
    for (key, value) in fields {
        let found = if key == "host" { value.found_why() } else { value.found() };
        let wrong = |expected: &str| format!("{key:?} of {platform:?}: expected {expected}, found {found}");
        match key.as_str() {
            "host" => match &value {
                Json::String(host) if host_problem(host).is_none() => {
                    entry.host = host.clone();
                    has_host = true;
                }
                _ => return Err(wrong("an ssh destination or localhost")),
            },
            "port" => {
                entry.port = value
                    .optional(|v| v.integer(1, 65535))
                    .ok_or_else(|| wrong("a port number from 1 to 65535"))?
                    .map(|p| p as u16)
            }
            "jobs" => {
                entry.jobs = value
                    .optional(|v| v.integer(1, usize::MAX as u64))
                    .ok_or_else(|| wrong("a whole number of at least 1 (leave \"jobs\" out for no limit)"))?
                    .map(|j| j as usize)
            }
            "identity" => {
                entry.identity = value.optional(Json::string).ok_or_else(|| wrong("a path to a key file"))?
            }
            "ssh_config" => {
                entry.ssh_config =
                    value.optional(Json::string).ok_or_else(|| wrong("a path to an ssh config file"))?
            }
            "flake" => {
                entry.flake =
                    value.optional(|v| v.string().filter(|f| is_flake_reference(f))).ok_or_else(|| {
                        wrong("a flake reference without an attribute, like \"github:juspay/odu/<commit>\"")
                    })?
            }
            "platform" => {
                entry.platform = value
                    .optional(|v| v.string().filter(|p| check_platform(p).is_ok()))
                    .ok_or_else(|| wrong("a platform like x86_64-linux or aarch64-darwin"))?
            }
            _ => {
                let hint = ENTRY_KEYS
                    .iter()
                    .find(|k| odu_core::suggest::edit_distance(k, &key) <= 2)
                    .map(|k| format!(" (did you mean {k:?}?)"))
                    .unwrap_or_default();
                return Err(format!(
                    "{platform:?} has an unknown key {:?}{hint}: the keys are {}",
                    shorten(&key),
                    ENTRY_KEYS.join(", ")
                ));
            }
        }
    }
    if !has_host {
        return Err(format!("{platform:?} has no \"host\": add \"host\": \"user@box\" (or \"localhost\")"));
    }
    Ok(entry)
}

/// JSON as written: an object keeps its keys in order, and a repeated key is refused while
/// parsing (serde_json's own maps keep the last one silently).
#[derive(Debug)]
enum Json {
    Null,
    Bool(bool),
    Number(serde_json::Number),
    String(String),
    Array,
    Object(Vec<(String, Json)>),
}

impl Json {
    /// What this value is, for "found …".
    fn found(&self) -> String {
        match self {
            Json::Null => "null".into(),
            Json::Bool(b) => b.to_string(),
            Json::Number(n) => format!("the number {n}"),
            Json::String(s) if s.is_empty() => "an empty string".into(),
            Json::String(s) => format!("the string {:?}", shorten(s)),
            Json::Array => "an array".into(),
            Json::Object(_) => "an object".into(),
        }
    }

    /// What this value is, and why it cannot be a host when it is a string that cannot.
    fn found_why(&self) -> String {
        match self {
            Json::String(s) if !s.is_empty() => match host_problem(s) {
                Some(why) => format!("{} ({why})", self.found()),
                None => self.found(),
            },
            _ => self.found(),
        }
    }

    /// `None` when the value is wrong; `Some(None)` for an absent (`null`) one.
    fn optional<T>(&self, read: impl Fn(&Json) -> Option<T>) -> Option<Option<T>> {
        match self {
            Json::Null => Some(None),
            other => read(other).map(Some),
        }
    }

    fn integer(&self, min: u64, max: u64) -> Option<u64> {
        match self {
            Json::Number(n) => n.as_u64().filter(|v| (min..=max).contains(v)),
            _ => None,
        }
    }

    fn string(&self) -> Option<String> {
        match self {
            Json::String(s) if !s.is_empty() => Some(s.clone()),
            _ => None,
        }
    }
}

impl<'de> Deserialize<'de> for Json {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Json, D::Error> {
        deserializer.deserialize_any(JsonVisitor)
    }
}

struct JsonVisitor;

impl<'de> serde::de::Visitor<'de> for JsonVisitor {
    type Value = Json;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_unit<E>(self) -> Result<Json, E> {
        Ok(Json::Null)
    }
    fn visit_bool<E>(self, v: bool) -> Result<Json, E> {
        Ok(Json::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Json, E> {
        Ok(Json::Number(v.into()))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Json, E> {
        Ok(Json::Number(v.into()))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Json, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Json::Null, Json::Number))
    }
    fn visit_str<E>(self, v: &str) -> Result<Json, E> {
        Ok(Json::String(v.to_string()))
    }
    fn visit_string<E>(self, v: String) -> Result<Json, E> {
        Ok(Json::String(v))
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Json, A::Error> {
        while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
        Ok(Json::Array)
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Json, A::Error> {
        let mut seen = std::collections::HashSet::new();
        let mut entries = Vec::new();
        while let Some(key) = map.next_key::<String>()? {
            if !seen.insert(key.clone()) {
                return Err(serde::de::Error::custom(format_args!("duplicate key {:?}", shorten(&key))));
            }
            entries.push((key, map.next_value::<Json>()?));
        }
        Ok(Json::Object(entries))
    }
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
    fn pins_need_an_equals_sign_and_a_platform() {
        assert!(parse_pin("x86_64-linux").is_err());
        assert!(parse_pin("=localhost").is_err());
        assert_eq!(parse_pin("a-b=c").unwrap(), ("a-b".into(), "c".into()));
        for bad in ["../../../victim=localhost", "/tmp/x=localhost", "a-b/c=localhost", "linux=localhost"] {
            let message = parse_pin(bad).unwrap_err().message;
            assert!(message.contains("is not a platform"), "{bad}: {message}");
        }
        let long = format!("x86_64-{}=localhost", "l".repeat(MAX_PLATFORM_LEN));
        assert!(parse_pin(&long).unwrap_err().message.contains("is not a platform"));
        assert!(
            parse_pin("a-b=-oProxyCommand=x").unwrap_err().message.contains("starting with '-' as an option")
        );
    }

    fn mistake(text: &str) -> String {
        match parse(text).unwrap_err() {
            Mistake::Content(why) => why,
            Mistake::Duplicate(e) | Mistake::Syntax(e) => e.to_string(),
        }
    }

    #[test]
    fn hosts_json_accepts_strings_and_objects() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hosts.json");
        std::fs::write(
            &path,
            r#"{"x86_64-linux":"localhost","aarch64-linux":{"host":"b","port":2222,"jobs":2,"identity":null}}"#,
        )
        .unwrap();
        let hosts = load(&path).unwrap();
        assert_eq!(hosts.entries["aarch64-linux"].port, Some(2222));
        assert_eq!(hosts.entries["aarch64-linux"].jobs, Some(2));
        assert_eq!(hosts.entries["aarch64-linux"].identity, None);
        assert_eq!(hosts.entries["x86_64-linux"], HostEntry::plain("localhost"));
        std::fs::write(&path, "[1]").unwrap();
        assert!(load(&path).unwrap_err().message.contains("expected a JSON object"));
        std::fs::write(&path, r#"{"linux":"x"}"#).unwrap();
        assert!(load(&path).unwrap_err().message.contains("not a platform"));
    }

    #[test]
    fn hosts_json_mistakes_name_the_key_the_expectation_and_what_was_found() {
        assert_eq!(
            mistake(r#"{"a-b": true}"#),
            r#""a-b": expected a host (a string like "localhost" or "user@box") or an object with "host", found true"#
        );
        assert_eq!(
            mistake(r#"{"a-b": {"host": "h", "jobs": 0}}"#),
            r#""jobs" of "a-b": expected a whole number of at least 1 (leave "jobs" out for no limit), found the number 0"#
        );
        assert_eq!(
            mistake(r#"{"a-b": {"host": "h", "port": 70000}}"#),
            r#""port" of "a-b": expected a port number from 1 to 65535, found the number 70000"#
        );
        assert_eq!(
            mistake(r#"{"a-b": {"host": "h", "jobs": 1.5}}"#),
            r#""jobs" of "a-b": expected a whole number of at least 1 (leave "jobs" out for no limit), found the number 1.5"#
        );
        assert_eq!(
            mistake(r#"{"a-b": {"host": ""}}"#),
            r#""host" of "a-b": expected an ssh destination or localhost, found an empty string"#
        );
        assert_eq!(
            mistake(r#"{"a-b": {"host": "h", "platform": "../x"}}"#),
            r#""platform" of "a-b": expected a platform like x86_64-linux or aarch64-darwin, found the string "../x""#
        );
        assert_eq!(
            mistake(r#"{"a-b": {"host": "h", "sshconfig": "f"}}"#),
            r#""a-b" has an unknown key "sshconfig" (did you mean "ssh_config"?): the keys are host, port, identity, ssh_config, platform, jobs, flake"#
        );
        assert_eq!(
            mistake(r#"{"a-b": {"host": "h", "color": "f"}}"#),
            r#""a-b" has an unknown key "color": the keys are host, port, identity, ssh_config, platform, jobs, flake"#
        );
        assert_eq!(
            mistake(r#"{"a-b": {"host": "h", "flake": "github:juspay/odu#odu-runner"}}"#),
            r#""flake" of "a-b": expected a flake reference without an attribute, like "github:juspay/odu/<commit>", found the string "github:juspay/odu#odu-runner""#
        );
        assert!(
            mistake(r#"{"a-b": {"host": "h", "flake": "path:/a b"}}"#).starts_with(r#""flake" of "a-b""#)
        );
        assert!(mistake(r#"{"a-b": {"host": "h", "flake": "--impure"}}"#).starts_with(r#""flake" of "a-b""#));
        let entries = parse(r#"{"a-b": {"host": "h", "flake": "github:me/odu/v1"}}"#).unwrap();
        assert_eq!(entries["a-b"].flake.as_deref(), Some("github:me/odu/v1"));
        assert_eq!(
            mistake(r#"{"a-b": {}}"#),
            r#""a-b" has no "host": add "host": "user@box" (or "localhost")"#
        );
        assert_eq!(mistake(r#"{"a-b": "h", "a-b": "h"}"#), r#"duplicate key "a-b" at line 1 column 18"#);
        assert_eq!(
            mistake(r#"{"a-b": {"host": "h", "port": 1, "port": 2}}"#),
            r#"duplicate key "port" at line 1 column 39"#
        );
        assert!(matches!(parse("{"), Err(Mistake::Syntax(_))));
    }

    #[test]
    fn config_is_read_only_from_small_regular_files() {
        let dir = tempfile::tempdir().unwrap();
        let big = dir.path().join("big.json");
        std::fs::write(&big, vec![b' '; MAX_CONFIG_BYTES as usize + 1]).unwrap();
        let message = read_config(&big, "fix it").unwrap_err().message;
        assert!(message.ends_with("is over the 1 MiB a hosts config may hold: fix it"), "{message}");
        let fits = dir.path().join("fits.json");
        std::fs::write(&fits, vec![b' '; MAX_CONFIG_BYTES as usize]).unwrap();
        assert_eq!(read_config(&fits, "fix it").unwrap().len(), MAX_CONFIG_BYTES as usize);
        let message = read_config(dir.path(), "fix it").unwrap_err().message;
        assert!(message.contains("is a directory, not a regular file"), "{message}");
        let message = read_config(Path::new("/dev/null"), "fix it").unwrap_err().message;
        assert!(message.contains("is a character device"), "{message}");
        let message = read_config(&dir.path().join("absent"), "fix it").unwrap_err().message;
        assert!(message.contains("cannot be read"), "{message}");
    }
}
