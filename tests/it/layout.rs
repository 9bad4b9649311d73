//! The layout is the architecture: a path says which process a line of code runs in, and the
//! sides do not reach into each other. This reads `src/` as text (every `crate::…` path, `use`
//! groups included) and fails on an import that crosses a wall, naming the file and the path.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Where a module runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Side {
    /// The `odu-runner` process.
    Runner,
    /// Links to runners, inside the server.
    Lane,
    /// The `odu serve` process.
    Server,
    /// The client processes and their faces.
    Client,
    /// The thin command entry points.
    Command,
    /// Shared by every process: the protocol, the trail, helper tools and small facts.
    Shared,
}

fn side_of(module: &str) -> Side {
    match module.split("::").next().unwrap_or("") {
        "runner" => Side::Runner,
        "lane" => Side::Lane,
        "server" => Side::Server,
        "client" => Side::Client,
        "command" | "cli" => Side::Command,
        _ => Side::Shared,
    }
}

/// Whether code on `from` may import a module on `to`.
fn allowed(from: Side, to: Side) -> bool {
    use Side::*;
    match (from, to) {
        (a, b) if a == b => true,
        (_, Shared) => true,
        // The server drives lanes; a lane's localhost runner leaves its scratch for the lane to
        // reap when it dies (the one contract between the two processes' code).
        (Server, Lane) | (Lane, Runner) => true,
        // Commands are entry points: they may start any side.
        (Command, _) => true,
        _ => false,
    }
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// `src/server/surface.rs` → `server::surface`; `src/lane/mod.rs` → `lane`.
fn module_of(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).unwrap().with_extension("");
    let parts: Vec<String> = rel.iter().map(|p| p.to_string_lossy().into_owned()).collect();
    let parts: Vec<&str> = parts.iter().map(String::as_str).filter(|p| *p != "mod").collect();
    parts.join("::")
}

/// Every module path the code names after `crate::`, outside unit tests.
fn imports(text: &str) -> BTreeSet<String> {
    let code = text.split("#[cfg(test)]").next().unwrap_or(text);
    let mut found = BTreeSet::new();
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for item in group[..end].split(',') {
                let head = item.trim().split("::").next().unwrap_or("").trim();
                if !head.is_empty() && head != "self" {
                    found.insert(head.to_string());
                }
            }
        } else {
            let name: String = rest.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
            if !name.is_empty() {
                found.insert(name);
            }
        }
    }
    found
}

#[test]
fn no_side_reaches_into_another() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.retain(|f| !f.starts_with(src.join("bin")) && f.file_name().is_some_and(|n| n != "main.rs"));
    files.sort();
    let mut crossings = Vec::new();
    for file in &files {
        let module = module_of(&src, file);
        let from = side_of(&module);
        for target in imports(&std::fs::read_to_string(file).unwrap()) {
            let to = side_of(&target);
            if !allowed(from, to) {
                crossings.push(format!("{} ({from:?}) uses crate::{target} ({to:?})", module));
            }
        }
    }
    assert!(crossings.is_empty(), "imports across the walls of the layout:\n{}", crossings.join("\n"));
}

#[test]
fn the_reader_of_imports_sees_paths_and_groups() {
    let found = imports(
        "use crate::trail::ledger;\nuse crate::{lane::LaneSpec, tool};\nfn f() { crate::server::x(); }\n#[cfg(test)]\nuse crate::client;",
    );
    assert_eq!(found.into_iter().collect::<Vec<_>>(), ["lane", "server", "tool", "trail"]);
}
