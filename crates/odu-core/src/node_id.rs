//! Node ids: `<task>@<platform>`. The same string is the GitHub status context, the log key and
//! the CLI selector.

use sha2::Digest;

/// The bookkeeping node every other node of a lane needs.
pub const SETUP: &str = "_ci-setup";

/// A fan-in node id, split into its task and platform parts.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeId {
    pub task: String,
    pub platform: String,
}

impl NodeId {
    pub fn new(task: impl Into<String>, platform: impl Into<String>) -> Self {
        NodeId { task: task.into(), platform: platform.into() }
    }

    /// Whether `text` is this id written out (`<task>@<platform>`), without writing it.
    pub fn is(&self, text: &str) -> bool {
        text.len() == self.task.len() + 1 + self.platform.len()
            && text.starts_with(self.task.as_str())
            && text.as_bytes()[self.task.len()] == b'@'
            && text.ends_with(self.platform.as_str())
    }

    /// Splits at the last `@` when a platform (a system tuple) follows it: a task id may hold
    /// an `@` inside its arguments (`dep(user@host)`), a platform never does.
    pub fn parse(id: &str) -> Option<NodeId> {
        crate::platform::split_platform(id).map(|(task, platform)| NodeId::new(task, platform))
    }

    /// The log path relative to the checkout: `.ci/<sha7>/<platform>/<task>.log`. A `/` inside
    /// literal dependency arguments is escaped so every log stays one file in the lane folder.
    pub fn log_path(&self, sha_label: &str) -> String {
        format!(".ci/{sha_label}/{}/{}.log", self.platform, log_file_stem(&self.task))
    }
}

/// The longest file name most filesystems allow, in bytes.
const MAX_FILE_NAME: usize = 255;
/// The longest stem a log file may have: room for `.log`.
pub const MAX_LOG_STEM: usize = MAX_FILE_NAME - ".log".len();

/// A task id as a file name: `/`, `%` and control characters are percent-escaped, and an id whose escaped form would
/// make too long a file name keeps its first bytes and ends in `%~` and a hash of the whole id.
/// Escaping never yields `%~`, so a shortened stem cannot equal another id's plain one.
pub fn log_file_stem(task: &str) -> String {
    let escaped = escape(task);
    if escaped.len() <= MAX_LOG_STEM {
        return escaped;
    }
    let digest = sha2::Sha256::digest(task.as_bytes());
    let hash: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    let suffix = format!("%~{hash}");
    // Cut on a character boundary, never inside an escape.
    let mut out = String::with_capacity(MAX_LOG_STEM);
    for c in task.chars() {
        let piece = escape(c.encode_utf8(&mut [0; 4]));
        if out.len() + piece.len() + suffix.len() > MAX_LOG_STEM {
            break;
        }
        out.push_str(&piece);
    }
    out.push_str(&suffix);
    out
}

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '/' => out.push_str("%2F"),
            '%' => out.push_str("%25"),
            c if c.is_control() => {
                for byte in c.encode_utf8(&mut [0; 4]).bytes() {
                    out.push_str(&format!("%{byte:02X}"));
                }
            }
            c => out.push(c),
        }
    }
    out
}

impl std::fmt::Display for NodeId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}@{}", self.task, self.platform)
    }
}

/// A string that is not `<task>@<platform>`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a node id (task@platform)")]
pub struct BadNodeId(pub String);

impl std::str::FromStr for NodeId {
    type Err = BadNodeId;

    fn from_str(id: &str) -> Result<NodeId, BadNodeId> {
        NodeId::parse(id).ok_or_else(|| BadNodeId(id.to_string()))
    }
}

/// On the wire and in the ledger a node id is its `<task>@<platform>` string.
impl serde::Serialize for NodeId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for NodeId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<NodeId, D::Error> {
        let id = std::borrow::Cow::<'de, str>::deserialize(deserializer)?;
        id.parse().map_err(serde::de::Error::custom)
    }
}

/// Resolves what a user typed to one node id, the same way for every command: the exact id;
/// else the recipe's name (`deploy` for `deploy(prod)@p`; `deploy@p` on one platform), one
/// match used, several listed; else a unique suffix (`e2e@p` ≡ `ci::e2e@p`, `e2e` when only one
/// platform runs it).
pub fn resolve_node<'a>(ids: impl IntoIterator<Item = &'a String>, token: &str) -> Result<String, String> {
    let ids: Vec<&String> = ids.into_iter().collect();
    if ids.iter().any(|id| *id == token) {
        return Ok(token.to_string());
    }
    let wanted = NodeId::parse(token);
    let (name, platform) = match &wanted {
        Some(wanted) => (wanted.task.as_str(), Some(wanted.platform.as_str())),
        None => (token, None),
    };
    let on_platform = |node: &NodeId| platform.is_none_or(|p| p == node.platform);
    let listed = |many: &[&&String]| many.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ");
    // The recipe's name: the task without its arguments.
    let by_recipe: Vec<&&String> = ids
        .iter()
        .filter(|id| {
            NodeId::parse(id)
                .is_some_and(|node| on_platform(&node) && recipe_of(&node.task) == name && node.task != name)
        })
        .collect();
    match by_recipe.as_slice() {
        [one] => return Ok((**one).clone()),
        [] => {}
        many => {
            return Err(format!(
                "{token:?} names the recipe of several nodes ({}): name one of them",
                listed(many)
            ));
        }
    }
    let matches: Vec<&&String> = ids
        .iter()
        .filter(|id| {
            let Some(node) = NodeId::parse(id) else { return false };
            on_platform(&node) && (node.task == name || node.task.ends_with(&format!("::{name}")))
        })
        .collect();
    match matches.as_slice() {
        [one] => Ok((**one).clone()),
        [] => Err(format!(
            "no node matches {token:?} (nodes: {})",
            ids.iter().take(20).map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
        )),
        many => Err(format!("{token:?} is ambiguous ({}): use the full id", listed(many))),
    }
}

/// [`resolve_node`], where a recipe's name may also be one of its aliases, by namepath (`t` or
/// `t@p` for `test`, with `alias t := test`): what the token names as typed wins, else what its
/// alias names.
pub fn resolve_node_aliased<'a>(
    ids: impl IntoIterator<Item = &'a String>,
    token: &str,
    aliases: &std::collections::BTreeMap<String, String>,
) -> Result<String, String> {
    let ids: Vec<&String> = ids.into_iter().collect();
    let typed = resolve_node(ids.iter().copied(), token);
    let (name, platform) = match NodeId::parse(token) {
        Some(node) => (node.task, Some(node.platform)),
        None => (token.to_string(), None),
    };
    match (typed, aliases.get(&name)) {
        (Ok(id), _) => Ok(id),
        (Err(_), Some(target)) => {
            let unaliased = platform.map_or_else(|| target.clone(), |p| format!("{target}@{p}"));
            resolve_node(ids, &unaliased).map_err(|e| format!("{name:?} is an alias of {target:?}: {e}"))
        }
        (Err(e), None) => Err(e),
    }
}

/// A task's recipe: its id without the arguments (`ci::fmt(a,b)` → `ci::fmt`).
fn recipe_of(task: &str) -> &str {
    task.split_once('(').map_or(task, |(recipe, _)| recipe)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_module_prefix_in_the_file_name_and_the_platform_as_folder() {
        let id = NodeId::parse("ci::e2e@x86_64-linux").unwrap();
        assert_eq!(id.log_path("338eb01"), ".ci/338eb01/x86_64-linux/ci::e2e.log");
        assert_eq!(
            NodeId::new(SETUP, "aarch64-darwin").log_path("338eb01"),
            ".ci/338eb01/aarch64-darwin/_ci-setup.log"
        );
        assert_eq!(NodeId::parse("nope"), None);
        let e2e = NodeId::new("ci::e2e", "x86_64-linux");
        assert!(e2e.is("ci::e2e@x86_64-linux"));
        for other in [
            "ci::e2e@x86_64-linu",
            "ci::e2f@x86_64-linux",
            "ci::e2e-x86_64-linux",
            "",
            "ci::e2e@x86_64-linux@",
        ] {
            assert!(!e2e.is(other), "{other}");
        }
        assert_eq!(NodeId::new("fmt(a/b)", "x").log_path("s"), ".ci/s/x/fmt(a%2Fb).log");
        // Control characters never reach a file name.
        assert_eq!(log_file_stem("say(a\nb\tc\0\u{85})"), "say(a%0Ab%09c%00%C2%85)");
    }

    #[test]
    fn parses_and_formats_in_one_place() {
        let id: NodeId = "ci::e2e@x86_64-linux".parse().unwrap();
        assert_eq!(id, NodeId::new("ci::e2e", "x86_64-linux"));
        assert_eq!(id.to_string(), "ci::e2e@x86_64-linux");
        assert_eq!("e2e".parse::<NodeId>(), Err(BadNodeId("e2e".into())));
        assert_eq!("@x".parse::<NodeId>(), Err(BadNodeId("@x".into())));
        // An `@` inside arguments is the task's; only a platform after the last `@` splits.
        let at = NodeId::parse("dep(user@host,x)@aarch64-darwin").unwrap();
        assert_eq!(at, NodeId::new("dep(user@host,x)", "aarch64-darwin"));
        assert_eq!(NodeId::parse(&at.to_string()), Some(at));
        assert_eq!(NodeId::parse("dep(user@host,x)"), None);
        assert_eq!(NodeId::parse("dep(a@b-c)"), None);
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, r#""ci::e2e@x86_64-linux""#);
        assert_eq!(serde_json::from_str::<NodeId>(&json).unwrap(), id);
        assert!(serde_json::from_str::<NodeId>(r#""nope""#).is_err());
    }

    #[test]
    fn long_ids_are_shortened_readably_and_stay_distinct() {
        let plain = format!("fmt({})", "x".repeat(MAX_LOG_STEM - 5));
        assert_eq!(log_file_stem(&plain), plain, "an id that fits is kept whole");
        let one = format!("fmt({}1)", "x".repeat(300));
        let two = format!("fmt({}2)", "x".repeat(300));
        let (a, b) = (log_file_stem(&one), log_file_stem(&two));
        assert_ne!(a, b);
        assert!(a.len() <= MAX_LOG_STEM && b.len() <= MAX_LOG_STEM, "{}", a.len());
        assert!(a.starts_with("fmt(xxxx"), "{a}");
        assert_eq!(a, log_file_stem(&one), "the same id, the same name");
        // Escapes and multi-byte characters are never cut in half.
        for c in ["/", "é", "%", "日", "\n", "\u{85}"] {
            let id = c.repeat(400);
            let stem = log_file_stem(&id);
            assert!(stem.len() <= MAX_LOG_STEM, "{c}: {}", stem.len());
            let kept = stem.rsplit_once("%~").unwrap().0;
            assert_eq!(kept, escape(&c.repeat(kept.len() / escape(c).len())), "{c}");
        }
        // A plain id that looks like a shortened one is told apart by its escaped `%`.
        let lookalike = format!("{}%~{}", &a[..a.len() - 18], &a[a.len() - 16..]);
        assert_ne!(log_file_stem(&lookalike), a);
    }

    #[test]
    fn names_resolve_by_id_then_recipe_then_suffix() {
        let ids: Vec<String> = [
            "deploy(prod)@x86_64-linux",
            "watch(a)@x86_64-linux",
            "watch(b)@x86_64-linux",
            "ci::e2e@x86_64-linux",
            "ci::e2e@aarch64-linux",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(resolve_node(&ids, "deploy").unwrap(), "deploy(prod)@x86_64-linux");
        assert_eq!(resolve_node(&ids, "deploy@x86_64-linux").unwrap(), "deploy(prod)@x86_64-linux");
        let many = resolve_node(&ids, "watch").unwrap_err();
        assert!(many.contains("watch(a)@x86_64-linux") && many.contains("watch(b)@x86_64-linux"), "{many}");
        assert_eq!(resolve_node(&ids, "e2e@aarch64-linux").unwrap(), "ci::e2e@aarch64-linux");
        assert!(resolve_node(&ids, "e2e").unwrap_err().contains("ambiguous"));
        assert!(resolve_node(&ids, "nothing").unwrap_err().contains("no node matches"));
    }

    #[test]
    fn aliases_name_their_recipes_nodes() {
        let ids: Vec<String> =
            ["deploy(prod)@x86_64-linux", "ci::e2e@x86_64-linux", "ci::e2e@aarch64-linux", "t@x86_64-linux"]
                .iter()
                .map(|s| s.to_string())
                .collect();
        let aliases: std::collections::BTreeMap<String, String> =
            [("d", "deploy"), ("ci::e", "ci::e2e"), ("t", "gone"), ("x", "missing")]
                .into_iter()
                .map(|(a, t)| (a.to_string(), t.to_string()))
                .collect();
        let resolve = |token: &str| resolve_node_aliased(&ids, token, &aliases);
        assert_eq!(resolve("d").unwrap(), "deploy(prod)@x86_64-linux");
        assert_eq!(resolve("ci::e@aarch64-linux").unwrap(), "ci::e2e@aarch64-linux");
        assert!(resolve("ci::e").unwrap_err().contains("\"ci::e\" is an alias of \"ci::e2e\""));
        // What the token names as typed wins over an alias of the same name.
        assert_eq!(resolve("t").unwrap(), "t@x86_64-linux");
        assert!(resolve("x").unwrap_err().contains("alias of \"missing\""));
        assert!(resolve("nothing").unwrap_err().contains("no node matches"));
    }
}
