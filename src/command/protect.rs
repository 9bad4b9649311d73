//! `odu protect`: make a branch require exactly the statuses odu posts — every pipeline node on
//! every platform (after OS filtering), minus `_ci-setup` — through the repository ruleset that
//! requires status checks, else classic branch protection where rulesets are unavailable.

use std::collections::BTreeSet;

use serde_json::{Value, json};

use crate::cli::ProtectArgs;
use crate::error::{CliError, CliResult, outln, say};
use crate::hosts;
use crate::server::github::api::{API_VAR, Answer, Api, Remote, find_token};
use crate::tool::{git, just};

/// The contexts a branch should require, sorted.
fn contexts(args: &ProtectArgs, repo: &std::path::Path) -> CliResult<Vec<String>> {
    let platforms: Vec<String> = if args.platforms.is_empty() {
        let env = |k: &str| std::env::var(k).ok();
        let hosts = hosts::resolve(&[], &env)?;
        if !hosts.defaulted {
            say(format!(
                "odu: platforms from {} (a file on this machine): pass --platform to name them",
                hosts.source
            ));
        }
        hosts.entries.keys().cloned().collect()
    } else {
        for p in &args.platforms {
            hosts::check_platform(p).map_err(|e| CliError::usage(format!("--platform {p:?}: {e}")))?;
        }
        args.platforms.clone()
    };
    let dump = just::dump(repo)?;
    let plan = odu_core::Plan::from_dump(&dump, args.root.as_deref())?;
    let mut contexts = BTreeSet::new();
    for platform in &platforms {
        for task in plan.lane_tasks(platform, &[], false) {
            contexts.insert(format!("{}@{platform}", task.id));
        }
    }
    Ok(contexts.into_iter().collect())
}

pub fn protect(args: ProtectArgs) -> CliResult<i32> {
    let repo = git::toplevel(&super::current_dir()?)?;
    let contexts = contexts(&args, &repo)?;
    if contexts.is_empty() {
        return Err(CliError::refused("no contexts to require: no platform runs any recipe of the pipeline"));
    }
    if args.dry_run {
        outln(contexts.join("\n"))?;
        return Ok(0);
    }
    let origin = git::origin(&repo).ok_or_else(|| {
        CliError::refused("odu protect needs a GitHub origin remote: add one (git remote add origin …)")
    })?;
    let remote = Remote::parse(&origin).ok_or_else(|| {
        CliError::refused(format!("odu protect needs a GitHub origin, and origin is {origin}"))
    })?;
    let env: crate::tool::Env = std::env::vars().collect();
    let token = find_token(&env, &repo).ok_or_else(|| {
        CliError::refused(
            "odu protect needs a GitHub token with admin rights: set GH_TOKEN or GITHUB_TOKEN, or log in with gh auth login",
        )
    })?;
    let base = remote.api_base(env.get(API_VAR).map(String::as_str));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::refused(format!("cannot start the async runtime: {e}")))?;
    runtime.block_on(async {
        let api = Api::new(base, remote, &token).map_err(CliError::refused)?;
        let (branch, defaulted) = match &args.branch {
            Some(b) => (b.clone(), false),
            None => {
                let answer = call(api.get("").await, "read the repository")?;
                let repo: Value = answer.json().map_err(CliError::refused)?;
                let branch = repo["default_branch"].as_str().ok_or_else(|| {
                    CliError::refused("GitHub did not name the default branch: pass --branch B")
                })?;
                (branch.to_string(), true)
            }
        };
        for line in require(&api, &branch, defaulted, &contexts, args.create).await? {
            say(format!("odu: {line}"));
        }
        Ok(0)
    })
}

/// A successful answer, or a refusal that says what failed.
fn call(answer: Result<Answer, String>, what: &str) -> CliResult<Answer> {
    let answer = answer.map_err(|e| CliError::refused(format!("cannot {what}: {e}")))?;
    if !answer.ok() {
        return Err(CliError::refused(format!(
            "cannot {what}: HTTP {}: {}",
            answer.status,
            answer.message()
        )));
    }
    Ok(answer)
}

/// What changed, as `+added` and `-removed` contexts.
fn change(before: &BTreeSet<String>, after: &[String]) -> String {
    let after: BTreeSet<String> = after.iter().cloned().collect();
    let added: Vec<String> = after.difference(before).map(|c| format!("+{c}")).collect();
    let removed: Vec<String> = before.difference(&after).map(|c| format!("-{c}")).collect();
    if added.is_empty() && removed.is_empty() {
        "unchanged".into()
    } else {
        [added, removed].concat().join(" ")
    }
}

fn checks(contexts: &[String]) -> Value {
    Value::Array(contexts.iter().map(|c| json!({"context": c})).collect())
}

async fn require(
    api: &Api,
    branch: &str,
    defaulted: bool,
    contexts: &[String],
    create: bool,
) -> CliResult<Vec<String>> {
    let n = contexts.len();
    let rules = api
        .get(&format!("/rules/branches/{branch}"))
        .await
        .map_err(|e| CliError::refused(format!("cannot read the rules of {branch}: {e}")))?;
    if rules.status == 404 || rules.status == 403 && rules.message().contains("Upgrade") {
        return classic(api, branch, contexts).await;
    }
    let rules = call(Ok(rules), &format!("read the rules of {branch}"))?;
    let rules: Vec<Value> = rules.json().map_err(CliError::refused)?;
    let requiring: BTreeSet<(u64, String)> = rules
        .iter()
        .filter(|r| r["type"] == "required_status_checks")
        .filter_map(|r| {
            Some((
                r["ruleset_id"].as_u64()?,
                r["ruleset_source_type"].as_str().unwrap_or("Repository").to_string(),
            ))
        })
        .collect();
    match requiring.len() {
        0 if !create => Err(CliError::refused(format!(
            "no ruleset requires status checks on {branch}: pass --create to create one that requires the {n} contexts (or run odu protect --dry-run to see them)"
        ))),
        0 => {
            let include =
                if defaulted { "~DEFAULT_BRANCH".to_string() } else { format!("refs/heads/{branch}") };
            let body = json!({
                "name": "odu",
                "target": "branch",
                "enforcement": "active",
                "bypass_actors": [],
                "conditions": {"ref_name": {"include": [include], "exclude": []}},
                "rules": [{
                    "type": "required_status_checks",
                    "parameters": {
                        "required_status_checks": checks(contexts),
                        "strict_required_status_checks_policy": false,
                        "do_not_enforce_on_create": false,
                    },
                }],
            });
            let answer = call(api.send(http::Method::POST, "/rulesets", &body).await, "create a ruleset")?;
            let created: Value = answer.json().map_err(CliError::refused)?;
            Ok(vec![format!(
                "created ruleset odu (#{}) requiring {n} contexts on {branch}: {}",
                created["id"],
                change(&BTreeSet::new(), contexts)
            )])
        }
        1 => {
            let (id, source) = requiring.into_iter().next().expect("one");
            if source != "Repository" {
                return Err(CliError::refused(format!(
                    "the ruleset requiring checks on {branch} (#{id}) belongs to the {}: change it there, odu only edits the repository's own rulesets",
                    source.to_lowercase()
                )));
            }
            let answer = call(api.get(&format!("/rulesets/{id}")).await, &format!("read ruleset #{id}"))?;
            let mut set: Value = answer.json().map_err(CliError::refused)?;
            let mut before = BTreeSet::new();
            let mut rules = set["rules"].as_array().cloned().unwrap_or_default();
            for rule in rules.iter_mut().filter(|r| r["type"] == "required_status_checks") {
                for c in rule["parameters"]["required_status_checks"].as_array().into_iter().flatten() {
                    if let Some(c) = c["context"].as_str() {
                        before.insert(c.to_string());
                    }
                }
                rule["parameters"]["required_status_checks"] = checks(contexts);
            }
            set["rules"] = Value::Array(rules);
            let name = set["name"].as_str().unwrap_or("").to_string();
            let body = json!({"rules": set["rules"]});
            call(
                api.send(http::Method::PUT, &format!("/rulesets/{id}"), &body).await,
                &format!("update ruleset #{id}"),
            )?;
            Ok(vec![format!(
                "ruleset {name} (#{id}) now requires {n} contexts on {branch}: {}",
                change(&before, contexts)
            )])
        }
        _ => Err(CliError::refused(format!(
            "{} rulesets require status checks on {branch} ({}): GitHub requires all of them; keep the checks in one ruleset, then rerun",
            requiring.len(),
            requiring.iter().map(|(id, _)| format!("#{id}")).collect::<Vec<_>>().join(", ")
        ))),
    }
}

/// Classic branch protection's required status checks, where rulesets are unavailable.
async fn classic(api: &Api, branch: &str, contexts: &[String]) -> CliResult<Vec<String>> {
    let path = format!("/branches/{branch}/protection/required_status_checks");
    let current = api
        .get(&path)
        .await
        .map_err(|e| CliError::refused(format!("cannot read {branch}'s protection: {e}")))?;
    if current.status == 404 {
        return Err(CliError::refused(format!(
            "{branch} is not protected and this repository has no rulesets: protect the branch on GitHub first, then rerun"
        )));
    }
    let current = call(Ok(current), &format!("read {branch}'s protection"))?;
    let before: BTreeSet<String> = current.json::<Value>().map_err(CliError::refused)?["contexts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c.as_str().map(str::to_string))
        .collect();
    let body = json!({"strict": false, "contexts": contexts});
    call(api.send(http::Method::PATCH, &path, &body).await, &format!("update {branch}'s protection"))?;
    Ok(vec![format!(
        "branch protection of {branch} (classic) now requires {} contexts: {}",
        contexts.len(),
        change(&before, contexts)
    )])
}
