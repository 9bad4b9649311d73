//! Talking to `just`: its version and its JSON dump.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use crate::error::{CliError, CliResult};
use crate::tool::{self, ToolOutput};

const INSTALL: &str = "install just >= 1.57 (pip install rust-just, or cargo install just)";

fn not_on_path() -> CliError {
    CliError::refused(format!("just is not on PATH: {INSTALL}"))
}

/// Checks a `just --version` answer: new enough, or a refusal naming the version found.
fn check_version(out: ToolOutput) -> CliResult<String> {
    let line = out.stdout.trim().to_string();
    match parse_version(&line) {
        Some(v) if v >= MIN_JUST => Ok(line),
        Some(_) => Err(CliError::refused(format!("{line} is too old: odu needs just >= 1.57; {INSTALL}"))),
        None => Err(CliError::refused(format!("cannot read just's version from {line:?}: {INSTALL}"))),
    }
}

/// `just --dump --dump-format json` in `dir`, after checking just is new enough, for a process
/// that plans once (`odu dump`, `odu graph`, `odu protect`). The version check runs beside the
/// dump, so it costs no wall time. The dump, the longer of the two processes, starts first, in
/// the order a run's start uses (`server/start.rs`): each start waits for its child's `execve`.
/// Nothing is remembered: reading the justfile to know whether its dump could be kept, and
/// keeping a copy, serve only a server, which asks again.
pub fn dump(dir: &Path) -> CliResult<String> {
    let file = locate(None);
    let dumping = start_dump(None, dir, None);
    finish_dump(start_version_of(file, dir, None), dumping).map(|(dump, _)| dump)
}

/// just's version for [`finish_dump`] to check: known already, or being asked.
pub struct Version {
    /// The `just` that answers (first on the PATH it runs with), as it was when asked.
    file: Option<(std::path::PathBuf, odu_proto::FileStamp)>,
    asked: Result<String, std::io::Result<tool::Pending>>,
}

/// The version line a `just` file answered with, once it passed the check: a server asks
/// `just --version` once per `just` binary, not once per run (every run's start paid a process
/// for it). A file that changed in any way (another inode, size or mtime) is asked again.
static KNOWN: std::sync::Mutex<Option<(std::path::PathBuf, odu_proto::FileStamp, String)>> =
    std::sync::Mutex::new(None);

/// The `just` a tool started with `env` runs (first on its PATH), as it is now: what
/// [`start_dump`] and [`start_version_of`] are told.
pub fn locate(env: Option<&tool::Env>) -> Option<(PathBuf, odu_proto::FileStamp)> {
    let path_var = match env {
        Some(env) => env.get("PATH").map(std::ffi::OsString::from),
        None => std::env::var_os("PATH"),
    };
    tool::find_on_path(path_var.as_deref(), "just")
        .and_then(|path| Some((path.clone(), tool::file_stamp(&path)?)))
}

/// `just --version` of the `just` [`locate`] found, started early (it needs no justfile); not
/// started at all when this process already asked that very file.
pub fn start_version_of(
    file: Option<(PathBuf, odu_proto::FileStamp)>,
    dir: &Path,
    env: Option<&tool::Env>,
) -> Version {
    let known = file.as_ref().and_then(|(path, stamp)| {
        let known = KNOWN.lock().ok()?;
        let (known_path, known_stamp, line) = known.as_ref()?;
        (known_path == path && known_stamp == stamp).then(|| line.clone())
    });
    match known {
        Some(line) => Version { file, asked: Ok(line) },
        None => Version { file, asked: Err(tool::Pending::start("just", &["--version"], dir, env)) },
    }
}

/// A dump of a folder's justfile: remembered, or started (`just --dump`) ahead of the checks
/// that decide whether it is wanted ([`start_dump`]); [`finish_dump`] takes it.
pub struct Dumping {
    dir: PathBuf,
    /// What it is made from, when that is the justfile's own bytes: kept for the next dump.
    inputs: Option<DumpInputs>,
    started: Result<Started, ()>,
}

enum Started {
    Remembered(String),
    Running(tool::Pending),
}

impl Dumping {
    /// The folder it dumps.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// Starts the dump of `dir`'s justfile, unless this process remembers it ([`DumpInputs`]).
/// `just` is the `just` file that answers ([`locate`]), part of what a remembered dump was made
/// from; without it the dump is neither looked for among the remembered ones nor kept.
/// Dropped unfinished, its process is ended and reaped.
pub fn start_dump(
    just: Option<&(PathBuf, odu_proto::FileStamp)>,
    dir: &Path,
    env: Option<&tool::Env>,
) -> Dumping {
    let inputs = just.and_then(|just| DumpInputs::of(just, dir, env));
    let started = match inputs.as_ref().and_then(DumpInputs::remembered) {
        Some(dump) => Ok(Started::Remembered(dump)),
        None => tool::Pending::start("just", &["--dump", "--dump-format", "json"], dir, env)
            .map(Started::Running)
            .map_err(drop),
    };
    Dumping { dir: dir.to_path_buf(), inputs, started }
}

/// The dump [`start_dump`] started and just's version line, once the version passed its check.
pub fn finish_dump(version: Version, dumping: Dumping) -> CliResult<(String, String)> {
    let Version { file, asked } = version;
    let asking = match asked {
        Ok(line) => Ok(line),
        Err(pending) => Err(pending.map_err(|_| not_on_path())?),
    };
    let version = |asking: Result<String, tool::Pending>| -> CliResult<String> {
        match asking {
            Ok(line) => Ok(line),
            Err(pending) => {
                let line = check_version(pending.finish().map_err(|_| not_on_path())?)?;
                if let (Some((path, stamp)), Ok(mut known)) = (&file, KNOWN.lock()) {
                    *known = Some((path.clone(), *stamp, line.clone()));
                }
                Ok(line)
            }
        }
    };
    let Dumping { dir, inputs, started } = dumping;
    // Both are `Pending`: whichever way this returns, neither is left a zombie in the server.
    let dump = match started.map_err(|()| not_on_path())? {
        Started::Remembered(dump) => return Ok((dump, version(asking)?)),
        Started::Running(dump) => dump,
    };
    let version = version(asking)?;
    let out = dump.finish().map_err(|_| not_on_path())?;
    if out.success {
        if let Some(inputs) = inputs {
            inputs.remember(&out.stdout);
        }
        return Ok((out.stdout, version));
    }
    let message = out.stderr.trim();
    if message.to_ascii_lowercase().contains("no justfile found") {
        return Err(CliError::refused(format!(
            "no justfile in {} or above it: odu runs a just recipe DAG; add a justfile whose root recipe carries [metadata(\"ci\")]",
            dir.display()
        )));
    }
    Err(rejected(&out.stderr))
}

/// The version line this process knows, for [`tool::found`].
pub fn found_version() -> Option<(PathBuf, odu_proto::FileStamp, String)> {
    KNOWN.lock().ok()?.clone()
}

/// A dump and what it was made from ([`DumpInputs`]), as a client hands it to its server.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct FoundDump {
    just: (PathBuf, odu_proto::FileStamp),
    just_env: Vec<(String, String)>,
    justfile: Vec<u8>,
    source: String,
    dump: String,
}

/// The dump this process keeps, for [`tool::found`].
pub fn found_dump() -> Option<FoundDump> {
    let dumped = DUMPED.lock().ok()?;
    let (inputs, dump) = dumped.as_ref()?;
    Some(FoundDump {
        just: inputs.just.clone(),
        just_env: inputs.just_env.clone(),
        justfile: inputs.justfile.clone(),
        source: inputs.source.clone(),
        dump: dump.clone(),
    })
}

/// Takes a version line and a dump a client found, each where this process has none. The line
/// is given for its `just` file only while that file keeps its stamp; the dump only for a
/// justfile of the same bytes, dumped by the same `just` with the same `JUST_*` variables.
pub fn adopt(version: Option<(PathBuf, odu_proto::FileStamp, String)>, dump: Option<FoundDump>) {
    if let (Some(found), Ok(mut known)) = (version, KNOWN.lock())
        && known.is_none()
    {
        *known = Some(found);
    }
    if let Some(FoundDump { just, just_env, justfile, source, dump }) = dump {
        DumpInputs { just, just_env, justfile, source }.keep(dump, false);
    }
}

/// Everything a justfile's JSON dump is a function of, when that is the justfile's own bytes:
/// the `just` binary (as stamped), its `JUST_*` settings from the environment, and the one
/// justfile it finds in the folder, which names no other file. The dump also names the folder
/// (its `source`, the justfile's path), which differs from run to run: each run dumps a fresh
/// snapshot folder.
struct DumpInputs {
    just: (PathBuf, odu_proto::FileStamp),
    just_env: Vec<(String, String)>,
    justfile: Vec<u8>,
    /// The dump's `source` for this folder, as just writes it (a JSON string).
    source: String,
}

/// The last dump this server made of a self-contained justfile, and what it was made from
/// ([`DumpInputs`]): a server's runs mostly dump the same justfile, and each dump is a process
/// in series with every run's start.
static DUMPED: std::sync::Mutex<Option<(DumpInputs, String)>> = std::sync::Mutex::new(None);

impl DumpInputs {
    /// What a dump in `dir` would be made from; `None` when it may read more than the one
    /// justfile, or when what just would read is not certain (then the dump is made).
    fn of(just: &(PathBuf, odu_proto::FileStamp), dir: &Path, env: Option<&tool::Env>) -> Option<DumpInputs> {
        let name = sole_justfile(dir)?;
        let path = dir.join(&name);
        // A regular file: a link could lead out of the checkout, to a file that changes.
        if !std::fs::symlink_metadata(&path).ok()?.file_type().is_file() {
            return None;
        }
        let justfile = std::fs::read(&path).ok()?;
        if may_name_other_files(&justfile) {
            return None;
        }
        // just names the justfile by its working directory, which the kernel gives resolved.
        let source = serde_json::to_string(std::fs::canonicalize(dir).ok()?.join(&name).to_str()?).ok()?;
        let just_env = match env {
            Some(env) => env
                .iter()
                .filter(|(k, _)| k.starts_with("JUST_"))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            None => {
                let mut vars: Vec<_> = std::env::vars().filter(|(k, _)| k.starts_with("JUST_")).collect();
                vars.sort();
                vars
            }
        };
        Some(DumpInputs { just: just.clone(), just_env, justfile, source })
    }

    fn same_as(&self, other: &DumpInputs) -> bool {
        self.just == other.just && self.just_env == other.just_env && self.justfile == other.justfile
    }

    /// The dump of the same inputs made before, its `source` made this folder's.
    fn remembered(&self) -> Option<String> {
        let dumped = DUMPED.lock().ok()?;
        let (inputs, dump) = dumped.as_ref()?;
        if !inputs.same_as(self) {
            return None;
        }
        let (field, own) = (source_field(&inputs.source), source_field(&self.source));
        let at = memchr::memmem::find(dump.as_bytes(), field.as_bytes())?;
        // `field` was found in `dump`: the dump is at least that long.
        let mut made = String::with_capacity(dump.len() - field.len() + own.len());
        made.push_str(&dump[..at]);
        made.push_str(&own);
        made.push_str(&dump[at + field.len()..]);
        Some(made)
    }

    /// Keeps `dump` for the next dump of the same inputs, if its `source` is where these inputs
    /// expected it, once (so that a later run can put its own folder in its place).
    fn remember(self, dump: &str) {
        self.keep(dump.to_string(), true);
    }

    /// [`DumpInputs::remember`], over a dump already kept only when `replace`.
    fn keep(self, dump: String, replace: bool) {
        // memchr's search: the str pattern's walked a 1,000-recipe dump at a fifth of `odu
        // dump`'s own instructions (callgrind).
        let field = source_field(&self.source);
        let mut found = memchr::memmem::find_iter(dump.as_bytes(), field.as_bytes());
        if found.next().is_some()
            && found.next().is_none()
            && let Ok(mut dumped) = DUMPED.lock()
            && (replace || dumped.is_none())
        {
            *dumped = Some((self, dump));
        }
    }
}

/// `"source":"<path>"` as just's compact JSON spells it; a recipe line with the same text would
/// appear escaped (`\"source\"`), so it is found once.
fn source_field(source: &str) -> String {
    format!("\"source\":{source}")
}

/// The one entry of `dir` just would take for its justfile (`justfile` or `.justfile`, in any
/// case); `None` when there is none or more than one (just errs, or looks in the parent), or
/// when a name is not ASCII: just matches names caselessly by Unicode rules, under which
/// `ﬁ` or `ſ` can spell `justfile` too.
fn sole_justfile(dir: &Path) -> Option<String> {
    let mut found = None;
    for entry in std::fs::read_dir(dir).ok()? {
        let name = entry.ok()?.file_name().into_string().ok()?;
        if !name.is_ascii() {
            return None;
        }
        if name.eq_ignore_ascii_case("justfile") || name.eq_ignore_ascii_case(".justfile") {
            if found.is_some() {
                return None;
            }
            found = Some(name);
        }
    }
    found
}

/// Whether a justfile may make just read another file while it parses it (`import`, `mod`):
/// any line that, past leading punctuation and blanks, starts with `import`, `mod` or
/// `include`, or any line with an attribute bracket that contains `import` or `mod`. Broad on
/// purpose: a recipe line caught by it only costs the dump a process.
fn may_name_other_files(justfile: &[u8]) -> bool {
    let has = |line: &[u8], word: &[u8]| line.windows(word.len()).any(|w| w == word);
    justfile.split(|&b| b == b'\n').any(|line| {
        let start = line.iter().position(|b| b.is_ascii_alphanumeric()).unwrap_or(line.len());
        let rest = &line[start..];
        rest.starts_with(b"import")
            || rest.starts_with(b"mod")
            || rest.starts_with(b"include")
            || (line.iter().any(|&b| b == b'[' || b == b']') && (has(line, b"import") || has(line, b"mod")))
    })
}

/// just's own account of what is wrong with the justfile (its `error:` line, then the source
/// line and caret), kept as just printed it.
fn rejected(stderr: &str) -> CliError {
    CliError::refused("just rejected the justfile: fix what it says below, then run again")
        .with_detail(stderr.trim_start_matches('\n'))
}

/// `just --dump`, the justfile as text, in `dir`; `None` when just cannot give it.
pub fn text_dump(dir: &Path, env: Option<&tool::Env>) -> Option<String> {
    let out = tool::finish(tool::start_with("just", &["--dump"], dir, env).ok()?).ok()?;
    out.success.then_some(out.stdout)
}

/// The smallest `just` that dumps child-module dependencies with their paths.
pub const MIN_JUST: (u64, u64) = (1, 57);

/// `just 1.59.0` → (1, 59).
pub fn parse_version(text: &str) -> Option<(u64, u64)> {
    let version = text.split_whitespace().find(|w| w.chars().next().is_some_and(|c| c.is_ascii_digit()))?;
    let mut parts = version.split('.');
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

/// The variables of one module of a justfile, in the order odu evaluates them once per lane.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ModuleVariables {
    /// `""` for the root module, else its module path (`a::b`).
    pub path: String,
    /// Private variables (`_x`, `[private]`), which `just --evaluate` does not print, and every
    /// variable they refer to, dependencies first: each is evaluated on its own
    /// (`just --evaluate NAME`) once the ones it refers to are fixed.
    pub one_by_one: Vec<String>,
    /// The public variables left, evaluated together by one `just --evaluate [PATH]`.
    pub together: BTreeSet<String>,
}

impl ModuleVariables {
    /// `name` as `--evaluate` and overrides spell it: `a::b::name`, or `name` in the root.
    pub fn qualified(&self, name: &str) -> String {
        if self.path.is_empty() { name.to_string() } else { format!("{}::{name}", self.path) }
    }
}

/// Why a justfile's variables are left to each node: a setting under which one evaluation
/// given to every node would not be what `just` does.
pub fn per_node_reason(settings: &serde_json::Value, path: &str) -> Option<String> {
    let at = if path.is_empty() { String::new() } else { format!(" in module {path}") };
    if settings.get("lazy").and_then(serde_json::Value::as_bool) == Some(true) {
        return Some(format!(
            "`set lazy`{at}: just evaluates only the variables the recipes it runs use, so each node evaluates its own"
        ));
    }
    if settings.get("lists").and_then(serde_json::Value::as_bool) == Some(true) {
        return Some(format!("`set lists`{at}: a list value cannot be passed to a node as NAME=VALUE"));
    }
    None
}

/// What odu reads of a `just --dump --dump-format json` besides its recipes (which the plan
/// reads): each module's settings, variables and source file, and its modules. One parse
/// serves both [`DumpParts::variables`] and [`DumpParts::dotenv_uses`]; the recipes, most of a
/// dump, are skipped over rather than built into a tree of values.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(default)]
pub struct DumpParts {
    settings: serde_json::Value,
    #[serde(deserialize_with = "odu_core::plan::null_as_default")]
    assignments: BTreeMap<String, DumpAssignment>,
    source: Option<String>,
    #[serde(deserialize_with = "odu_core::plan::null_as_default")]
    modules: BTreeMap<String, DumpParts>,
}

/// One variable of a module, as the dump gives it.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(default)]
struct DumpAssignment {
    /// Absent: private (as if `[private]`).
    private: Option<bool>,
    value: serde_json::Value,
}

impl DumpParts {
    pub fn read(dump: &str) -> Result<DumpParts, String> {
        serde_json::from_str(dump).map_err(|e| format!("cannot read just's dump: {e}"))
    }

    /// The variables of every module, root first. `Err` names the reason they must be left to
    /// each node.
    pub fn variables(&self) -> Result<Vec<ModuleVariables>, String> {
        let mut modules = Vec::new();
        collect_modules(self, String::new(), &mut modules)?;
        Ok(modules)
    }

    /// Every module that loads a dotenv file from disk (`set dotenv-load`, `dotenv-required`,
    /// `dotenv-override`, `dotenv-filename` or `dotenv-path`; a `dotenv-command` reads none).
    pub fn dotenv_uses(&self) -> Vec<DotenvUse> {
        let mut uses = Vec::new();
        collect_dotenv(self, &mut uses);
        uses
    }
}

/// Reads the variables of every module of a `just --dump --dump-format json`, root first.
/// `Err` names the reason they must be left to each node.
pub fn variables_of(dump: &str) -> Result<Vec<ModuleVariables>, String> {
    DumpParts::read(dump)?.variables()
}

fn collect_modules(module: &DumpParts, path: String, out: &mut Vec<ModuleVariables>) -> Result<(), String> {
    if let Some(reason) = per_node_reason(&module.settings, &path) {
        return Err(reason);
    }
    let mut private = BTreeSet::new();
    let mut public = BTreeSet::new();
    let mut refers: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (name, assignment) in &module.assignments {
        if assignment.private.unwrap_or(true) {
            private.insert(name.clone())
        } else {
            public.insert(name.clone())
        };
        let mut names = BTreeSet::new();
        variable_references(&assignment.value, &mut names);
        names.retain(|n| module.assignments.contains_key(n) && n != name);
        refers.insert(name.clone(), names);
    }
    let mut one_by_one = Vec::new();
    let mut seen = BTreeSet::new();
    for name in &private {
        dependencies_first(name, &refers, &mut seen, &mut one_by_one);
    }
    let together = public.into_iter().filter(|n| !seen.contains(n)).collect();
    out.push(ModuleVariables { path: path.clone(), one_by_one, together });
    for (name, child) in &module.modules {
        let child_path = if path.is_empty() { name.clone() } else { format!("{path}::{name}") };
        collect_modules(child, child_path, out)?;
    }
    Ok(())
}

/// Every `["variable", NAME]` inside an expression of the dump.
fn variable_references(expression: &serde_json::Value, names: &mut BTreeSet<String>) {
    if let Some(items) = expression.as_array() {
        if let [kind, name] = items.as_slice()
            && kind.as_str() == Some("variable")
            && let Some(name) = name.as_str()
        {
            names.insert(name.to_string());
            return;
        }
        for item in items {
            variable_references(item, names);
        }
    }
}

fn dependencies_first(
    name: &str,
    refers: &BTreeMap<String, BTreeSet<String>>,
    seen: &mut BTreeSet<String>,
    order: &mut Vec<String>,
) {
    if !seen.insert(name.to_string()) {
        return;
    }
    for dependency in refers.get(name).into_iter().flatten() {
        dependencies_first(dependency, refers, seen, order);
    }
    order.push(name.to_string());
}

/// Reads `just --evaluate` in its own format (`name := "value"`, one per line, the value quoted
/// with `\\`, `\"`, `\n`, `\r` and `\t` escaped). Anything else is an error: odu would rather
/// leave the variables to each node than pass a value it misread.
pub fn parse_evaluate(text: &str) -> Result<BTreeMap<String, String>, String> {
    let mut values = BTreeMap::new();
    for line in text.lines() {
        let (name, quoted) =
            line.split_once(" := ").ok_or_else(|| format!("unexpected line in just --evaluate: {line:?}"))?;
        let name = name.trim_end();
        let inner = quoted
            .strip_prefix('"')
            .and_then(|q| q.strip_suffix('"'))
            .ok_or_else(|| format!("variable {name} is not one quoted string in just --evaluate"))?;
        let mut value = String::with_capacity(inner.len());
        let mut chars = inner.chars();
        while let Some(c) = chars.next() {
            match c {
                '\\' => value.push(match chars.next() {
                    Some('\\') => '\\',
                    Some('"') => '"',
                    Some('n') => '\n',
                    Some('r') => '\r',
                    Some('t') => '\t',
                    other => return Err(format!("unknown escape \\{other:?} in variable {name}")),
                }),
                '"' => return Err(format!("an unescaped quote in variable {name}")),
                c => value.push(c),
            }
        }
        if name.is_empty() || values.insert(name.to_string(), value).is_some() {
            return Err(format!("unexpected line in just --evaluate: {line:?}"));
        }
    }
    Ok(values)
}

/// How one module of a justfile loads a dotenv file, as its dump's settings say.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DotenvUse {
    /// The module's directory (its justfile's), where just starts looking.
    pub dir: PathBuf,
    /// `set dotenv-path`: tried first, relative to `dir`.
    pub paths: Vec<String>,
    /// `set dotenv-filename`, else `.env`: looked for in `dir` and every directory above it.
    pub filenames: Vec<String>,
}

fn collect_dotenv(module: &DumpParts, uses: &mut Vec<DotenvUse>) {
    let settings = &module.settings;
    let strings = |key: &str| -> Vec<String> {
        match &settings[key] {
            serde_json::Value::String(one) => vec![one.clone()],
            serde_json::Value::Array(many) => {
                many.iter().filter_map(|v| v.as_str().map(str::to_string)).collect()
            }
            _ => Vec::new(),
        }
    };
    let flag = |key: &str| settings[key].as_bool() == Some(true);
    let paths = strings("dotenv_path");
    let filenames = strings("dotenv_filename");
    let loads = flag("dotenv_load") || flag("dotenv_required") || flag("dotenv_override");
    let command = !strings("dotenv_command").is_empty();
    let dir = module.source.as_deref().and_then(|s| Path::new(s).parent()).map(Path::to_path_buf);
    if let Some(dir) = dir
        && !command
        && (loads || !paths.is_empty() || !filenames.is_empty())
    {
        let filenames = if filenames.is_empty() { vec![".env".to_string()] } else { filenames };
        uses.push(DotenvUse { dir, paths, filenames });
    }
    for child in module.modules.values() {
        collect_dotenv(child, uses);
    }
}

impl DotenvUse {
    /// The dotenv file this module would load in the tree at `top`, relative to it, if any
    /// (`dir` is read relative to `dump_top`, the tree the dump was made in). Directories
    /// above `top` are not looked at: they are not the repository's.
    pub fn found_in(&self, dump_top: &Path, top: &Path) -> Option<PathBuf> {
        let relative = self.dir.strip_prefix(dump_top).ok()?;
        for path in &self.paths {
            if Path::new(path).is_absolute() {
                continue;
            }
            if top.join(relative).join(path).is_file() {
                return Some(relative.join(path));
            }
        }
        for dir in relative.ancestors() {
            for name in &self.filenames {
                if top.join(dir).join(name).is_file() {
                    return Some(dir.join(name));
                }
            }
        }
        None
    }
}

#[cfg(test)]
mod variable_tests {
    use super::*;

    /// The dump and just's version line in `dir`, with just found on (and run in) `env`, as a
    /// server asks them: a dump of a justfile that names no other file is remembered
    /// ([`start_dump`]), just's version once per `just` binary.
    fn dump_and_version(dir: &Path, env: Option<&tool::Env>) -> CliResult<(String, String)> {
        let file = locate(env);
        let dumping = start_dump(file.as_ref(), dir, env);
        finish_dump(start_version_of(file, dir, env), dumping)
    }

    #[test]
    fn a_just_binary_is_asked_its_version_once_until_it_changes() {
        use std::os::unix::fs::PermissionsExt;
        let bin = tempfile::tempdir().unwrap();
        let asked = bin.path().join("asked");
        let just = bin.path().join("just");
        let script = |version: &str| {
            format!(
                "#!/bin/sh\nif [ \"$1\" = --version ]; then echo x >> '{}'; echo 'just {version}'; else echo '{{}}'; fi\n",
                asked.display()
            )
        };
        std::fs::write(&just, script("1.59.0")).unwrap();
        std::fs::set_permissions(&just, std::fs::Permissions::from_mode(0o755)).unwrap();
        let env: tool::Env = [("PATH".to_string(), format!("{}:/usr/bin:/bin", bin.path().display()))].into();
        let times = || std::fs::read_to_string(&asked).map(|t| t.lines().count()).unwrap_or(0);
        let dir = bin.path();
        for _ in 0..3 {
            let (_, version) = dump_and_version(dir, Some(&env)).unwrap();
            assert_eq!(version, "just 1.59.0");
        }
        assert_eq!(times(), 1, "asked once");
        // Rewritten (another size and mtime): asked again, and its answer checked again.
        std::fs::write(&just, script("1.2.0")).unwrap();
        let refused = dump_and_version(dir, Some(&env)).unwrap_err();
        assert!(refused.message.contains("too old"), "{}", refused.message);
        assert_eq!(times(), 2);
    }

    #[test]
    fn a_self_contained_justfile_is_dumped_once_and_anything_else_every_time() {
        use std::os::unix::fs::PermissionsExt;
        let bin = tempfile::tempdir().unwrap();
        let dumps = bin.path().join("dumps");
        let just = bin.path().join("just");
        let script = format!(
            "#!/bin/sh\nif [ \"$1\" = --version ]; then echo 'just 1.59.0'; exit; fi\necho x >> '{}'\nprintf '{{\"source\":\"%s/%s\",\"text\":\"%s\"}}' \"$(pwd -P)\" \"$(ls -A | grep -i justfile)\" \"$(head -c 40 [Jj]ustfile | tr -d '\\n\"')\"\n",
            dumps.display()
        );
        std::fs::write(&just, script).unwrap();
        std::fs::set_permissions(&just, std::fs::Permissions::from_mode(0o755)).unwrap();
        let mut env: tool::Env =
            [("PATH".to_string(), format!("{}:/usr/bin:/bin", bin.path().display()))].into();
        let times = || std::fs::read_to_string(&dumps).map(|t| t.lines().count()).unwrap_or(0);
        let root = tempfile::tempdir().unwrap();
        let folder = |name: &str, files: &[(&str, &str)]| {
            let dir = root.path().join(name);
            std::fs::create_dir(&dir).unwrap();
            for (file, text) in files {
                std::fs::write(dir.join(file), text).unwrap();
            }
            dir
        };
        let dump = |dir: &Path, env: &tool::Env| dump_and_version(dir, Some(env)).unwrap().0;
        let plain = "ci:\n    true\n";
        let (one, two) = (folder("one", &[("justfile", plain)]), folder("two", &[("justfile", plain)]));
        dump(&one, &env);
        let again = dump(&two, &env);
        assert_eq!(times(), 1, "the same justfile in another folder is not dumped again");
        let two_source =
            format!("\"source\":\"{}/justfile\"", std::fs::canonicalize(&two).unwrap().display());
        assert!(again.contains(&two_source), "names the folder it is for: {again}");
        env.insert("JUST_UNSTABLE".into(), "1".into());
        dump(&two, &env);
        assert_eq!(times(), 2, "just's settings changed");
        let other = folder("other", &[("Justfile", "ci:\n    false\n")]);
        assert!(dump(&other, &env).contains("false"));
        assert_eq!(times(), 3, "another justfile");
        let imports = folder("imports", &[("justfile", "import 'x.just'\nci:\n")]);
        let module = folder("module", &[("justfile", "[private] mod x\nci:\n")]);
        let linked = folder("linked", &[]);
        std::os::unix::fs::symlink(one.join("justfile"), linked.join("justfile")).unwrap();
        let two_names = folder("two-names", &[("justfile", plain), (".JUSTFILE", plain)]);
        for dir in [&imports, &module, &linked, &two_names] {
            let before = times();
            dump(dir, &env);
            dump(dir, &env);
            assert_eq!(times(), before + 2, "{} is dumped every time", dir.display());
        }
    }

    #[test]
    fn evaluate_output_is_read_back_exactly() {
        let printed =
            "a     := \"x\\\\y \\\"q\\\" 'c'\\nnext\\ttab\\r\"\nempty := \"\"\nwide  := \"é := \u{1}\"\n";
        let values = parse_evaluate(printed).unwrap();
        assert_eq!(values["a"], "x\\y \"q\" 'c'\nnext\ttab\r");
        assert_eq!(values["empty"], "");
        assert_eq!(values["wide"], "é := \u{1}", "other control characters come raw");
        for odd in ["a := [\"x\", \"y\"]", "a := \"\\q\"", "a = \"x\"", "a := \"x\" \"y\""] {
            assert!(parse_evaluate(odd).is_err(), "{odd}");
        }
    }

    #[test]
    fn private_variables_and_what_they_use_are_evaluated_one_by_one_dependencies_first() {
        let dump = serde_json::json!({
            "settings": {"lazy": false, "lists": false},
            "assignments": {
                "stamp": {"private": false, "value": ["evaluate", "date"]},
                "_b": {"private": true, "value": ["concatenate", ["variable", "_a"], ["variable", "stamp"]]},
                "_a": {"private": true, "value": ["variable", "base"]},
                "base": {"private": false, "value": "x"},
                "other": {"private": false, "value": ["call", "uuid"]}
            },
            "modules": {"pkg": {"settings": {}, "assignments": {"w": {"private": false, "value": "1"}}, "modules": {}}}
        });
        let modules = variables_of(&dump.to_string()).unwrap();
        assert_eq!(modules[0].one_by_one, ["base", "_a", "stamp", "_b"]);
        assert_eq!(modules[0].together, BTreeSet::from(["other".to_string()]));
        assert_eq!(modules[1].path, "pkg");
        assert_eq!(modules[1].qualified("w"), "pkg::w");
    }

    #[test]
    fn lazy_and_list_settings_leave_variables_to_each_node() {
        let lazy = serde_json::json!({"settings": {"lazy": true}, "assignments": {}});
        assert!(variables_of(&lazy.to_string()).unwrap_err().contains("set lazy"));
        let lists = serde_json::json!({"settings": {}, "assignments": {}, "modules": {"m": {"settings": {"lists": true}}}});
        assert!(variables_of(&lists.to_string()).unwrap_err().contains("set lists` in module m"));
    }

    #[test]
    fn a_dumps_recipes_are_skipped_and_its_null_fields_read_as_empty() {
        let dump = serde_json::json!({
            "source": null,
            "settings": null,
            "assignments": null,
            "modules": null,
            "recipes": {"a": {"body": [["echo ", ["variable", "x"]]], "dependencies": [], "parameters": []}}
        });
        let parts = DumpParts::read(&dump.to_string()).unwrap();
        assert_eq!(parts.variables().unwrap(), [ModuleVariables::default()]);
        assert!(parts.dotenv_uses().is_empty());
        assert!(DumpParts::read("{\"modules\": [1]}").unwrap_err().starts_with("cannot read just's dump"));
    }

    #[test]
    fn dotenv_settings_name_where_just_looks() {
        let dump = serde_json::json!({
            "source": "/w/justfile",
            "settings": {"dotenv_load": true, "dotenv_filename": null, "dotenv_path": null, "dotenv_command": []},
            "modules": {
                "a": {"source": "/w/a/mod.just", "settings": {"dotenv_path": "cfg/x.env"}},
                "b": {"source": "/w/b/mod.just", "settings": {"dotenv_load": true, "dotenv_command": ["vault env"]}},
                "c": {"source": "/w/c/mod.just", "settings": {}}
            }
        });
        let uses = DumpParts::read(&dump.to_string()).unwrap().dotenv_uses();
        assert_eq!(uses.len(), 2, "{uses:?}");
        assert_eq!(uses[0], DotenvUse { dir: "/w".into(), paths: vec![], filenames: vec![".env".into()] });
        assert_eq!(uses[1].paths, ["cfg/x.env"]);
        assert_eq!(uses[1].dir, PathBuf::from("/w/a"));
    }

    #[test]
    fn a_rejection_keeps_justs_lines_as_it_printed_them() {
        let stderr = "error: recipe `ci` has unknown dependency `nosuch`\n ——▶ justfile:2:5\n  │\n2 │ ci: nosuch\n  │     ^^^^^^\n";
        let e = super::rejected(stderr);
        assert!(e.message.starts_with("just rejected the justfile"), "{}", e.message);
        assert_eq!(
            e.detail,
            [
                "error: recipe `ci` has unknown dependency `nosuch`",
                " ——▶ justfile:2:5",
                "  │",
                "2 │ ci: nosuch",
                "  │     ^^^^^^"
            ]
        );
    }
}
