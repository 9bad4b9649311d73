//! `odu monitor` in a real terminal: tmux runs the real binary against a real run, and the
//! tests read the screen (`capture-pane`) and send keys as a user would.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::harness::DEADLINE;
use crate::repo::*;

/// A tmux server of its own with one window running a command in a checkout.
struct Tmux {
    socket: String,
    _dir: tempfile::TempDir,
}

impl Tmux {
    /// Runs `odu <args>` in `repo` in a `width`×`height` terminal; when it exits, the pane
    /// says `[exit N]` and stays.
    fn start(repo: &Repo, args: &str, width: u16, height: u16) -> Tmux {
        let found = Command::new("tmux").arg("-V").output().is_ok_and(|o| o.status.success());
        assert!(found, "tmux is required by the tests: install it (bash scripts/install-deps.sh)");
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("tmux.sock").display().to_string();
        let script = format!(
            "cd {} && {} {args}; echo \"[exit $?]\"; exec cat",
            shell_quote(repo.path()),
            shell_quote(Path::new(odu_bin()))
        );
        let tmux = Tmux { socket, _dir: dir };
        let out = tmux
            .command()
            .args(["new-session", "-d", "-s", "main", "-x", &width.to_string(), "-y", &height.to_string()])
            .arg(script)
            .env("HOME", repo.home.path())
            .env("TERM", "xterm-256color")
            .env_remove("NO_COLOR")
            .env_remove("ODU_HOSTS")
            .env_remove("ODU_RUN")
            .env_remove("TMUX")
            .output()
            .unwrap();
        assert!(out.status.success(), "tmux new-session: {}", stderr(&out));
        tmux
    }

    fn command(&self) -> Command {
        let mut cmd = Command::new("tmux");
        cmd.args(["-S", &self.socket, "-f", "/dev/null"]);
        cmd
    }

    fn tmux(&self, args: &[&str]) -> String {
        let out = self.command().args(args).output().unwrap();
        assert!(out.status.success(), "tmux {args:?}: {}", stderr(&out));
        stdout(&out)
    }

    /// The screen as it is now.
    fn screen(&self) -> String {
        self.tmux(&["capture-pane", "-p", "-t", "main"])
    }

    fn alternate(&self) -> bool {
        self.tmux(&["display-message", "-p", "-t", "main", "#{alternate_on}"]).trim() == "1"
    }

    fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", "main"];
        args.extend_from_slice(keys);
        self.tmux(&args);
    }

    fn resize(&self, width: u16, height: u16) {
        self.tmux(&["resize-window", "-t", "main", "-x", &width.to_string(), "-y", &height.to_string()]);
    }

    /// Waits until the screen satisfies `pred`; the last screen is in the failure.
    fn wait(&self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let deadline = std::time::Instant::now() + DEADLINE;
        loop {
            let screen = self.screen();
            if pred(&screen) {
                return screen;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "timed out waiting for {what}; the screen:\n{screen}"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.command().arg("kill-server").output();
    }
}

fn shell_quote(path: &Path) -> String {
    format!("'{}'", path.display().to_string().replace('\'', r"'\''"))
}

/// A pipeline with a node that prints lines until `release` exists, one that fails until
/// `mend` exists, and a quick one.
fn pipeline(release: &Path, mend: &Path) -> String {
    format!(
        r#"
[metadata("ci")]
ci: slow flaky lint

slow:
    for i in $(seq 1 3000); do echo "tick $i"; [ -e '{release}' ] && exit 0; sleep 0.1; done

flaky:
    [ -e '{mend}' ]

lint:
    echo linting
"#,
        release = release.display(),
        mend = mend.display()
    )
}

struct Live {
    repo: Repo,
    run: Running,
    release: PathBuf,
    mend: PathBuf,
    _files: tempfile::TempDir,
}

/// A run in progress: `slow` running, `flaky` failed.
fn live_run() -> Live {
    let files = tempfile::tempdir().unwrap();
    let (release, mend) = (files.path().join("release"), files.path().join("mend"));
    let repo = Repo::new(&pipeline(&release, &mend));
    let mut run = Running::spawn(repo.odu(&["run", "--progress", "json"]));
    let p = local_platform();
    run.wait_for_line(&format!(r#""node":"flaky@{p}","recipe":"flaky","platform":"{p}","status":"failed""#));
    Live { repo, run, release, mend, _files: files }
}

impl Live {
    /// Lets the run end and waits for it and its server.
    fn end(self) -> (Option<i32>, String) {
        std::fs::write(&self.release, "").unwrap();
        let finished = self.run.finish();
        stop_server(&self.repo);
        finished
    }
}

#[test]
fn the_dashboard_shows_the_run_and_its_log_survives_a_resize_and_leaves_the_run_alone() {
    let live = live_run();
    let tmux = Tmux::start(&live.repo, "monitor", 100, 30);
    let p = local_platform();
    // The first running node is focused and its log followed.
    let tick = |s: &str| s.lines().filter_map(|l| l.strip_prefix("tick ")?.trim().parse::<u32>().ok()).max();
    let screen = tmux.wait("the dashboard with slow's log", |s| {
        s.contains(&format!("log · slow@{p} · following")) && tick(s).is_some()
    });
    assert!(tmux.alternate(), "the dashboard is on the alternate screen:\n{screen}");
    assert!(screen.contains("flaky") && screen.contains('✗'), "{screen}");
    assert!(screen.contains("running"), "the counts line: {screen}");
    // The log goes on live.
    let first = tick(&screen).unwrap();
    tmux.wait("more ticks", |s| tick(s).is_some_and(|t| t > first + 3));
    // A small terminal and back: it redraws to fit and stays up.
    tmux.resize(50, 12);
    tmux.wait("the dashboard at 50 columns", |s| {
        s.lines().count() <= 12 && s.contains("log · ") && s.lines().all(|l| l.chars().count() <= 50)
    });
    tmux.resize(100, 30);
    tmux.wait("the dashboard at full size again", |s| s.contains("q quit") && s.contains("lint"));
    // q leaves the dashboard, restores the terminal and leaves the run going.
    tmux.keys(&["q"]);
    let screen = tmux.wait("the dashboard to exit", |s| s.contains("[exit 0]"));
    assert!(!tmux.alternate(), "the terminal is back on the main screen:\n{screen}");
    assert!(!screen.contains("q quit"), "nothing of the dashboard is left:\n{screen}");
    let status = live.repo.run(&["status", "-o", "json"]);
    assert!(stdout(&status).contains("running"), "the run goes on: {}", stdout(&status));
    let (code, _) = live.end();
    assert_eq!(code, Some(1), "flaky failed");
}

#[test]
fn r_on_a_red_node_reruns_it() {
    let live = live_run();
    let tmux = Tmux::start(&live.repo, "monitor", 100, 30);
    let p = local_platform();
    // The run is shown once its running node is focused.
    tmux.wait("the dashboard", |s| s.contains(&format!("log · slow@{p}")));
    // Focus the red node by searching for it, then rerun it now that it can pass.
    tmux.keys(&["/", "flaky", "Enter"]);
    tmux.wait("flaky focused", |s| s.contains(&format!("log · flaky@{p}")));
    std::fs::write(&live.mend, "").unwrap();
    tmux.keys(&["r"]);
    tmux.wait("the rerun's answer", |s| s.contains(&format!("done: rerun flaky@{p}")));
    let mut run = live.run;
    run.wait_for_line(&format!(r#""node":"flaky@{p}","recipe":"flaky","platform":"{p}","status":"success""#));
    let live = Live { run, ..live };
    tmux.keys(&["q"]);
    tmux.wait("the dashboard to exit", |s| s.contains("[exit 0]"));
    let (code, err) = live.end();
    assert_eq!(code, Some(0), "the rerun mended the run: {err}");
}

#[test]
fn c_then_y_cancels_the_focused_node() {
    let live = live_run();
    let tmux = Tmux::start(&live.repo, "monitor", 100, 30);
    let p = local_platform();
    tmux.wait("slow focused", |s| s.contains(&format!("log · slow@{p}")));
    tmux.keys(&["c"]);
    tmux.wait("the question", |s| s.contains(&format!("cancel slow@{p}? y/n")));
    tmux.keys(&["y"]);
    let mut run = live.run;
    run.wait_for_line(&format!(r#""node":"slow@{p}","recipe":"slow","platform":"{p}","status":"cancelled""#));
    tmux.wait("the cancelled node", |s| s.contains('◼'));
    tmux.keys(&["q"]);
    tmux.wait("the dashboard to exit", |s| s.contains("[exit 0]"));
    let (code, _) = run.finish();
    assert_eq!(code, Some(1));
    stop_server(&live.repo);
}

#[test]
fn sigterm_restores_the_terminal() {
    let live = live_run();
    let tmux = Tmux::start(&live.repo, "monitor", 100, 30);
    tmux.wait("the dashboard", |s| s.contains("q quit"));
    assert!(tmux.alternate());
    // The shell in the pane runs odu as its only child.
    let shell = tmux.tmux(&["display-message", "-p", "-t", "main", "#{pane_pid}"]);
    let children = std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", shell.trim())).unwrap();
    let odu: i32 = children.split_whitespace().next().expect("odu runs in the pane").parse().unwrap();
    // SAFETY: signalling the odu this test started in its pane.
    unsafe { libc::kill(odu, libc::SIGTERM) };
    let screen = tmux.wait("the dashboard to exit", |s| s.contains("[exit 0]"));
    assert!(!tmux.alternate(), "the terminal is back on the main screen:\n{screen}");
    live.end();
}

#[test]
fn attach_on_a_terminal_shows_the_dashboard_until_the_run_ends() {
    let live = live_run();
    let tmux = Tmux::start(&live.repo, "attach", 100, 30);
    tmux.wait("the dashboard", |s| s.contains("q quit"));
    assert!(tmux.alternate());
    std::fs::write(&live.release, "").unwrap();
    // The run ends red (flaky failed): attach leaves with the verdict and its exit code.
    let screen = tmux.wait("attach to leave with the run", |s| s.contains("[exit 1]"));
    assert!(!tmux.alternate(), "{screen}");
    assert!(screen.contains("FAILED"), "the verdict is printed: {screen}");
    live.end();
}

/// A pipeline of `n` recipes that each take a moment (two of them fail).
fn wide_pipeline(n: usize) -> String {
    let names: Vec<String> = (0..n).map(|i| format!("step{i:02}")).collect();
    let mut text = format!("[metadata(\"ci\")]\nci: {}\n", names.join(" "));
    for (i, name) in names.iter().enumerate() {
        let body = if i == 7 || i == 42 { "sleep 0.2; exit 1" } else { "sleep 0.2" };
        text.push_str(&format!("\n{name}:\n    {body}\n"));
    }
    text
}

#[test]
fn a_run_taller_than_the_terminal_leaves_no_frames_in_the_scrollback() {
    // 69 recipes and the lane's setup: 70 nodes, on a 24-row terminal.
    let repo = Repo::new(&wide_pipeline(69));
    let tmux = Tmux::start(&repo, "run --jobs 8", 100, 24);
    let done = tmux.wait("the run to end", |s| s.contains("[exit 1]"));
    let history = tmux.tmux(&["capture-pane", "-p", "-t", "main", "-S", "-", "-E", "-"]);
    let sha = repo.sha7();
    // A frame's first line: `odu <spinner or mark> ci @ <sha7> · <duration>`.
    let frames = history
        .lines()
        .filter(|l| l.starts_with("odu ") && !l.starts_with("odu ·") && l.contains(&format!("ci @ {sha} ·")))
        .count();
    assert!(frames <= 1, "{frames} frames left behind:\n{history}");
    let lines = history.lines().filter(|l| !l.trim().is_empty()).count();
    assert!(lines <= 2 * 24, "{lines} lines for one screenful of run:\n{history}");
    // The summary names what failed, with its log, and counts the rest.
    let p = local_platform();
    assert!(done.contains(&format!("step07@{p}")) && done.contains(".ci/"), "{done}");
    assert!(!history.contains(&format!("✔ step00@{p}  ")), "ok nodes are not listed:\n{history}");
    assert!(done.contains("68 ok · 2 failed"), "{done}");
    stop_server(&repo);
}

#[test]
fn summary_all_lists_every_node() {
    let repo = Repo::new(&wide_pipeline(3));
    let tmux = Tmux::start(&repo, "run --summary all", 100, 24);
    let done = tmux.wait("the run to end", |s| s.contains("[exit 0]"));
    let p = local_platform();
    for node in ["_ci-setup", "step00", "step01", "step02"] {
        assert!(done.contains(&format!("✔ {node}@{p}")), "{node} is listed: {done}");
    }
    stop_server(&repo);
}

/// utime + stime of a process, in clock ticks.
fn cpu_ticks(pid: i32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat.rsplit_once(')').unwrap().1.split_whitespace().collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

#[test]
fn the_dashboard_is_idle_while_the_run_sleeps() {
    let files = tempfile::tempdir().unwrap();
    let release = files.path().join("release");
    let repo = Repo::new(&format!(
        "[metadata(\"ci\")]\nci: nap\n\nnap:\n    @for i in $(seq 1 600); do [ -e '{}' ] && exit 0; sleep 0.1; done\n",
        release.display()
    ));
    let mut run = Running::spawn(repo.odu(&["run", "--progress", "json"]));
    let p = local_platform();
    run.wait_for_line(&format!(r#""node":"nap@{p}","recipe":"nap","platform":"{p}","status":"running""#));
    let tmux = Tmux::start(&repo, "monitor", 100, 30);
    tmux.wait("the dashboard", |s| s.contains(&format!("log · nap@{p}")));
    let shell = tmux.tmux(&["display-message", "-p", "-t", "main", "#{pane_pid}"]);
    let children = std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", shell.trim())).unwrap();
    let odu: i32 = children.split_whitespace().next().unwrap().parse().unwrap();
    // The window is the measurement: only the durations' tick may wake the dashboard.
    let (before, started) = (cpu_ticks(odu), std::time::Instant::now());
    std::thread::sleep(std::time::Duration::from_secs(5));
    let used = cpu_ticks(odu) - before;
    // SAFETY: sysconf has no preconditions.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let share = used as f64 / per_second / started.elapsed().as_secs_f64() * 100.0;
    // The budget is 1 % of a core for a release build; a debug build under a loaded test run
    // gets twice that, which still catches any polling or redrawing without cause.
    assert!(share <= 2.0, "the dashboard took {share:.2} % of a core while the run slept");
    tmux.keys(&["q"]);
    tmux.wait("the dashboard to exit", |s| s.contains("[exit 0]"));
    std::fs::write(&release, "").unwrap();
    let (code, err) = run.finish();
    assert_eq!(code, Some(0), "{err}");
    stop_server(&repo);
}

#[test]
fn with_no_run_it_shows_the_latest_from_the_trail_and_switches_to_a_run_that_starts() {
    let repo = Repo::new("[metadata(\"ci\")]\nci: hello\n\nhello:\n    @echo hello-from-the-trail; exit 1\n");
    let first = repo.run(&["run"]);
    assert_eq!(first.status.code(), Some(1), "{}", stderr(&first));
    stop_server(&repo);
    let tmux = Tmux::start(&repo, "monitor", 100, 30);
    let sha = repo.sha7();
    // The red node is focused and its log read from the trail.
    let screen = tmux
        .wait("the recorded run", |s| s.contains("no run in progress") && s.contains("hello-from-the-trail"));
    assert!(screen.contains(&format!("run {sha}#1")), "{screen}");
    assert!(screen.contains("recent runs"), "{screen}");
    // A run that starts is shown.
    let second = Running::spawn(repo.odu(&["run", "--progress", "json"]));
    tmux.wait("the new run", |s| s.contains(&format!("run {sha}#2")));
    let (code, _) = second.finish();
    assert_eq!(code, Some(1));
    tmux.keys(&["q"]);
    tmux.wait("the dashboard to exit", |s| s.contains("[exit 0]"));
    stop_server(&repo);
}

#[test]
fn a_log_faster_than_the_screen_is_followed_to_its_last_line() {
    let files = tempfile::tempdir().unwrap();
    let [go, release, done] = ["go", "release", "done"].map(|f| files.path().join(f));
    let wait = |file: &Path| {
        format!("for i in $(seq 1 600); do [ -e '{}' ] && break; sleep 0.1; done", file.display())
    };
    // `hold` keeps the run live once `big` ended. The burst is 16 MiB: eight times the pane's
    // ring and four times the runner's log window, so every path of a fast log is taken, and
    // small enough for the dev build to push through on a loaded machine within the deadline.
    let repo = Repo::new(&format!(
        "[metadata(\"ci\")]\nci: big hold\n\nbig:\n    @{}; yes a-fast-line | head -c 16777216; echo last-of-the-burst; {}; echo after-the-wait\n\nhold:\n    @{}\n",
        wait(&go),
        wait(&release),
        wait(&done)
    ));
    let mut run = Running::spawn(repo.odu(&["run", "--progress", "json"]));
    let p = local_platform();
    run.wait_for_line(&format!(r#""node":"big@{p}","recipe":"big","platform":"{p}","status":"running""#));
    let tmux = Tmux::start(&repo, "monitor", 100, 30);
    tmux.wait("the dashboard", |s| s.contains(&format!("log · big@{p}")));
    // The user chooses `big`: the focus stays on it when it ends.
    tmux.keys(&["j"]);
    tmux.wait("the focus on hold", |s| s.contains(&format!("log · hold@{p}")));
    tmux.keys(&["k"]);
    tmux.wait("the focus back on big", |s| s.contains(&format!("log · big@{p}")));
    std::fs::write(&go, "").unwrap();
    // Live lines reach the pane while the node still runs, the burst's end included.
    tmux.wait("the burst's last line", |s| s.contains("last-of-the-burst") && !s.contains("ended"));
    std::fs::write(&release, "").unwrap();
    // The node's end shows its complete tail.
    tmux.wait("the node's last line", |s| {
        s.contains("after-the-wait")
            && s.contains("last-of-the-burst")
            && s.contains(&format!("log · big@{p} · ended"))
    });
    std::fs::write(&done, "").unwrap();
    let (code, err) = run.finish();
    assert_eq!(code, Some(0), "{err}");
    tmux.keys(&["q"]);
    tmux.wait("the dashboard to exit", |s| s.contains("[exit 0]"));
    stop_server(&repo);
}
