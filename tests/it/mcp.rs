//! `odu mcp` end to end: a scripted MCP client session over the real binary's stdio (JSON-RPC
//! lines, as Claude Code and the like speak it), against real git checkouts and real `just`.
//! Every line the server writes must be a protocol message.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Stdio};
use std::sync::mpsc;

use serde_json::{Value, json};

use crate::harness::{DEADLINE, until};
use crate::repo::{Repo, local_platform, stop_server};

/// An MCP client session with `odu mcp` in a checkout.
struct Session {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
    next_id: u64,
    /// Notifications the server sent, in order.
    notes: Vec<Value>,
    /// What `initialize` answered.
    info: Value,
}

impl Session {
    fn start(repo: &Repo, env: &[(&str, &std::path::Path)]) -> Session {
        Session::start_speaking(repo, env, "2025-06-18")
    }

    /// A session whose client asks for protocol revision `version`.
    fn start_speaking(repo: &Repo, env: &[(&str, &std::path::Path)], version: &str) -> Session {
        let mut cmd = repo.odu(&["mcp"]);
        for (key, value) in env {
            cmd.env(key, value);
        }
        let mut child =
            cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::inherit()).spawn().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stdin = child.stdin.take();
        let mut session = Session { child, stdin, lines: rx, next_id: 0, notes: vec![], info: Value::Null };
        session.info = session.request(
            "initialize",
            json!({
                "protocolVersion": version,
                "capabilities": {},
                "clientInfo": {"name": "odu-tests", "version": "1"},
            }),
        );
        session.notify("notifications/initialized", json!({}));
        session
    }

    fn send(&mut self, message: Value) {
        let stdin = self.stdin.as_mut().expect("the session is open");
        writeln!(stdin, "{message}").unwrap();
        stdin.flush().unwrap();
    }

    fn notify(&mut self, method: &str, params: Value) {
        self.send(json!({"jsonrpc": "2.0", "method": method, "params": params}));
    }

    /// Sends a request without waiting for its answer; its id.
    fn send_request(&mut self, method: &str, params: Value) -> u64 {
        self.next_id += 1;
        let id = self.next_id;
        self.send(json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}));
        id
    }

    /// The next protocol message from the server.
    fn message(&mut self) -> Value {
        let line = self
            .lines
            .recv_timeout(DEADLINE)
            .unwrap_or_else(|_| panic!("odu mcp said nothing within {DEADLINE:?}"));
        let message: Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("not a protocol message on stdout: {line:?}: {e}"));
        assert_eq!(message["jsonrpc"], "2.0", "{line}");
        message
    }

    /// The answer to request `id` (notifications on the way are kept).
    fn answer(&mut self, id: u64) -> Value {
        loop {
            let message = self.message();
            if message["id"] == json!(id) {
                assert!(message.get("error").is_none(), "a protocol error: {message}");
                return message["result"].clone();
            }
            if message.get("id").is_none() {
                self.notes.push(message);
            }
        }
    }

    /// The protocol error request `method` is answered with.
    fn request_error(&mut self, method: &str, params: Value) -> Value {
        let id = self.send_request(method, params);
        loop {
            let message = self.message();
            if message["id"] == json!(id) {
                assert!(message.get("result").is_none(), "{method} should have failed: {message}");
                return message["error"].clone();
            }
            if message.get("id").is_none() {
                self.notes.push(message);
            }
        }
    }

    /// Waits for `notifications/resources/updated` about `uri` (taking it and any before it).
    fn updated(&mut self, uri: &str) {
        let told = |note: &Value| {
            note["method"] == "notifications/resources/updated" && note["params"]["uri"] == uri
        };
        if let Some(at) = self.notes.iter().position(told) {
            self.notes.drain(..=at);
            return;
        }
        self.notes.clear();
        loop {
            let message = self.message();
            if told(&message) {
                return;
            }
        }
    }

    fn request(&mut self, method: &str, params: Value) -> Value {
        let id = self.send_request(method, params);
        self.answer(id)
    }

    /// A tool's result: `(is_error, structured content or the text)`. A result's text is the
    /// same JSON as its structured content.
    fn call(&mut self, tool: &str, arguments: Value) -> (bool, Value) {
        let result = self.request("tools/call", json!({"name": tool, "arguments": arguments}));
        let text =
            result["content"][0]["text"].as_str().unwrap_or_else(|| panic!("no text: {result}")).to_string();
        let is_error = result["isError"] == json!(true);
        if is_error {
            return (true, Value::String(text));
        }
        let structured = result["structuredContent"].clone();
        assert!(structured.is_object(), "{result}");
        assert_eq!(serde_json::from_str::<Value>(&text).unwrap(), structured, "the text is the same JSON");
        (false, structured)
    }

    fn ok(&mut self, tool: &str, arguments: Value) -> Value {
        match self.call(tool, arguments.clone()) {
            (false, value) => value,
            (true, text) => panic!("{tool} {arguments} failed: {text}"),
        }
    }

    fn refused(&mut self, tool: &str, arguments: Value) -> String {
        match self.call(tool, arguments.clone()) {
            (true, Value::String(text)) => text,
            (_, value) => panic!("{tool} {arguments} should have failed: {value}"),
        }
    }

    /// Closes stdin (the client goes away) and waits for `odu mcp` to exit.
    fn close(mut self) -> Option<i32> {
        drop(self.stdin.take());
        let deadline = std::time::Instant::now() + DEADLINE;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            assert!(std::time::Instant::now() < deadline, "odu mcp did not exit when its client left");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn strings(value: &Value) -> Vec<String> {
    value.as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_string()).collect()
}

#[test]
fn mcp_initializes_and_lists_every_tool_with_its_schema() {
    let repo = Repo::new("[metadata(\"ci\")]\nci: a\na:\n    true\n");
    let mut mcp = Session::start(&repo, &[]);
    assert_eq!(mcp.info["serverInfo"]["name"], "odu", "{}", mcp.info);
    assert!(mcp.info["capabilities"]["tools"].is_object(), "{}", mcp.info);
    let tools = mcp.request("tools/list", json!({}))["tools"].clone();
    let names: Vec<&str> = tools.as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["run", "wait", "status", "logs", "rerun", "cancel", "runs"]);
    for tool in tools.as_array().unwrap() {
        let schema = &tool["inputSchema"];
        assert_eq!(schema["type"], "object", "{tool}");
        assert!(tool["description"].as_str().is_some_and(|d| !d.is_empty()), "{tool}");
        let mutates = matches!(tool["name"].as_str(), Some("run" | "rerun" | "cancel"));
        assert_eq!(tool["annotations"]["readOnlyHint"], json!(!mutates), "{tool}");
    }
    let by_name = |name: &str| tools.as_array().unwrap().iter().find(|t| t["name"] == name).unwrap().clone();
    let run = by_name("run");
    for arg in ["selectors", "root", "platforms", "no_deps", "no_strict", "no_post", "supersede"] {
        assert!(run["inputSchema"]["properties"][arg].is_object(), "run lacks {arg}: {run}");
    }
    let wait = by_name("wait");
    for arg in ["run_id", "fail_fast", "timeout_ms", "expected_sha"] {
        assert!(wait["inputSchema"]["properties"][arg].is_object(), "wait lacks {arg}: {wait}");
    }
    assert_eq!(by_name("logs")["inputSchema"]["required"], json!(["node"]));
    assert_eq!(by_name("rerun")["inputSchema"]["required"], json!(["node"]));
    assert_eq!(by_name("cancel")["annotations"]["destructiveHint"], json!(true));
    assert_eq!(mcp.close(), Some(0));

    // A client asking for a revision without resources/subscribe gets the latest with it.
    let later = Session::start_speaking(&repo, &[], "2026-07-28");
    assert_eq!(later.info["protocolVersion"], "2025-11-25", "{}", later.info);
    assert_eq!(later.close(), Some(0));
}

#[test]
fn mcp_runs_a_green_and_a_red_pipeline_and_reruns_the_red_node() {
    let repo = Repo::new(
        "[metadata(\"ci\")]\nci: good bad\ngood:\n    echo fine\nbad:\n    echo checking; test -f \"$FIXED\"\n",
    );
    let fixed = repo.home.path().join("fixed");
    let mut mcp = Session::start(&repo, &[("FIXED", &fixed)]);
    let p = local_platform();

    // Green: the run tool answers the run id at once; wait gives the verdict.
    let started = mcp.ok("run", json!({"selectors": ["good"]}));
    let run = started["run"].as_str().unwrap().to_string();
    assert_eq!(run, format!("{}#1", repo.sha7()), "{started}");
    let verdict = mcp.ok("wait", json!({"run_id": run, "fail_fast": false}));
    assert_eq!(verdict["settled"], true, "{verdict}");
    assert_eq!(verdict["passed"], true, "{verdict}");
    assert_eq!(verdict["run"], json!(run));
    assert!(strings(&verdict["failed"]).is_empty(), "{verdict}");
    assert_eq!(verdict["timed_out"], false);
    assert!(verdict["duration_ms"].is_u64(), "{verdict}");
    assert!(verdict["unposted"].is_array(), "{verdict}");

    // Red: fail-fast returns once a node is red.
    let red = mcp.ok("run", json!({}))["run"].as_str().unwrap().to_string();
    let verdict = mcp.ok("wait", json!({"run_id": red}));
    assert_eq!(verdict["passed"], false, "{verdict}");
    assert_eq!(strings(&verdict["failed"]), [format!("bad@{p}")], "{verdict}");
    let settled = mcp.ok("wait", json!({"run_id": red, "fail_fast": false}));
    assert_eq!(settled["settled"], true, "{settled}");

    let status = mcp.ok("status", json!({"run_id": red}));
    let bad =
        status["nodes"].as_array().unwrap().iter().find(|n| n["id"] == format!("bad@{p}")).unwrap().clone();
    assert_eq!(bad["status"], "failed", "{status}");
    assert_eq!(bad["exit_code"], 1, "{status}");
    assert!(bad["duration_ms"].is_u64(), "{status}");
    assert!(std::path::Path::new(bad["log"].as_str().unwrap()).is_file(), "{status}");
    let log = mcp.ok("logs", json!({"node": "bad", "run_id": red}));
    assert!(log["text"].as_str().unwrap().contains("checking"), "{log}");

    // Rerun of the red node, fixed: a new run (that one ended) that passes.
    std::fs::write(&fixed, "").unwrap();
    let rerun = mcp.ok("rerun", json!({"node": "bad"}));
    let again = rerun["run"].as_str().unwrap().to_string();
    assert_ne!(again, red, "{rerun}");
    let verdict = mcp.ok("wait", json!({"run_id": again, "fail_fast": false}));
    assert_eq!(verdict["passed"], true, "{verdict}");

    let runs = mcp.ok("runs", json!({"limit": 2}));
    let listed: Vec<&str> =
        runs["runs"].as_array().unwrap().iter().map(|r| r["run"].as_str().unwrap()).collect();
    assert_eq!(listed, [again.as_str(), red.as_str()], "{runs}");
    assert_eq!(mcp.close(), Some(0));
    stop_server(&repo);
}

#[test]
fn mcp_pages_through_a_ten_mib_log() {
    const SIZE: u64 = 10 * 1024 * 1024;
    let repo =
        Repo::new(&format!("[metadata(\"ci\")]\nci: big\nbig:\n    @seq 1 2000000 | head -c {SIZE}\n"));
    let mut mcp = Session::start(&repo, &[]);
    let run = mcp.ok("run", json!({}))["run"].as_str().unwrap().to_string();
    assert_eq!(mcp.ok("wait", json!({"run_id": run, "fail_fast": false}))["passed"], true);

    // The tail by default: the last 16 KiB, with where it starts.
    let tail = mcp.ok("logs", json!({"node": "big"}));
    let size = tail["size"].as_u64().unwrap();
    assert!(size >= SIZE, "{size}");
    assert_eq!(tail["offset"].as_u64().unwrap(), size - 16 * 1024);
    assert_eq!(tail["next_offset"].as_u64().unwrap(), size);
    assert_eq!(tail["eof"], true);
    let own = format!("/.ci/{}/runs/1/{}/big.log", repo.sha7(), local_platform());
    assert!(tail["log"].as_str().unwrap().ends_with(&own), "the run's own log: {tail}");

    // Page from the start; a page is never more than 1 MiB, whatever is asked.
    let on_disk = std::fs::read(tail["log"].as_str().unwrap()).unwrap();
    let mut text = String::new();
    let mut offset = 0;
    let mut pages = 0;
    loop {
        let page = mcp.ok("logs", json!({"node": "big", "offset": offset, "max_bytes": 64 * 1024 * 1024}));
        assert_eq!(page["offset"].as_u64().unwrap(), offset);
        let next = page["next_offset"].as_u64().unwrap();
        assert!(next - offset <= 1024 * 1024, "a page of {} bytes", next - offset);
        text.push_str(page["text"].as_str().unwrap());
        offset = next;
        pages += 1;
        if page["eof"] == true {
            break;
        }
    }
    assert_eq!(offset, size);
    assert!(pages >= 10, "{pages} pages");
    assert_eq!(text.as_bytes(), &on_disk[..], "the pages are the log");
    assert!(text.starts_with("1\n2\n3\n"), "{}", &text[..20]);
    assert_eq!(mcp.close(), Some(0));
    stop_server(&repo);
}

#[test]
fn mcp_cancels_a_run_and_says_what_to_do_on_errors() {
    let repo = Repo::new(
        "[metadata(\"ci\")]\nci: slow other\nslow:\n    while [ ! -f \"$GO\" ]; do sleep 0.05; done\nother:\n    while [ ! -f \"$GO\" ]; do sleep 0.05; done\n",
    );
    let go = repo.home.path().join("go");
    let mut mcp = Session::start(&repo, &[("GO", &go)]);
    let p = local_platform();

    // Nothing serves the checkout yet.
    let text = mcp.refused("wait", json!({}));
    assert!(text.contains("no run in progress") && text.contains("run tool"), "{text}");
    let text = mcp.refused("cancel", json!({}));
    assert!(text.contains("no run in progress"), "{text}");
    // Arguments that do not fit the schema, and a tool that does not exist.
    let text = mcp.refused("wait", json!({"timeout": 5}));
    assert!(text.contains("do not fit its schema"), "{text}");
    let text = mcp.refused("deploy", json!({}));
    assert!(text.contains("the tools are run, wait"), "{text}");

    // A dirty tree refuses a strict run, and says how to get past it.
    repo.write("justfile.local", "x");
    let text = mcp.refused("run", json!({}));
    assert!(text.contains("dirty") && text.contains("no_strict: true"), "{text}");
    std::fs::remove_file(repo.path().join("justfile.local")).unwrap();

    // The run tool never waits: the nodes are still going when it answers.
    let run = mcp.ok("run", json!({}))["run"].as_str().unwrap().to_string();
    let status = mcp.ok("status", json!({}));
    assert_eq!(status["live"], true, "{status}");
    let verdict = mcp.ok("wait", json!({"timeout_ms": 200}));
    assert_eq!((verdict["timed_out"].clone(), verdict["settled"].clone()), (json!(true), json!(false)));
    let text = mcp.refused("wait", json!({"expected_sha": "0000000"}));
    assert!(text.contains("is of commit") && text.contains("run tool"), "{text}");
    let text = mcp.refused("wait", json!({"expected_sha": "HEAD"}));
    assert!(text.contains("is no commit") && text.contains("7 hex digits"), "{text}");
    let sha = repo.git(&["rev-parse", "HEAD"]);
    let verdict = mcp.ok("wait", json!({"expected_sha": sha, "timeout_ms": 1}));
    assert_eq!(verdict["sha"], json!(sha), "{verdict}");
    let text = mcp.refused("logs", json!({"node": "nosuch"}));
    assert!(text.contains("nosuch") && text.contains(&format!("slow@{p}")), "{text}");
    let text = mcp.refused("run", json!({}));
    assert!(text.contains("in progress") && text.contains("supersede: true"), "{text}");

    // Cancel one node, then the whole run.
    let cancelled = mcp.ok("cancel", json!({"node": "other"}));
    assert_eq!(cancelled["run"], json!(run));
    let cancelled = mcp.ok("cancel", json!({}));
    assert_eq!(cancelled["cancelled"], "the run", "{cancelled}");
    let verdict = mcp.ok("wait", json!({"fail_fast": false}));
    assert_eq!(verdict["settled"], true, "{verdict}");
    assert_eq!(verdict["passed"], false, "{verdict}");
    let mut cancelled = strings(&verdict["cancelled"]);
    cancelled.sort();
    assert_eq!(cancelled, [format!("other@{p}"), format!("slow@{p}")], "{verdict}");
    assert_eq!(mcp.close(), Some(0));
    stop_server(&repo);
}

#[test]
fn a_client_that_leaves_mid_wait_leaves_the_run_going() {
    let repo =
        Repo::new("[metadata(\"ci\")]\nci: slow\nslow:\n    while [ ! -f \"$GO\" ]; do sleep 0.05; done\n");
    let go = repo.home.path().join("go");
    let mut mcp = Session::start(&repo, &[("GO", &go)]);
    let run = mcp.ok("run", json!({}))["run"].as_str().unwrap().to_string();
    mcp.send_request("tools/call", json!({"name": "wait", "arguments": {"run_id": run}}));
    let left = std::time::Instant::now();
    assert_eq!(mcp.close(), Some(0), "odu mcp exits when its client leaves, mid-wait");
    // At once: not after a drain of the answers nobody will read (5s in the MCP SDK).
    assert!(left.elapsed() < std::time::Duration::from_secs(4), "left after {:?}", left.elapsed());

    let status = repo.run(&["status", "-o", "json"]);
    let status: Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(status["live"], true, "the run goes on: {status}");
    std::fs::write(&go, "").unwrap();
    let out = repo.run(&["wait", "--settle", "--run", &run]);
    let verdict: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(verdict["passed"], true, "{verdict}");
    until("the run to be recorded", DEADLINE, || repo.ledger()[0]["outcome"] == "passed");
    stop_server(&repo);
}

#[test]
fn mcp_resources_show_the_run_and_tell_subscribers_when_it_changes() {
    let repo = Repo::new(
        "[metadata(\"ci\")]\nci: slow\nslow:\n    @echo started; while [ ! -f \"$GO\" ]; do sleep 0.05; done; echo done\n",
    );
    let go = repo.home.path().join("go");
    let mut mcp = Session::start(&repo, &[("GO", &go)]);
    let p = local_platform();
    let caps = &mcp.info["capabilities"]["resources"];
    assert_eq!(
        (caps["subscribe"].clone(), caps["listChanged"].clone()),
        (json!(true), json!(true)),
        "{caps}"
    );
    let templates = mcp.request("resources/templates/list", json!({}));
    assert_eq!(templates["resourceTemplates"][0]["uriTemplate"], "odu://run/logs/{node}", "{templates}");

    // Subscribed before any run (and any server): the run this session starts is heard of.
    mcp.request("resources/subscribe", json!({"uri": "odu://run/nodes"}));
    let run = mcp.ok("run", json!({}))["run"].as_str().unwrap().to_string();
    mcp.updated("odu://run/nodes");
    let listed = mcp.request("resources/list", json!({}));
    let uris: Vec<&str> =
        listed["resources"].as_array().unwrap().iter().map(|r| r["uri"].as_str().unwrap()).collect();
    assert!(uris.contains(&"odu://run/nodes"), "{listed}");
    let log_uri = format!("odu://run/logs/slow@{p}");
    assert!(uris.contains(&log_uri.as_str()), "{listed}");
    let nodes = mcp.request("resources/read", json!({"uri": "odu://run/nodes"}));
    let nodes: Value = serde_json::from_str(nodes["contents"][0]["text"].as_str().unwrap()).unwrap();
    assert_eq!(nodes["run"], json!(run), "{nodes}");

    // A log's subscriber hears of what the node writes.
    mcp.request("resources/subscribe", json!({"uri": "odu://run/logs/slow"}));
    mcp.updated("odu://run/logs/slow");
    std::fs::write(&go, "").unwrap();
    mcp.updated("odu://run/logs/slow");
    assert_eq!(mcp.ok("wait", json!({"fail_fast": false}))["passed"], true);
    let log = mcp.request("resources/read", json!({"uri": log_uri}));
    assert_eq!(log["contents"][0]["text"], "started\ndone\n", "{log}");
    mcp.request("resources/unsubscribe", json!({"uri": "odu://run/logs/slow"}));

    let error = mcp.request_error("resources/read", json!({"uri": "odu://elsewhere"}));
    assert!(error["message"].as_str().unwrap().contains("resources/list"), "{error}");
    assert_eq!(mcp.close(), Some(0));
    stop_server(&repo);
}
