//! Node ids: `<task>@<platform>`. The same string is the GitHub status context, the log key and
//! the CLI selector.

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

    /// Splits at the last `@` (task ids never contain one, platforms never do).
    pub fn parse(id: &str) -> Option<NodeId> {
        let at = id.rfind('@')?;
        (at > 0 && at + 1 < id.len()).then(|| NodeId::new(&id[..at], &id[at + 1..]))
    }

    /// The log path relative to the checkout: `.ci/<sha7>/<platform>/<task>.log`. A `/` inside
    /// literal dependency arguments is escaped so every log stays one file in the lane folder.
    pub fn log_path(&self, sha_label: &str) -> String {
        format!(".ci/{sha_label}/{}/{}.log", self.platform, log_file_stem(&self.task))
    }
}

/// A task id as a file name: `/` and `%` are percent-escaped.
pub fn log_file_stem(task: &str) -> String {
    let mut out = String::with_capacity(task.len());
    for c in task.chars() {
        match c {
            '/' => out.push_str("%2F"),
            '%' => out.push_str("%25"),
            '\0' => out.push_str("%00"),
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
        assert_eq!(NodeId::new("fmt(a/b)", "x").log_path("s"), ".ci/s/x/fmt(a%2Fb).log");
    }
}
