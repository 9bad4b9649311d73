//! A fake GitHub REST API on 127.0.0.1 that enforces what GitHub enforces for commit statuses
//! (a valid token, the 140-character description, known states, a context, 1,000 statuses per
//! sha and context), answers rate limits on demand, serves repository rulesets and classic
//! branch protection in GitHub's JSON shapes, and records every request with its time. It runs
//! on its own thread and runtime, so a test drives the real odu against it synchronously.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

pub const TOKEN: &str = "ghp_fake_token_0123456789abcdef";

/// One request as the fake saw it.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub at: Instant,
    /// The answer's status code.
    pub status: u16,
    /// `retry-after` the fake answered with.
    pub retry_after: Option<u64>,
    /// `x-ratelimit-reset` (seconds since the epoch) the fake answered with.
    pub reset: Option<u64>,
    pub body: Value,
    pub authorization: Option<String>,
}

/// A status the fake holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Posted {
    pub sha: String,
    pub context: String,
    pub state: String,
    pub description: String,
}

#[derive(Default)]
pub struct State {
    pub requests: Vec<Seen>,
    /// Every status, oldest first.
    pub statuses: Vec<Posted>,
    /// Answer every request 503.
    pub down: bool,
    /// Every n-th status post is refused by a secondary limit with this `retry-after`.
    pub throttle: Option<(usize, u64)>,
    /// The next request meets a primary limit that resets this many seconds later.
    pub primary_once: Option<u64>,
    posts: usize,
    /// Rulesets by id.
    pub rulesets: BTreeMap<u64, Value>,
    /// Rulesets are not available (a plan without them): 404 on their endpoints.
    pub no_rulesets: bool,
    /// Classic protection's required contexts by branch (`None`: not protected).
    pub classic: BTreeMap<String, Vec<String>>,
    pub default_branch: String,
}

pub struct Fake {
    pub addr: SocketAddr,
    pub state: Arc<Mutex<State>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Fake {
    pub fn start() -> Fake {
        let state = Arc::new(Mutex::new(State { default_branch: "main".into(), ..State::default() }));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (ready_tx, ready) = std::sync::mpsc::channel();
        let shared = state.clone();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                ready_tx.send(listener.local_addr().unwrap()).unwrap();
                let app = axum::Router::new().fallback(move |req: Request<Body>| handle(shared.clone(), req));
                axum::serve(listener, app)
                    .with_graceful_shutdown(async {
                        let _ = stopped.await;
                    })
                    .await
                    .unwrap();
            });
        });
        let addr = ready.recv().unwrap();
        Fake { addr, state, stop: Some(stop), thread: Some(thread) }
    }

    /// The base URL to give odu as `ODU_GITHUB_API`.
    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        f(&mut self.state.lock().unwrap())
    }

    pub fn requests(&self) -> Vec<Seen> {
        self.with(|s| s.requests.clone())
    }

    pub fn statuses(&self) -> Vec<Posted> {
        self.with(|s| s.statuses.clone())
    }

    /// The statuses of one context, oldest first, as `state description`.
    pub fn sequence(&self, context: &str) -> Vec<String> {
        self.statuses()
            .into_iter()
            .filter(|p| p.context == context)
            .map(|p| format!("{} {}", p.state, p.description))
            .collect()
    }

    /// The latest status of every context.
    pub fn latest(&self) -> BTreeMap<String, String> {
        self.statuses().into_iter().map(|p| (p.context, format!("{} {}", p.state, p.description))).collect()
    }
}

impl Drop for Fake {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn answer(status: StatusCode, body: Value) -> Response {
    (status, [("content-type", "application/json")], body.to_string()).into_response()
}

fn message(status: StatusCode, text: &str) -> Response {
    answer(status, json!({"message": text, "documentation_url": "https://docs.github.com/rest"}))
}

async fn handle(state: Arc<Mutex<State>>, req: Request<Body>) -> Response {
    let at = Instant::now();
    let method = req.method().clone();
    let uri = req.uri().clone();
    let headers: HeaderMap = req.headers().clone();
    let bytes = axum::body::to_bytes(req.into_body(), 1 << 20).await.unwrap_or_default();
    let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    let authorization = headers.get("authorization").and_then(|v| v.to_str().ok()).map(str::to_string);
    let mut s = state.lock().unwrap();
    let response =
        route(&mut s, &method, uri.path(), uri.query().unwrap_or(""), &body, authorization.as_deref());
    let header = |name: &str| response.headers().get(name).and_then(|v| v.to_str().ok()?.parse().ok());
    s.requests.push(Seen {
        method: method.to_string(),
        path: uri.path().to_string(),
        at,
        status: response.status().as_u16(),
        retry_after: header("retry-after"),
        reset: header("x-ratelimit-reset"),
        body,
        authorization,
    });
    response
}

fn route(
    s: &mut State,
    method: &Method,
    path: &str,
    query: &str,
    body: &Value,
    auth: Option<&str>,
) -> Response {
    if s.down {
        return message(StatusCode::SERVICE_UNAVAILABLE, "Service Unavailable");
    }
    let valid = auth.is_some_and(|a| a == format!("Bearer {TOKEN}") || a == format!("token {TOKEN}"));
    if !valid {
        return message(StatusCode::UNAUTHORIZED, "Bad credentials");
    }
    if let Some(reset_in) = s.primary_once.take() {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
        let mut r = message(StatusCode::FORBIDDEN, "API rate limit exceeded");
        let h = r.headers_mut();
        h.insert("x-ratelimit-remaining", "0".parse().unwrap());
        h.insert("x-ratelimit-reset", (now + reset_in).to_string().parse().unwrap());
        return r;
    }
    // Enterprise serves the same API under /api/v3.
    let path = path.strip_prefix("/api/v3").unwrap_or(path);
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let page = |name: &str, default: usize| {
        query
            .split('&')
            .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    match (method.as_str(), parts.as_slice()) {
        ("POST", ["repos", _, _, "statuses", sha]) => post_status(s, sha, body),
        ("GET", ["repos", _, _, "commits", sha, "statuses"]) => {
            let (per_page, page) = (page("per_page", 30).min(100), page("page", 1).max(1));
            let newest_first: Vec<Value> = s
                .statuses
                .iter()
                .rev()
                .filter(|p| p.sha == *sha)
                .skip((page - 1) * per_page)
                .take(per_page)
                .map(|p| json!({"context": p.context, "state": p.state, "description": p.description, "target_url": null}))
                .collect();
            answer(StatusCode::OK, Value::Array(newest_first))
        }
        ("GET", ["repos", _, _, "commits", sha, "status"]) => {
            let mut latest: BTreeMap<&str, &Posted> = BTreeMap::new();
            for p in s.statuses.iter().filter(|p| p.sha == *sha) {
                latest.insert(&p.context, p);
            }
            let states: Vec<&str> = latest.values().map(|p| p.state.as_str()).collect();
            let combined = if states.iter().any(|s| *s == "error" || *s == "failure") {
                "failure"
            } else if states.is_empty() || states.contains(&"pending") {
                "pending"
            } else {
                "success"
            };
            let statuses: Vec<Value> = latest
                .values()
                .map(|p| json!({"context": p.context, "state": p.state, "description": p.description}))
                .collect();
            answer(
                StatusCode::OK,
                json!({"state": combined, "sha": sha, "total_count": statuses.len(), "statuses": statuses}),
            )
        }
        ("GET", ["repos", owner, name]) => answer(
            StatusCode::OK,
            json!({"full_name": format!("{owner}/{name}"), "default_branch": s.default_branch}),
        ),
        (_, ["repos", _, _, "rules", ..] | ["repos", _, _, "rulesets", ..]) if s.no_rulesets => {
            message(StatusCode::NOT_FOUND, "Not Found")
        }
        ("GET", ["repos", _, _, "rules", "branches", branch]) => {
            let mut rules = Vec::new();
            for (id, set) in &s.rulesets {
                if !applies(set, branch, &s.default_branch) {
                    continue;
                }
                for rule in set["rules"].as_array().into_iter().flatten() {
                    let mut rule = rule.clone();
                    rule["ruleset_id"] = json!(id);
                    rule["ruleset_source_type"] = set["source_type"].clone();
                    rule["ruleset_source"] = set["source"].clone();
                    rules.push(rule);
                }
            }
            answer(StatusCode::OK, Value::Array(rules))
        }
        ("GET", ["repos", _, _, "rulesets", id]) => {
            match id.parse().ok().and_then(|id: u64| s.rulesets.get(&id)) {
                Some(set) => answer(StatusCode::OK, set.clone()),
                None => message(StatusCode::NOT_FOUND, "Not Found"),
            }
        }
        ("PUT", ["repos", _, _, "rulesets", id]) => {
            let Some(set) = id.parse().ok().and_then(|id: u64| s.rulesets.get_mut(&id)) else {
                return message(StatusCode::NOT_FOUND, "Not Found");
            };
            if let Some(obj) = body.as_object() {
                for (k, v) in obj {
                    set[k] = v.clone();
                }
            }
            answer(StatusCode::OK, set.clone())
        }
        ("POST", ["repos", owner, name, "rulesets"]) => {
            if body["name"].as_str().is_none_or(str::is_empty) || !body["rules"].is_array() {
                return message(StatusCode::UNPROCESSABLE_ENTITY, "Validation Failed");
            }
            let id = s.rulesets.keys().max().copied().unwrap_or(0) + 1;
            let mut set = body.clone();
            set["id"] = json!(id);
            set["source_type"] = json!("Repository");
            set["source"] = json!(format!("{owner}/{name}"));
            s.rulesets.insert(id, set.clone());
            answer(StatusCode::CREATED, set)
        }
        ("GET", ["repos", _, _, "branches", branch, "protection", "required_status_checks"]) => {
            match s.classic.get(*branch) {
                Some(contexts) => answer(
                    StatusCode::OK,
                    json!({"strict": false, "contexts": contexts, "checks": contexts.iter().map(|c| json!({"context": c, "app_id": null})).collect::<Vec<_>>()}),
                ),
                None => message(StatusCode::NOT_FOUND, "Branch not protected"),
            }
        }
        ("PATCH", ["repos", _, _, "branches", branch, "protection", "required_status_checks"]) => {
            let Some(contexts) = s.classic.get_mut(*branch) else {
                return message(StatusCode::NOT_FOUND, "Branch not protected");
            };
            *contexts = body["contexts"]
                .as_array()
                .map(|a| a.iter().filter_map(|c| c.as_str().map(str::to_string)).collect())
                .unwrap_or_default();
            let contexts = contexts.clone();
            answer(StatusCode::OK, json!({"strict": body["strict"], "contexts": contexts}))
        }
        _ => message(StatusCode::NOT_FOUND, "Not Found"),
    }
}

/// Whether a ruleset's `conditions.ref_name.include` names `branch`.
fn applies(set: &Value, branch: &str, default_branch: &str) -> bool {
    if set["enforcement"] != "active" {
        return false;
    }
    set["conditions"]["ref_name"]["include"].as_array().into_iter().flatten().filter_map(Value::as_str).any(
        |r| {
            r == "~ALL"
                || (r == "~DEFAULT_BRANCH" && branch == default_branch)
                || r == format!("refs/heads/{branch}")
        },
    )
}

fn post_status(s: &mut State, sha: &str, body: &Value) -> Response {
    s.posts += 1;
    if let Some((every, retry_after)) = s.throttle
        && s.posts.is_multiple_of(every)
    {
        let mut r = message(
            StatusCode::FORBIDDEN,
            "You have exceeded a secondary rate limit. Please wait a few minutes before you try again.",
        );
        r.headers_mut().insert("retry-after", retry_after.to_string().parse().unwrap());
        return r;
    }
    let state = body["state"].as_str().unwrap_or("");
    if !["pending", "success", "failure", "error"].contains(&state) {
        return message(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Validation Failed: state is not included in the list",
        );
    }
    let Some(context) = body["context"].as_str().filter(|c| !c.is_empty()) else {
        return message(StatusCode::UNPROCESSABLE_ENTITY, "Validation Failed: context is missing");
    };
    let description = body["description"].as_str().unwrap_or("");
    if description.chars().count() > 140 {
        return message(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Validation Failed: description is too long (maximum is 140 characters)",
        );
    }
    if s.statuses.iter().filter(|p| p.sha == sha && p.context == context).count() >= 1000 {
        return message(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Validation Failed: This SHA and context has reached the maximum number of statuses.",
        );
    }
    s.statuses.push(Posted {
        sha: sha.into(),
        context: context.into(),
        state: state.into(),
        description: description.into(),
    });
    answer(StatusCode::CREATED, json!({"state": state, "context": context, "description": description}))
}

/// Requests sent while an earlier limit's wait had not elapsed: each as `path at +ms`.
pub fn early_requests(requests: &[Seen]) -> Vec<String> {
    let mut until: Option<Instant> = None;
    let mut early = Vec::new();
    for r in requests {
        if let Some(t) = until
            && r.at < t
        {
            early.push(format!("{} {} {}ms early", r.method, r.path, (t - r.at).as_millis()));
        }
        if let Some(after) = r.retry_after {
            until = Some(r.at + Duration::from_secs(after));
        }
        if let Some(reset) = r.reset {
            // The reset is a wall-clock second; allow for the second the answer fell in.
            until = Some(
                r.at + Duration::from_secs(reset.saturating_sub(epoch_of(r.at)))
                    .saturating_sub(Duration::from_secs(1)),
            );
        }
    }
    early
}

/// The wall-clock second of an `Instant` in the past.
fn epoch_of(at: Instant) -> u64 {
    let ago = Instant::now().saturating_duration_since(at);
    (SystemTime::now() - ago).duration_since(UNIX_EPOCH).unwrap().as_secs()
}
