//! `odu mcp`: the checkout's runs as Model Context Protocol tools on stdio, for coding agents.
//! Each tool asks the checkout's server over `.ci/odu.sock` (starting one for `run` and
//! `rerun`, as `odu run` does) or reads the ledger, through the same functions as the CLI
//! commands. Stdout carries protocol messages only; anything else goes to stderr.

pub mod resources;
pub mod tools;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation, JsonObject,
    ListResourceTemplatesResult, ListResourcesResult, ListToolsResult, PaginatedRequestParams,
    ProtocolVersion, ReadResourceRequestParams, ReadResourceResponse, ReadResourceResult, ServerCapabilities,
    ServerConfig, SubscribeRequestParams, Tool, ToolAnnotations, UnsubscribeRequestParams,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData, RoleServer, ServerHandler, ServiceExt};
use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::error::{CliError, CliResult};

/// Checks a run's refusals before a server is started for it (planning is the server's code,
/// so the command hands it in); on the way, it starts git's listing of what git tracks in
/// `.ci`, which the server's start reads.
pub type Preflight = fn(&Path, &odu_proto::StartParams) -> CliResult<std::io::Result<crate::tool::Pending>>;

/// The checkout the tools act on, and how they start a server in it.
pub struct Checkout {
    pub repo: PathBuf,
    /// `--idle-timeout` of a server started for a run.
    pub idle: String,
    pub preflight: Preflight,
}

/// The MCP server: the tools over one checkout.
#[derive(Clone)]
pub struct OduMcp {
    checkout: Arc<Checkout>,
    /// Turns true when the client closed its end: a tool still waiting then gives up.
    left: tokio::sync::watch::Receiver<bool>,
    /// Moves each time this session starts a run: subscriptions look for it.
    started: tokio::sync::watch::Sender<u64>,
    /// The watch behind each subscribed URI.
    watches: Arc<std::sync::Mutex<std::collections::BTreeMap<String, tokio::task::AbortHandle>>>,
}

/// How each tool is named, described, shaped and annotated.
pub fn tools() -> Vec<Tool> {
    fn tool<T: JsonSchema + 'static>(name: &'static str, description: &'static str) -> Tool {
        Tool::new(name, description, JsonObject::new()).with_input_schema::<T>()
    }
    let reads = || ToolAnnotations::new().read_only(true).open_world(false);
    let writes = |destructive: bool| {
        ToolAnnotations::new().read_only(false).destructive(destructive).idempotent(false).open_world(false)
    };
    use tools::*;
    vec![
        tool::<RunInput>(
            "run",
            "Start a CI run of this checkout (the whole pipeline, or the selected recipes) and return its run id at once; it never waits (call wait).",
        )
        .annotate(writes(false)),
        tool::<WaitInput>(
            "wait",
            "Block until the run goes red (fail_fast, the default) or settles, or timeout_ms passes; return its verdict: settled, passed, the failed / errored / cancelled node ids, timed_out, duration_ms of the run, unposted statuses.",
        )
        .annotate(reads()),
        tool::<RunIdInput>(
            "status",
            "The nodes of the live run (or of run_id, or the latest run): id, status, exit code, duration, log path.",
        )
        .annotate(reads()),
        tool::<LogsInput>(
            "logs",
            "A page of one node's log: the last tail_bytes (default 16 KiB), or max_bytes from offset; returns next_offset and size to page through a long log.",
        )
        .annotate(reads()),
        tool::<RerunInput>(
            "rerun",
            "Rerun a node (an id, a recipe, or @platform's red nodes) and what needs it in the live run; in a run that ended this starts a new run.",
        )
        .annotate(writes(false)),
        tool::<CancelInput>(
            "cancel",
            "Cancel one node (an id or a recipe), one lane (@platform), or without node the whole live run.",
        )
        .annotate(writes(true)),
        tool::<RunsInput>("runs", "The runs recorded in this checkout, newest first.").annotate(reads()),
    ]
}

impl OduMcp {
    pub fn new(checkout: Checkout, left: tokio::sync::watch::Receiver<bool>) -> OduMcp {
        OduMcp {
            checkout: Arc::new(checkout),
            left,
            started: tokio::sync::watch::Sender::new(0),
            watches: Arc::default(),
        }
    }

    /// Runs tool `name` on `arguments`: its answer, or a refusal that says what to do next.
    pub async fn call(&self, name: &str, arguments: Option<JsonObject>) -> CliResult<Value> {
        let checkout = &*self.checkout;
        match name {
            "run" => self.starting(tools::run(checkout, parse(name, arguments)?).await),
            "wait" => tools::wait(checkout, parse(name, arguments)?).await,
            "status" => tools::status(checkout, parse(name, arguments)?).await,
            "logs" => tools::logs(checkout, parse(name, arguments)?).await,
            "rerun" => self.starting(tools::rerun(checkout, parse(name, arguments)?).await),
            "cancel" => tools::cancel(checkout, parse(name, arguments)?).await,
            "runs" => tools::runs(checkout, parse(name, arguments)?).await,
            other => Err(CliError::usage(format!(
                "there is no tool {other:?}: the tools are run, wait, status, logs, rerun, cancel, runs"
            ))),
        }
    }
}

impl OduMcp {
    /// A run this session started: subscriptions waiting for a server look again.
    fn starting(&self, result: CliResult<Value>) -> CliResult<Value> {
        if result.is_ok() {
            self.started.send_modify(|n| *n += 1);
        }
        result
    }
}

fn parse<T: DeserializeOwned>(tool: &str, arguments: Option<JsonObject>) -> CliResult<T> {
    serde_json::from_value(Value::Object(arguments.unwrap_or_default())).map_err(|e| {
        CliError::usage(format!("the arguments of {tool} do not fit its schema: {e} (see tools/list)"))
    })
}

/// A tool's answer: the JSON as structured content and as text; a refusal as a tool error
/// whose text says what to do next.
fn answer(result: CliResult<Value>) -> CallToolResult {
    match result {
        Ok(value) => CallToolResult::structured(value),
        Err(e) => CallToolResult::error(vec![ContentBlock::text(in_tool_terms(&e.message))]),
    }
}

/// A refusal written for the CLI, told in the tools' terms: its flags become the arguments
/// that do the same, its commands the tools.
fn in_tool_terms(message: &str) -> String {
    const TERMS: [(&str, &str); 9] = [
        ("pass --no-strict", "pass no_strict: true"),
        ("pass --supersede", "pass supersede: true"),
        ("--no-strict", "no_strict: true"),
        ("--supersede", "supersede: true"),
        ("follow it with odu attach", "follow it with the wait tool"),
        ("stop it with odu cancel", "stop it with the cancel tool"),
        ("odu status", "the status tool"),
        ("odu rerun", "the rerun tool on"),
        ("odu runs", "the runs tool"),
    ];
    TERMS.iter().fold(message.to_string(), |text, (cli, tool)| text.replace(cli, tool))
}

impl ServerHandler for OduMcp {
    fn get_info(&self) -> ServerConfig {
        let capabilities = ServerCapabilities::builder()
            .enable_tools()
            .enable_resources()
            .enable_resources_subscribe()
            .enable_resources_list_changed()
            .build();
        ServerConfig::new(capabilities)
            .with_server_info(Implementation::new("odu", crate::version::VERSION))
            .with_instructions(
                "odu runs this checkout's just recipe DAG as CI. Call run to start a run (it returns at once), \
                 wait for its verdict, status for its nodes, logs to page through a node's log, rerun a red node, \
                 cancel, and runs for the history. Resources: odu://run/nodes and odu://run/logs/<node> \
                 (subscribe to hear when they change).",
            )
    }

    /// The revisions with the `initialize` handshake and `resources/subscribe`, which odu's
    /// subscriptions use; a client asking for a later one is answered with the latest of these.
    fn supported_protocol_versions(&self) -> std::borrow::Cow<'static, [ProtocolVersion]> {
        std::borrow::Cow::Borrowed(ProtocolVersion::known_up_to(&ProtocolVersion::V_2025_11_25))
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        Ok(ListToolsResult::with_all_items(tools()))
    }

    async fn list_resources(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, ErrorData> {
        Ok(ListResourcesResult::with_all_items(resources::list(&self.checkout).await))
    }

    async fn list_resource_templates(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourceTemplatesResult, ErrorData> {
        Ok(ListResourceTemplatesResult::with_all_items(resources::templates()))
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, ErrorData> {
        match resources::read(&self.checkout, &request.uri).await {
            Ok(contents) => Ok(ReadResourceResult::new(vec![contents]).into()),
            Err(e) => Err(resources::not_found(&request.uri, e)),
        }
    }

    async fn subscribe(
        &self,
        request: SubscribeRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        resources::Uri::parse(&request.uri).map_err(|e| resources::not_found(&request.uri, e))?;
        let mut watches = self.watches.lock().expect("watches lock");
        if let std::collections::btree_map::Entry::Vacant(entry) = watches.entry(request.uri.clone()) {
            let task = tokio::spawn(resources::watch(
                self.checkout.clone(),
                request.uri,
                context.peer.clone(),
                self.started.subscribe(),
            ));
            entry.insert(task.abort_handle());
        }
        Ok(())
    }

    async fn unsubscribe(
        &self,
        request: UnsubscribeRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        if let Some(watch) = self.watches.lock().expect("watches lock").remove(&request.uri) {
            watch.abort();
        }
        Ok(())
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        // A client that left reads no answer: a `wait` stops (the run goes on) so the session
        // ends at once instead of holding the process until the run settles.
        let mut left = self.left.clone();
        tokio::select! {
            result = self.call(&request.name, request.arguments) => Ok(answer(result).into()),
            _ = left.wait_for(|gone| *gone) => {
                Ok(answer(Err(CliError::refused("the client left before the answer"))).into())
            }
        }
    }
}

/// Serves MCP on stdin/stdout until the client goes away. A run the client started goes on.
pub async fn serve(checkout: Checkout) -> CliResult<()> {
    let (tell, left) = tokio::sync::watch::channel(false);
    let stdin = Watched { inner: tokio::io::stdin(), closed: tell };
    let service = OduMcp::new(checkout, left)
        .serve((stdin, tokio::io::stdout()))
        .await
        .map_err(|e| CliError::refused(format!("the MCP client did not initialize: {e}")))?;
    service.waiting().await.map_err(|e| CliError::refused(format!("the MCP session failed: {e}")))?;
    Ok(())
}

/// Stdin that says when it reaches its end: the client closed the session.
struct Watched {
    inner: tokio::io::Stdin,
    closed: tokio::sync::watch::Sender<bool>,
}

impl tokio::io::AsyncRead for Watched {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = std::pin::Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, std::task::Poll::Ready(Ok(()))) && buf.filled().len() == before {
            self.closed.send_replace(true);
        }
        polled
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_name_the_arguments_not_the_flags() {
        assert_eq!(
            in_tool_terms(
                "working tree is dirty (1 changed: a): commit or stash, or pass --no-strict for a dev iteration run"
            ),
            "working tree is dirty (1 changed: a): commit or stash, or pass no_strict: true for a dev iteration run"
        );
        assert_eq!(
            in_tool_terms(
                "run x#1 is in progress in this checkout: follow it with odu attach, stop it with odu cancel, or pass --supersede to replace it"
            ),
            "run x#1 is in progress in this checkout: follow it with the wait tool, stop it with the cancel tool, or pass supersede: true to replace it"
        );
    }

    #[test]
    fn every_tool_has_an_object_schema_and_annotations() {
        let tools = tools();
        let names: Vec<&str> = tools.iter().map(|t| t.name.as_ref()).collect();
        assert_eq!(names, ["run", "wait", "status", "logs", "rerun", "cancel", "runs"]);
        for tool in &tools {
            assert_eq!(tool.input_schema.get("type"), Some(&serde_json::json!("object")), "{}", tool.name);
            let read_only = tool.annotations.as_ref().and_then(|a| a.read_only_hint);
            let mutates = matches!(tool.name.as_ref(), "run" | "rerun" | "cancel");
            assert_eq!(read_only, Some(!mutates), "{}", tool.name);
        }
    }
}
