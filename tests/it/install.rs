//! How odu reaches people and hosts: `--version`, shell completions and the man page, the
//! statically linked runner, the flake, and `cargo install`.

use std::path::Path;
use std::process::Command;

use crate::repo::odu_bin;

fn runner_bin() -> &'static str {
    env!("CARGO_BIN_EXE_odu-runner")
}

fn stdout_of(command: &mut Command) -> String {
    let out = command.output().expect("run the command");
    assert!(out.status.success(), "{command:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("utf-8")
}

/// The commit this source tree is at, when it is the top of a git checkout.
fn source_commit() -> Option<String> {
    let dir = env!("CARGO_MANIFEST_DIR");
    let git = |args: &[&str]| {
        Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let top = git(&["rev-parse", "--show-toplevel"])?;
    (Path::new(&top).canonicalize().ok()? == Path::new(dir).canonicalize().ok()?)
        .then(|| git(&["rev-parse", "HEAD"]))?
}

#[test]
fn both_binaries_say_their_version_commit_and_protocol() {
    let protocol = odu_proto::PROTOCOL_VERSION;
    let version = env!("CARGO_PKG_VERSION");
    let expected = match source_commit() {
        Some(rev) => format!("{version} (commit {rev}, protocol {protocol})"),
        None => format!("{version} (protocol {protocol})"),
    };
    let odu = stdout_of(Command::new(odu_bin()).arg("--version"));
    assert_eq!(odu.trim(), format!("odu {expected}"));
    let runner = stdout_of(Command::new(runner_bin()).arg("--version"));
    assert_eq!(runner.trim(), format!("odu-runner {expected}"));
    assert_eq!(odu::version::protocol_of(&runner), Some(protocol));
}

/// What bash offers for the words of `line` (the last one being completed), through the
/// function `odu completions bash` registers for odu, as bash's programmable completion calls it.
fn bash_completes(script: &Path, words: &[&str]) -> Vec<String> {
    crate::harness::require_tool("bash");
    let quoted: Vec<String> = words.iter().map(|w| format!("'{w}'")).collect();
    let line = words.join(" ");
    let program = format!(
        r#"source '{script}'
spec=$(complete -p odu) || exit 3
fn=${{spec##*-F }}; fn=${{fn%% *}}
COMP_WORDS=({words}); COMP_CWORD={cword}; COMP_LINE='{line}'; COMP_POINT=${{#COMP_LINE}}
"$fn" odu "${{COMP_WORDS[COMP_CWORD]}}" "${{COMP_WORDS[COMP_CWORD-1]}}"
printf '%s\n' "${{COMPREPLY[@]}}""#,
        script = script.display(),
        words = quoted.join(" "),
        cword = words.len() - 1,
    );
    let out = stdout_of(Command::new("bash").arg("--norc").arg("-c").arg(program));
    out.lines().map(str::to_string).collect()
}

#[test]
fn bash_completes_commands_and_their_flags() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("odu.bash");
    std::fs::write(&script, stdout_of(Command::new(odu_bin()).args(["completions", "bash"]))).unwrap();
    let commands = bash_completes(&script, &["odu", "ru"]);
    assert!(commands.iter().any(|c| c == "run"), "{commands:?}");
    assert!(commands.iter().all(|c| c.starts_with("ru")), "{commands:?}");
    assert_eq!(bash_completes(&script, &["odu", "run", "--pl"]), ["--platform"]);
    assert_eq!(bash_completes(&script, &["odu", "completions", "fi"]), ["fish"]);
    for shell in ["zsh", "fish", "elvish", "powershell"] {
        let text = stdout_of(Command::new(odu_bin()).args(["completions", shell]));
        assert!(text.contains("platform"), "{shell}: {text}");
    }
}

/// `man -l` renders a page file (plain text when its output is not a terminal).
fn man_renders(page: &Path) -> String {
    crate::harness::require_tool("man");
    stdout_of(Command::new("man").arg("-l").arg(page).env("MANWIDTH", "100").env("MANPAGER", "cat"))
}

#[test]
fn man_renders_the_page_and_one_page_per_command() {
    let dir = tempfile::tempdir().unwrap();
    let page = dir.path().join("odu.1");
    std::fs::write(&page, stdout_of(Command::new(odu_bin()).arg("man"))).unwrap();
    let text = man_renders(&page);
    assert!(text.contains("NAME") && text.contains("A CI runner you attach to"), "{text}");
    assert!(text.contains("odu-run(1)") && text.contains("--version"), "{text}");
    let pages = dir.path().join("pages");
    std::fs::create_dir(&pages).unwrap();
    let listed = stdout_of(Command::new(odu_bin()).arg("man").arg("--dir").arg(&pages));
    assert!(listed.lines().any(|l| l.ends_with("/odu-run.1")), "{listed}");
    let run = man_renders(&pages.join("odu-run.1"));
    assert!(run.contains("--platform") && run.contains("Only run these platforms"), "{run}");
}

/// The runner odu uploads to hosts, built as `scripts/build-runner.sh` builds it (a no-op when
/// it is fresh: scripts/test.sh builds it before the suite).
fn static_runner() -> std::path::PathBuf {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/build-runner.sh");
    // In the environment of a shell, not a test's: what cargo sets for a test (the package's
    // variables, OUT_DIR, ODU_GIT_REV) is watched by build scripts (ring's, odu's own), and a
    // difference rebuilds the runner and everything under it, minutes of both cores beside the
    // other tests, instead of finding the build the test script made before the suite.
    let mut command = Command::new("bash");
    command.arg(script);
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        let from_cargo =
            ["CARGO_PKG_", "CARGO_BIN_EXE_", "CARGO_MANIFEST_"].iter().any(|p| name.starts_with(p))
                || matches!(&*name, "CARGO_CRATE_NAME" | "CARGO_PRIMARY_PACKAGE" | "CARGO_TARGET_TMPDIR")
                || matches!(&*name, "OUT_DIR" | "ODU_GIT_REV");
        if from_cargo {
            command.env_remove(&*name);
        }
    }
    let path = stdout_of(&mut command);
    std::path::PathBuf::from(path.trim())
}

/// A root holding only `files` (copied in at its top) and an empty `/tmp`.
fn bare_root(files: &[(&str, &Path)]) -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let root = tempfile::tempdir().unwrap();
    let tmp = root.path().join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o1777)).unwrap();
    for (name, from) in files {
        std::fs::copy(from, root.path().join(name)).unwrap();
    }
    root
}

/// `argv` run in `root` (as root), with an environment of nothing but a PATH and TMPDIR there.
fn chrooted(root: &Path, argv: &[&str]) -> tokio::process::Command {
    // Found on this PATH: the child's own PATH is the root's.
    let chroot = std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .chain([std::path::PathBuf::from("/usr/sbin")])
        .map(|dir| dir.join("chroot"))
        .find(|path| path.is_file())
        .expect("chroot (coreutils) is installed");
    let mut command = tokio::process::Command::new(chroot);
    command.arg(root).args(argv).env_clear().env("PATH", "/").env("TMPDIR", "/tmp");
    command.kill_on_drop(true);
    command
}

#[tokio::test]
async fn the_uploaded_runner_starts_in_a_root_that_holds_nothing_but_itself() {
    if crate::lab::require_root("chroot").is_err() {
        return;
    }
    let runner = static_runner();
    assert_eq!(odu::lane::remote::linked_statically(&runner), Some(true), "{}", runner.display());
    let size = std::fs::metadata(&runner).unwrap().len();
    eprintln!("the static runner is {size} bytes ({:.2} MiB)", size as f64 / 1048576.0);
    let root = bare_root(&[("odu-runner", &runner), ("dev-runner", Path::new(runner_bin()))]);
    // The root lends no library: the dev build, linked against the host's C library, cannot start.
    let dev = chrooted(root.path(), &["/dev-runner", "--version"]).output().await.unwrap();
    assert!(!dev.status.success(), "the dev runner started without its libraries");
    let version = chrooted(root.path(), &["/odu-runner", "--version"]).output().await.unwrap();
    assert!(version.status.success(), "{}", String::from_utf8_lossy(&version.stderr));
    let expected = stdout_of(Command::new(runner_bin()).arg("--version"));
    assert_eq!(String::from_utf8_lossy(&version.stdout), expected);
    // The handshake over its stdio, as a remote lane starts it.
    let mut child = chrooted(root.path(), &["/odu-runner", "--stdio"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let (stdin, stdout) = (child.stdin.take().unwrap(), child.stdout.take().unwrap());
    let client = tokio::time::timeout(
        crate::harness::DEADLINE,
        odu::link::client::Client::connect(stdout, stdin, "test"),
    )
    .await
    .expect("the runner answers the handshake in time");
    let client = client.expect("the static runner accepts the handshake");
    drop(client);
    let status = tokio::time::timeout(crate::harness::DEADLINE, child.wait()).await.unwrap().unwrap();
    assert!(status.success(), "{status}");
}

/// Nix, single-user, with its store, state and caches in `dir` (no daemon, nothing of the
/// machine's own Nix touched) and flakes on.
fn nix(dir: &Path, args: &[&str]) -> Command {
    let mut command = Command::new("nix");
    command
        .args(args)
        .env("HOME", dir.join("home"))
        .env("XDG_CACHE_HOME", dir.join("cache"))
        .env(
            "NIX_CONFIG",
            format!(
                "experimental-features = nix-command flakes\nbuild-users-group =\nsandbox = false\nstore = {}\n",
                dir.join("store").display()
            ),
        )
        .env_remove("NIX_REMOTE");
    command
}

fn nix_json(dir: &Path, args: &[&str]) -> serde_json::Value {
    serde_json::from_str(&stdout_of(&mut nix(dir, args))).expect("nix prints JSON")
}

/// The flake's own files, as a flake of their own: a `path:` flake of the checkout would copy
/// its target directory into the store.
fn flake_copy(dir: &Path) -> std::path::PathBuf {
    let src = dir.join("src");
    std::fs::create_dir(&src).unwrap();
    for file in ["flake.nix", "flake.lock", "Cargo.toml", "Cargo.lock"] {
        std::fs::copy(Path::new(env!("CARGO_MANIFEST_DIR")).join(file), src.join(file)).unwrap();
    }
    src
}

const SYSTEMS: [&str; 4] = ["x86_64-linux", "aarch64-linux", "x86_64-darwin", "aarch64-darwin"];

#[test]
fn the_flake_packages_both_binaries_from_cargo_lock_for_four_systems() {
    use sha2::Digest;
    crate::harness::require_tool("nix");
    let dir = tempfile::tempdir().unwrap();
    let flake = format!("path:{}", flake_copy(dir.path()).display());
    let stub = format!("path:{}/tests/nix/stub-nixpkgs", env!("CARGO_MANIFEST_DIR"));
    let attr = |attr: &str| format!("{flake}#{attr}");
    let eval = |attr: &str, apply: &str| {
        nix_json(
            dir.path(),
            &["eval", "--json", attr, "--override-input", "nixpkgs", &stub, "--apply", apply],
        )
    };
    let lock = std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.lock")).unwrap();
    let lock_hash: String = sha2::Sha256::digest(&lock).iter().map(|b| format!("{b:02x}")).collect();
    let version = env!("CARGO_PKG_VERSION");
    let packages =
        eval(&attr("packages"), "ps: builtins.mapAttrs (s: builtins.mapAttrs (n: p: p.recorded)) ps");
    let systems: Vec<&str> = packages.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(systems, ["aarch64-darwin", "aarch64-linux", "x86_64-darwin", "x86_64-linux"]);
    for system in SYSTEMS {
        let linux = system.ends_with("-linux");
        for (name, pname, flags, main) in [
            ("default", "odu", &["--bin", "odu", "--bin", "odu-runner"][..], "odu"),
            ("odu", "odu", &["--bin", "odu", "--bin", "odu-runner"][..], "odu"),
            ("odu-runner", "odu-runner", &["--bin", "odu-runner"][..], "odu-runner"),
        ] {
            let p = &packages[system][name];
            let at = format!("packages.{system}.{name}: {p}");
            assert_eq!(p["pname"], pname, "{at}");
            assert_eq!(p["version"], version, "{at}");
            assert_eq!(p["cargoLockName"], "Cargo.lock", "{at}");
            assert_eq!(p["cargoLock"], lock_hash.as_str(), "built from this Cargo.lock: {at}");
            assert_eq!(p["srcHasCargoToml"], true, "{at}");
            assert_eq!(p["cargoBuildFlags"], serde_json::json!(flags), "{at}");
            assert_eq!(p["mainProgram"], main, "{at}");
            assert_eq!(p["doCheck"], false, "{at}");
            assert!(p["env"]["ODU_GIT_REV"].is_string(), "{at}");
            // Linked statically on Linux, so the runner starts on any Linux host.
            let rustflags = p["env"]["RUSTFLAGS"].as_str().unwrap_or_default();
            assert_eq!(rustflags.contains("+crt-static"), linux, "{at}");
            assert_eq!(p["buildInputs"] == serde_json::json!(["glibc-static"]), linux, "{at}");
        }
        assert_eq!(packages[system]["odu-runner"]["buildType"], "runner");
        let app = eval(&attr(&format!("apps.{system}.default")), "a: a");
        assert_eq!(app["type"], "app");
        assert_eq!(
            app["program"],
            format!("/nix/store/00000000000000000000000000000000-odu-{version}/bin/odu"),
            "nix run runs odu: {app}"
        );
        let shell = eval(&attr(&format!("devShells.{system}.default")), "s: s.recorded.packages");
        for tool in ["rustc", "cargo", "just", "git", "openssh", "cargo-nextest"] {
            assert!(shell.as_array().unwrap().iter().any(|t| t == tool), "{tool} missing: {shell}");
        }
    }
    // The overlay adds both packages to a package set.
    let overlay = nix_json(
        dir.path(),
        &[
            "eval",
            "--impure",
            "--json",
            "--expr",
            &format!(
                r#"let pkgs = (builtins.getFlake "{stub}").legacyPackages.x86_64-linux;
                       o = (builtins.getFlake "{flake}").overlays.default pkgs pkgs;
                   in [ o.odu.name o.odu-runner.name ]"#
            ),
        ],
    );
    assert_eq!(overlay, serde_json::json!([format!("odu-{version}"), format!("odu-runner-{version}")]));
    let shown =
        stdout_of(&mut nix(dir.path(), &["flake", "show", &flake, "--override-input", "nixpkgs", &stub]));
    assert!(shown.contains(&format!("package 'odu-runner-{version}'")), "{shown}");
    assert!(shown.contains("Nixpkgs overlay"), "{shown}");
}

#[test]
fn the_flake_lock_pins_nixpkgs_by_rev_and_nar_hash() {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("flake.lock")).unwrap();
    let lock: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(lock["version"], 7);
    let nodes = lock["nodes"].as_object().unwrap();
    let root = &nodes[lock["root"].as_str().unwrap()];
    let inputs = root["inputs"].as_object().expect("the root names its inputs");
    assert!(inputs.contains_key("nixpkgs"), "{inputs:?}");
    for (name, target) in inputs {
        let node = target.as_str().unwrap_or_else(|| panic!("root input {name} follows another: {target}"));
        assert!(nodes.contains_key(node), "root input {name} names no node {node}");
    }
    let locked = &nodes[inputs["nixpkgs"].as_str().unwrap()]["locked"];
    assert_eq!(locked["type"], "github", "{locked}");
    assert_eq!((&locked["owner"], &locked["repo"]), (&"NixOS".into(), &"nixpkgs".into()), "{locked}");
    let rev = locked["rev"].as_str().unwrap();
    assert!(rev.len() == 40 && rev.bytes().all(|b| b.is_ascii_hexdigit()), "{rev}");
    let nar = locked["narHash"].as_str().unwrap();
    let b64 = nar.strip_prefix("sha256-").expect("an SRI sha256");
    assert!(b64.len() == 44 && b64.ends_with('=') && !b64[..43].contains('='), "{nar}");
    assert!(locked["lastModified"].as_u64().is_some_and(|t| t > 1_700_000_000), "{locked}");
    // Nix reads the lock as up to date with flake.nix's inputs: nothing to relock or fetch.
    crate::harness::require_tool("nix");
    let dir = tempfile::tempdir().unwrap();
    let flake = format!("path:{}", flake_copy(dir.path()).display());
    let meta =
        nix_json(dir.path(), &["flake", "metadata", "--json", "--offline", "--no-update-lock-file", &flake]);
    assert_eq!(meta["locks"], lock, "{meta}");
}

#[test]
fn installed_side_by_side_odu_runs_a_pipeline_from_any_directory() {
    // As `cargo install --locked --path .` lays them out: both binaries in one bin directory.
    let bin = tempfile::tempdir().unwrap();
    for name in ["odu", "odu-runner"] {
        let from = Path::new(odu_bin()).with_file_name(name);
        std::fs::copy(from, bin.path().join(name)).unwrap();
    }
    let odu = bin.path().join("odu");
    let version = stdout_of(Command::new(&odu).arg("--version").current_dir("/"));
    assert!(version.starts_with(&format!("odu {} (", env!("CARGO_PKG_VERSION"))), "{version}");
    let repo = crate::repo::Repo::new("[metadata(\"ci\")]\nci:\n    @echo installed\n");
    let path = format!("{}:{}", bin.path().display(), std::env::var("PATH").unwrap());
    let out = Command::new("odu")
        .args(["run", "--no-post"])
        .current_dir(repo.path())
        .env("PATH", path)
        .env("HOME", repo.home.path())
        .env_remove("ODU_RUNNER")
        .env_remove("ODU_HOSTS")
        .env_remove("XDG_CONFIG_HOME")
        .env_remove("ODU_RUN")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(repo.log("ci").contains("installed"), "{}", repo.log("ci"));
    crate::repo::stop_server(&repo);
}
