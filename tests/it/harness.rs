//! Shared test fixtures: temporary workspaces with justfiles, and waiting on events with a
//! deadline (never sleeping to synchronise).

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use odu::link::client::{Client, ClientEvent};
use odu_core::{NodeStatus, NodeView, TaskSpec};
use odu_proto::{LogFrame, NodesFrame};
use serde_json::{Value, json};
use tokio::io::DuplexStream;

pub const DEADLINE: Duration = Duration::from_secs(20);

/// Fails loudly when a tool the tests need is missing (CI must install it).
pub fn require_tool(tool: &str) {
    let found = std::process::Command::new(tool).arg("--version").output().is_ok_and(|o| o.status.success());
    assert!(found, "{tool} is required by the tests: install it (bash scripts/install-deps.sh)");
}

pub fn workspace(justfile: &str) -> tempfile::TempDir {
    require_tool("just");
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("justfile"), justfile).expect("write justfile");
    dir
}

pub fn task(id: &str, needs: &[&str]) -> TaskSpec {
    TaskSpec {
        id: id.into(),
        argv: vec!["just".into(), "--no-deps".into(), id.into()],
        needs: needs.iter().map(|s| s.to_string()).collect(),
    }
}

/// A runner served in-process over an in-memory duplex, with a client that records every
/// `nodes` frame.
pub struct LaneHarness {
    pub client: Client<tokio::io::ReadHalf<DuplexStream>>,
    pub frames: Vec<NodesFrame>,
    pub state: BTreeMap<String, NodeView>,
    pub order: Vec<String>,
    nodes_stream: u64,
    pub logs: BTreeMap<u64, Vec<LogFrame>>,
    pub responses: BTreeMap<u64, Result<Value, odu_proto::RpcError>>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    pub server: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl LaneHarness {
    pub async fn start() -> Self {
        let (client_end, server_end) = tokio::io::duplex(1 << 20);
        let (sr, sw) = tokio::io::split(server_end);
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(odu::runner::serve(
            sr,
            sw,
            async move {
                let _ = rx.await;
            },
            odu::runner::Host::Shared,
        ));
        let (cr, cw) = tokio::io::split(client_end);
        let client = Client::connect(cr, cw, "test").await.expect("handshake");
        let mut harness = LaneHarness::over(client).await;
        (harness.shutdown, harness.server) = (Some(tx), Some(server));
        harness
    }

    /// A harness over a client already connected to a runner elsewhere (the runner binary).
    pub async fn over(mut client: Client<tokio::io::ReadHalf<DuplexStream>>) -> Self {
        let nodes_stream = client.send("nodes.get", json!({})).await.unwrap();
        LaneHarness {
            client,
            frames: vec![],
            state: BTreeMap::new(),
            order: vec![],
            nodes_stream,
            logs: BTreeMap::new(),
            responses: BTreeMap::new(),
            shutdown: None,
            server: None,
        }
    }

    pub async fn configure(
        &mut self,
        workspace: &Path,
        tasks: &[TaskSpec],
    ) -> Result<Value, odu_proto::RpcError> {
        self.configure_raw(json!({"name": "test", "workspace": workspace, "tasks": tasks})).await
    }

    pub async fn configure_raw(&mut self, params: Value) -> Result<Value, odu_proto::RpcError> {
        let id = self.client.send("run.configure", params).await.unwrap();
        self.response(id).await
    }

    pub async fn request(&mut self, method: &str, params: Value) -> Result<Value, odu_proto::RpcError> {
        let id = self.client.send(method, params).await.unwrap();
        self.response(id).await
    }

    pub async fn response(&mut self, id: u64) -> Result<Value, odu_proto::RpcError> {
        self.until(|h| h.responses.contains_key(&id)).await;
        self.responses.remove(&id).unwrap()
    }

    pub async fn subscribe_log(&mut self, node: &str) -> u64 {
        let id = self.client.send("nodeLog.get", json!({"id": node})).await.unwrap();
        self.logs.insert(id, vec![]);
        id
    }

    /// Pumps events until `pred` holds, failing after the deadline.
    pub async fn until(&mut self, pred: impl Fn(&Self) -> bool) {
        self.until_within(DEADLINE, pred).await;
    }

    /// [`LaneHarness::until`] with a deadline of its own.
    pub async fn until_within(&mut self, within: Duration, pred: impl Fn(&Self) -> bool) {
        let result = tokio::time::timeout(within, async {
            while !pred(self) {
                self.pump().await;
            }
        })
        .await;
        if result.is_err() {
            panic!("condition not met within {within:?}; state: {:#?}", self.statuses());
        }
    }

    async fn pump(&mut self) {
        match self.client.next().await.expect("link") {
            Some(ClientEvent::Item { stream, value }) if stream == self.nodes_stream => {
                let frame: NodesFrame = serde_json::from_str(value.get()).expect("nodes frame");
                match &frame {
                    NodesFrame::Snapshot { order, nodes, .. } => {
                        self.order = order.clone();
                        self.state = nodes.iter().map(|n| (n.id.clone(), n.clone())).collect();
                    }
                    NodesFrame::Delta { nodes, .. } => {
                        for n in nodes {
                            self.state.insert(n.id.clone(), n.clone());
                        }
                    }
                }
                self.frames.push(frame);
            }
            Some(ClientEvent::Item { stream, value }) => {
                let frame: LogFrame = serde_json::from_str(value.get()).expect("log frame");
                self.logs.entry(stream).or_default().push(frame);
            }
            Some(ClientEvent::Response { id, result }) => {
                self.responses.insert(id, result);
            }
            None => panic!("the runner closed the link"),
        }
    }

    pub fn status(&self, id: &str) -> Option<NodeStatus> {
        self.state.get(id).map(|n| n.status)
    }

    pub fn statuses(&self) -> BTreeMap<String, NodeStatus> {
        self.state.iter().map(|(k, v)| (k.clone(), v.status)).collect()
    }

    pub fn settled(&self, count: usize) -> bool {
        self.order.len() == count
            && self.state.len() == count
            && self.state.values().all(|n| n.status.is_terminal())
    }

    /// The text of a log stream: the bytes of its latest generation.
    pub fn log_text(&self, stream: u64) -> String {
        let mut text = Vec::new();
        for frame in &self.logs[&stream] {
            match frame {
                LogFrame::Snapshot { data, .. } => text = LogFrame::decode_data(data).unwrap(),
                LogFrame::Append { data } => text.extend(LogFrame::decode_data(data).unwrap()),
                _ => {}
            }
        }
        String::from_utf8_lossy(&text).into_owned()
    }

    pub fn log_kinds(&self, stream: u64) -> Vec<&'static str> {
        self.logs[&stream]
            .iter()
            .map(|f| match f {
                LogFrame::Snapshot { .. } => "snapshot",
                LogFrame::Append { .. } => "append",
                LogFrame::End => "end",
                LogFrame::Missed { .. } => "missed",
            })
            .collect()
    }

    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(server) = self.server.take() {
            let _ = server.await;
        }
    }
}

/// Waits for a process to be gone, with a deadline.
pub async fn wait_until_dead(pid: i32, within: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if gone(pid) {
            return true;
        }
        if tokio::time::Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Whether a process is gone: exited, or a zombie waiting to be reaped.
pub fn gone(pid: i32) -> bool {
    !odu::trail::ledger::pid_alive(pid as u32)
}

/// The pid a recipe wrote (`echo $$ > file`), once its whole line is there.
pub fn pid_in(path: &Path) -> Option<i32> {
    let text = std::fs::read_to_string(path).ok()?;
    if text.ends_with('\n') { text.trim().parse().ok() } else { None }
}

/// Reads a pid a recipe wrote, waiting for the file to appear.
pub async fn read_pid(path: PathBuf) -> i32 {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        if let Some(pid) = pid_in(&path) {
            return pid;
        }
        assert!(tokio::time::Instant::now() < deadline, "no pid file at {}", path.display());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls `done` until it holds, failing the test after `within`: for tests that block, with no
/// runtime of their own.
pub fn until(what: &str, within: Duration, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + within;
    while !done() {
        assert!(std::time::Instant::now() < deadline, "timed out after {within:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// [`read_pid`] for tests that block.
pub fn wait_for_pid(path: &Path) -> i32 {
    until(&format!("a pid in {}", path.display()), DEADLINE, || pid_in(path).is_some());
    pid_in(path).expect("checked above")
}
