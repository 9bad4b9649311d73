//! GitHub commit statuses, posted by the server as one more projection of a run: every node
//! transition becomes the status its context should show ([`status`]), a per-context queue
//! keeps only the latest wish ([`queue`]), and the poster task sends them over the API
//! ([`api`]) within GitHub's limits. Posting never blocks or fails the run: the verdict is the
//! run's alone, and what never got through is recorded (the header's `posting`, the record's
//! `unposted`). The poster outlives its run until it owes nothing or gave up.

pub mod api;
pub mod queue;
pub mod status;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use odu_core::NodeStatus;
use odu_core::run::Posting;
use tokio::sync::{mpsc, watch};

use api::{Api, Limit};
use queue::{Failure, MAX_ATTEMPTS, Pacer, Queue, Unposted, backoff};
use status::{State, Status};

/// Where a run posts: the API's base, the repository, the token and the commit.
pub struct Target {
    pub base: String,
    pub remote: api::Remote,
    pub token: api::Token,
    pub sha: String,
    /// Pace posts below GitHub's content-creation limits (off only against a fake API).
    pub pacer: Pacer,
}

/// How posting stands.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    pub owed: Vec<Unposted>,
    /// Nothing owed will be tried again.
    pub settled: bool,
    /// The run ended and the poster finished: this report is the last.
    pub done: bool,
    pub last_error: Option<String>,
    /// How many wishes the poster had taken when it made this report.
    pub taken: u64,
}

impl Report {
    /// The header's `posting`.
    pub fn posting(&self) -> Posting {
        Posting { owed: self.owed.len(), trying: !self.settled, last_error: self.last_error.clone() }
    }
}

enum Wish {
    Status {
        context: String,
        status: Status,
        log: String,
    },
    /// The run stops: contexts still `pending` get `error` with the reason.
    Stop(String),
    /// The run ended; the poster finishes what it owes and stops.
    Ended,
}

/// The handle to a run's poster task.
#[derive(Clone)]
pub struct Poster {
    wishes: mpsc::UnboundedSender<Wish>,
    report: watch::Receiver<Report>,
    /// Wishes sent to the task: a report that has not taken them all is not settled yet.
    sent: Arc<AtomicU64>,
}

impl Poster {
    pub fn start(target: Target) -> Poster {
        let (wishes, rx) = mpsc::unbounded_channel();
        let (report_tx, report) = watch::channel(Report { settled: true, ..Report::default() });
        tokio::spawn(post(target, rx, report_tx));
        Poster { wishes, report, sent: Arc::new(AtomicU64::new(0)) }
    }

    fn wish(&self, wish: Wish) {
        self.sent.fetch_add(1, Ordering::SeqCst);
        let _ = self.wishes.send(wish);
    }

    /// A node moved to `to`: the status its context should show, if any.
    pub fn transition(&self, context: &str, to: NodeStatus, duration_ms: Option<u64>, log: &str) {
        if let Some(status) = status::for_transition(to, duration_ms, log) {
            self.wish(Wish::Status { context: context.into(), status, log: log.into() });
        }
    }

    pub fn stop(&self, reason: &str) {
        self.wish(Wish::Stop(reason.into()));
    }

    pub fn ended(&self) {
        self.wish(Wish::Ended);
    }

    /// How posting stands, counting the wishes the task has not taken yet as work to do.
    pub fn report(&self) -> Report {
        let mut report = self.report.borrow().clone();
        if report.taken < self.sent.load(Ordering::SeqCst) {
            report.settled = false;
            report.done = false;
        }
        report
    }

    pub fn watch(&self) -> watch::Receiver<Report> {
        self.report.clone()
    }
}

/// Pages of existing statuses read before the first post (100 each).
const MAX_SEED_PAGES: u32 = 20;

struct PostTask {
    /// The client, or why there is none (every post fails with it).
    api: Result<Api, String>,
    sha: String,
    pacer: Pacer,
    queue: Queue,
    started: Instant,
    /// The commit's existing statuses were read (or could not be, and odu gave up reading).
    seeded: bool,
    seed_attempts: u32,
    seed_not_before: Duration,
    ended: bool,
    stop_reason: Option<String>,
    taken: u64,
}

async fn post(target: Target, mut wishes: mpsc::UnboundedReceiver<Wish>, report: watch::Sender<Report>) {
    let Target { base, remote, token, sha, pacer } = target;
    let mut p = PostTask {
        api: Api::new(base, remote, &token),
        sha,
        pacer,
        queue: Queue::default(),
        started: Instant::now(),
        seeded: false,
        seed_attempts: 0,
        seed_not_before: Duration::ZERO,
        ended: false,
        stop_reason: None,
        taken: 0,
    };
    loop {
        while let Ok(wish) = wishes.try_recv() {
            p.take(wish);
        }
        let now = p.started.elapsed();
        let settled = p.queue.settled();
        let current = Report {
            owed: p.queue.owed(),
            settled,
            done: p.ended && settled,
            last_error: p.queue.last_error(),
            taken: p.taken,
        };
        report.send_if_modified(|r| {
            let changed = *r != current;
            *r = current.clone();
            changed
        });
        if current.done {
            return;
        }
        // What to do next, and from when.
        let wake = if settled {
            None
        } else if !p.seeded {
            let at = p.pacer.request_at().max(p.seed_not_before);
            if at <= now {
                p.seed(now).await;
                continue;
            }
            Some(at)
        } else if let Some((context, status)) = p.queue.next(now) {
            let at = p.pacer.post_at();
            if at <= now {
                p.send(&context, &status, now).await;
                continue;
            }
            Some(at)
        } else {
            p.queue.next_due()
        };
        let sleep = crate::clock::until(wake.map(|at| (p.started + at).into()));
        tokio::select! {
            wish = wishes.recv() => match wish {
                Some(wish) => p.take(wish),
                // Every handle is gone: the run is over.
                None => p.end(),
            },
            _ = sleep => {}
        }
    }
}

impl PostTask {
    fn take(&mut self, wish: Wish) {
        self.taken += 1;
        match wish {
            Wish::Status { context, status, log } => self.queue.want(&context, status, &log),
            Wish::Stop(reason) => {
                self.queue.interrupt(&reason);
                self.stop_reason.get_or_insert(reason);
            }
            Wish::Ended => self.end(),
        }
    }

    /// The run ended: what is still `pending` gets `error`, and the poster stops once it owes
    /// nothing more it can post.
    fn end(&mut self) {
        if !self.ended {
            self.ended = true;
            let reason = self.stop_reason.clone().unwrap_or_else(|| "run ended".into());
            self.queue.interrupt(&reason);
        }
    }

    /// Applies a rate limit an answer reported.
    fn limited(&mut self, limit: Limit, now: Duration) {
        match limit {
            Limit::None => self.pacer.clear(),
            Limit::Primary { reset_epoch } => self.pacer.primary(now + Limit::primary_wait(reset_epoch)),
            Limit::Secondary { retry_after } => self.pacer.secondary(now, retry_after),
        }
    }

    /// Reads what GitHub shows for the commit, so nothing it already shows is posted again.
    async fn seed(&mut self, now: Duration) {
        let mut seen: Vec<(String, Status, u32)> = Vec::new();
        for page in 1..=MAX_SEED_PAGES {
            let answer = match &self.api {
                Ok(api) => api.list_statuses(&self.sha, page).await,
                Err(e) => Err(e.clone()),
            };
            let failure = match &answer {
                Ok(a) if a.ok() => match a.json::<Vec<api::Listed>>() {
                    Ok(listed) => {
                        let last = listed.len() < 100;
                        for l in listed {
                            match seen.iter_mut().find(|(c, _, _)| *c == l.context) {
                                Some((_, _, count)) => *count += 1,
                                None => {
                                    let Some(state) = parse_state(&l.state) else { continue };
                                    let status =
                                        Status { state, description: l.description.unwrap_or_default() };
                                    seen.push((l.context, status, 1));
                                }
                            }
                        }
                        self.pacer.clear();
                        if last {
                            break;
                        }
                        continue;
                    }
                    Err(e) => Failure::Passing(e),
                },
                Ok(a) => {
                    let (failure, limit) = a.failure();
                    self.limited(limit, self.started.elapsed());
                    failure
                }
                Err(e) => Failure::Passing(e.clone()),
            };
            match failure {
                Failure::Limited(e) => {
                    self.queue.unread(&e);
                    return;
                }
                Failure::Passing(e) | Failure::Refused(e) | Failure::Full(e) => {
                    self.queue.unread(&e);
                    self.seed_attempts += 1;
                    note(&format!("cannot read the commit's existing statuses: {e}"));
                    if self.seed_attempts >= MAX_ATTEMPTS {
                        // Post anyway: at worst GitHub shows a status twice.
                        self.seeded = true;
                    } else {
                        self.seed_not_before = now + backoff(self.seed_attempts);
                    }
                    return;
                }
            }
        }
        for (context, status, count) in seen {
            self.queue.seed(&context, status, count);
        }
        self.seeded = true;
    }

    async fn send(&mut self, context: &str, status: &Status, now: Duration) {
        self.pacer.posted(now);
        let answer = match &self.api {
            Ok(api) => api.post_status(&self.sha, context, status).await,
            Err(e) => Err(e.clone()),
        };
        let later = self.started.elapsed();
        let result = match answer {
            Ok(a) if a.ok() => {
                self.pacer.clear();
                Ok(())
            }
            Ok(a) => {
                let (failure, limit) = a.failure();
                self.limited(limit, later);
                Err(failure)
            }
            Err(e) => Err(Failure::Passing(e)),
        };
        if let Err(e) = &result {
            tracing::debug!(context, error = ?e, "a status did not land");
        }
        self.queue.answered(context, status, result, later);
    }
}

fn parse_state(s: &str) -> Option<State> {
    match s {
        "pending" => Some(State::Pending),
        "success" => Some(State::Success),
        "failure" => Some(State::Failure),
        "error" => Some(State::Error),
        _ => None,
    }
}

fn note(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "odu: github: {line}");
}
