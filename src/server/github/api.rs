//! GitHub's REST API as odu uses it, over octocrab's raw requests (odu reads the answers'
//! headers itself: `retry-after`, `x-ratelimit-*`). The token lives in this process's memory
//! only; octocrab marks its header sensitive, and nothing here prints it.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http_body_util::BodyExt;
use octocrab::Octocrab;
use serde::Deserialize;

use super::queue::Failure;
use super::status::Status;

/// A GitHub token. Its `Debug` never shows it.
#[derive(Clone)]
pub struct Token(String);

impl Token {
    pub fn new(token: String) -> Token {
        Token(token)
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(…)")
    }
}

/// The variables a token may come in, in the order they are read. odu removes them from every
/// environment it hands on (lanes, tools).
pub const TOKEN_VARS: [&str; 2] = ["GH_TOKEN", "GITHUB_TOKEN"];

/// Overrides the API's base URL (GitHub Enterprise, tests).
pub const API_VAR: &str = "ODU_GITHUB_API";

/// A repository on a GitHub host, from a remote URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Remote {
    pub host: String,
    pub owner: String,
    pub name: String,
}

/// Hosts known not to be GitHub: an origin there is refused rather than taken for an
/// Enterprise server.
const NOT_GITHUB: [&str; 5] = ["gitlab.com", "bitbucket.org", "codeberg.org", "git.sr.ht", "gitea.com"];

impl Remote {
    /// `https://host/o/r(.git)`, `git@host:o/r(.git)`, `ssh://git@host(:port)/o/r(.git)`;
    /// `None` for anything else (a local path, a `file://` URL, a path that is not `owner/repo`).
    pub fn parse(url: &str) -> Option<Remote> {
        let url = url.trim();
        let (host, path) = if let Some(rest) = url
            .strip_prefix("https://")
            .or_else(|| url.strip_prefix("http://"))
            .or_else(|| url.strip_prefix("ssh://"))
        {
            let (authority, path) = rest.split_once('/')?;
            let host = authority.rsplit('@').next()?;
            let host = host.split(':').next()?;
            (host, path)
        } else if let Some((user_host, path)) = url.split_once(':')
            && let Some((_, host)) = user_host.split_once('@')
            && !user_host.contains('/')
        {
            (host, path)
        } else {
            return None;
        };
        let path = path.trim_end_matches('/');
        let path = path.strip_suffix(".git").unwrap_or(path);
        let mut parts = path.split('/');
        let (owner, name) = (parts.next()?, parts.next()?);
        let valid = |s: &str| !s.is_empty() && s != "." && s != ".." && !s.contains(char::is_whitespace);
        if parts.next().is_some() || !valid(owner) || !valid(name) || host.is_empty() {
            return None;
        }
        if NOT_GITHUB.contains(&host.to_ascii_lowercase().as_str()) {
            return None;
        }
        Some(Remote { host: host.to_ascii_lowercase(), owner: owner.into(), name: name.into() })
    }

    /// `owner/repo`.
    pub fn slug(&self) -> String {
        format!("{}/{}", self.owner, self.name)
    }

    /// The REST API's base: `https://api.github.com`, or `https://<host>/api/v3` for GitHub
    /// Enterprise; `override_base` (`ODU_GITHUB_API`) wins.
    pub fn api_base(&self, override_base: Option<&str>) -> String {
        match override_base.filter(|b| !b.is_empty()) {
            Some(base) => base.trim_end_matches('/').to_string(),
            None if self.host == "github.com" => "https://api.github.com".into(),
            None => format!("https://{}/api/v3", self.host),
        }
    }
}

/// Where to post: the API and the repository.
#[derive(Clone)]
pub struct Api {
    octo: Octocrab,
    pub base: String,
    pub remote: Remote,
}

/// One answer, with what odu reads of it.
pub struct Answer {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }

    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, String> {
        serde_json::from_slice(&self.body).map_err(|e| format!("GitHub answered oddly: {e}"))
    }

    /// GitHub's `message`, else the body's start.
    pub fn message(&self) -> String {
        #[derive(Deserialize)]
        struct Body {
            message: Option<String>,
        }
        match serde_json::from_slice::<Body>(&self.body) {
            Ok(Body { message: Some(m) }) => m,
            _ => String::from_utf8_lossy(&self.body[..self.body.len().min(200)]).trim().to_string(),
        }
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Sorts an answer that is not a success: a rate limit (and how long to wait), a passing
    /// failure, or a refusal.
    pub fn failure(&self) -> (Failure, Limit) {
        let said = format!("HTTP {}: {}", self.status, self.message());
        let retry_after = self.header("retry-after").and_then(|v| v.trim().parse::<u64>().ok());
        let remaining = self.header("x-ratelimit-remaining").map(str::trim);
        let reset = self.header("x-ratelimit-reset").and_then(|v| v.trim().parse::<u64>().ok());
        match self.status {
            403 | 429 if remaining == Some("0") && retry_after.is_none() => {
                (Failure::Limited(said), Limit::Primary { reset_epoch: reset })
            }
            403 | 429
                if retry_after.is_some()
                    || self.status == 429
                    || self.message().to_ascii_lowercase().contains("rate limit") =>
            {
                (
                    Failure::Limited(said),
                    Limit::Secondary { retry_after: retry_after.map(Duration::from_secs) },
                )
            }
            422 if self.message().contains("maximum number of statuses") => {
                (Failure::Full(said), Limit::None)
            }
            500..=599 => (Failure::Passing(said), Limit::None),
            _ => (Failure::Refused(said), Limit::None),
        }
    }
}

/// A rate limit an answer reported.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Limit {
    None,
    /// `x-ratelimit-remaining: 0`: wait until `x-ratelimit-reset` (seconds since the epoch).
    Primary {
        reset_epoch: Option<u64>,
    },
    /// A secondary limit: `retry-after` seconds when given.
    Secondary {
        retry_after: Option<Duration>,
    },
}

impl Limit {
    /// How long from now a primary limit lasts.
    pub fn primary_wait(reset_epoch: Option<u64>) -> Duration {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        match reset_epoch {
            Some(reset) => Duration::from_secs(reset.saturating_sub(now) + 1),
            None => Duration::from_secs(60),
        }
    }
}

/// One status as GitHub lists it.
#[derive(Debug, Deserialize)]
pub struct Listed {
    pub context: String,
    pub state: String,
    #[serde(default)]
    pub description: Option<String>,
}

impl Api {
    pub fn new(base: String, remote: Remote, token: &Token) -> Result<Api, String> {
        let octo = Octocrab::builder()
            .base_uri(base.as_str())
            .map_err(|e| format!("the GitHub API address {base} is not a URL: {e}"))?
            .personal_token(token.0.clone())
            .set_connect_timeout(Some(Duration::from_secs(10)))
            .set_read_timeout(Some(Duration::from_secs(30)))
            .set_write_timeout(Some(Duration::from_secs(30)))
            .build()
            .map_err(|e| format!("cannot set up the GitHub client: {e}"))?;
        Ok(Api { octo, base, remote })
    }

    fn path(&self, rest: &str) -> String {
        // octocrab joins a path to the base, keeping the base's own path (`/api/v3`).
        format!("/repos/{}/{}{rest}", self.remote.owner, self.remote.name)
    }

    async fn collect(
        response: octocrab::Result<
            http::Response<http_body_util::combinators::BoxBody<bytes::Bytes, octocrab::Error>>,
        >,
    ) -> Result<Answer, String> {
        let response = response.map_err(|e| format!("cannot reach GitHub: {}", octocrab_error(&e)))?;
        let (parts, body) = response.into_parts();
        let body = body
            .collect()
            .await
            .map_err(|e| format!("GitHub's answer broke off: {}", octocrab_error(&e)))?
            .to_bytes()
            .to_vec();
        Ok(Answer { status: parts.status.as_u16(), headers: parts.headers, body })
    }

    pub async fn get(&self, rest: &str) -> Result<Answer, String> {
        Api::collect(self.octo._get(self.path(rest)).await).await
    }

    pub async fn send(
        &self,
        method: http::Method,
        rest: &str,
        body: &serde_json::Value,
    ) -> Result<Answer, String> {
        let path = self.path(rest);
        let response = match method {
            http::Method::POST => self.octo._post(path, Some(body)).await,
            http::Method::PUT => self.octo._put(path, Some(body)).await,
            http::Method::PATCH => self.octo._patch(path, Some(body)).await,
            other => return Err(format!("odu does not send {other} requests")),
        };
        Api::collect(response).await
    }

    /// `POST /repos/o/r/statuses/<sha>`.
    pub async fn post_status(&self, sha: &str, context: &str, status: &Status) -> Result<Answer, String> {
        let body = serde_json::json!({
            "state": status.state.as_str(),
            "description": status.description,
            "context": context,
        });
        self.send(http::Method::POST, &format!("/statuses/{sha}"), &body).await
    }

    /// One page of `GET /repos/o/r/commits/<sha>/statuses`, newest first.
    pub async fn list_statuses(&self, sha: &str, page: u32) -> Result<Answer, String> {
        self.get(&format!("/commits/{sha}/statuses?per_page=100&page={page}")).await
    }
}

/// octocrab's error without its backtrace.
fn octocrab_error(e: &octocrab::Error) -> String {
    use std::error::Error;
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text = format!("{text}: {s}");
        source = s.source();
    }
    text.lines().next().unwrap_or_default().to_string()
}

/// The token for posting: `GH_TOKEN`, else `GITHUB_TOKEN`, else what `gh auth token` prints
/// (when gh is installed), all read from `env`, the starting client's environment.
pub fn find_token(env: &crate::tool::Env, dir: &std::path::Path) -> Option<Token> {
    for var in TOKEN_VARS {
        if let Some(token) = env.get(var).map(|t| t.trim()).filter(|t| !t.is_empty()) {
            return Some(Token(token.to_string()));
        }
    }
    let child = crate::tool::start_with("gh", &["auth", "token"], dir, Some(env)).ok()?;
    let out = crate::tool::finish(child).ok()?;
    let token = out.stdout.trim();
    (out.success && !token.is_empty() && !token.contains(char::is_whitespace))
        .then(|| Token(token.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_remote_is_read_from_every_form_git_accepts() {
        let r =
            |o: &str, n: &str| Some(Remote { host: "github.com".into(), owner: o.into(), name: n.into() });
        assert_eq!(Remote::parse("https://github.com/juspay/odu"), r("juspay", "odu"));
        assert_eq!(Remote::parse("https://github.com/juspay/odu.git"), r("juspay", "odu"));
        assert_eq!(Remote::parse("https://user@github.com/juspay/odu/"), r("juspay", "odu"));
        assert_eq!(Remote::parse("git@github.com:juspay/odu.git"), r("juspay", "odu"));
        assert_eq!(Remote::parse("ssh://git@github.com/juspay/odu"), r("juspay", "odu"));
        assert_eq!(Remote::parse("ssh://git@github.com:22/juspay/odu.git"), r("juspay", "odu"));
        let ghe = Remote::parse("git@ghe.example.com:team/app.git").unwrap();
        assert_eq!(ghe.host, "ghe.example.com");
        assert_eq!(ghe.api_base(None), "https://ghe.example.com/api/v3");
        assert_eq!(r("a", "b").unwrap().api_base(None), "https://api.github.com");
        assert_eq!(ghe.api_base(Some("http://127.0.0.1:9/")), "http://127.0.0.1:9");
        for not in [
            "/srv/git/app.git",
            "file:///srv/git/app",
            "https://github.com/only",
            "https://git.sr.ht/~x/y",
            "https://gitlab.com/a/b",
            "https://github.com/a/b/c",
            "../relative",
        ] {
            assert_eq!(Remote::parse(not), None, "{not}");
        }
    }

    #[test]
    fn a_token_never_shows_in_debug_output() {
        assert_eq!(format!("{:?}", Token("ghp_secret".into())), "Token(…)");
    }

    fn answer(status: u16, headers: &[(&str, &str)], body: &str) -> Answer {
        let mut map = http::HeaderMap::new();
        for (k, v) in headers {
            map.insert(http::HeaderName::from_bytes(k.as_bytes()).unwrap(), v.parse().unwrap());
        }
        Answer { status, headers: map, body: body.as_bytes().to_vec() }
    }

    #[test]
    fn answers_are_sorted_as_github_documents_its_limits() {
        let limited = |a: Answer| a.failure().1;
        assert_eq!(
            limited(answer(
                403,
                &[("x-ratelimit-remaining", "0"), ("x-ratelimit-reset", "1700000000")],
                "{}"
            )),
            Limit::Primary { reset_epoch: Some(1_700_000_000) }
        );
        assert_eq!(
            limited(answer(403, &[("retry-after", "3")], "{}")),
            Limit::Secondary { retry_after: Some(Duration::from_secs(3)) }
        );
        assert_eq!(
            limited(answer(403, &[], r#"{"message":"You have exceeded a secondary rate limit"}"#)),
            Limit::Secondary { retry_after: None }
        );
        assert_eq!(limited(answer(429, &[], "{}")), Limit::Secondary { retry_after: None });
        assert!(matches!(
            answer(403, &[], r#"{"message":"Resource not accessible"}"#).failure(),
            (Failure::Refused(_), Limit::None)
        ));
        assert!(matches!(answer(502, &[], "").failure().0, Failure::Passing(_)));
        assert!(
            matches!(answer(401, &[], r#"{"message":"Bad credentials"}"#).failure().0, Failure::Refused(m) if m == "HTTP 401: Bad credentials")
        );
        assert!(matches!(
            answer(
                422,
                &[],
                r#"{"message":"This SHA and context has reached the maximum number of statuses."}"#
            )
            .failure()
            .0,
            Failure::Full(_)
        ));
    }
}
