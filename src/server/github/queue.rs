//! The poster's bookkeeping, free of IO and clocks (time comes in as a [`Duration`] since the
//! poster started): a per-context queue of desired states, and the pacer that keeps requests
//! within GitHub's rate limits.
//!
//! The queue keeps, per context, what odu wants GitHub to show and what GitHub shows (read
//! before the first post, then what odu posted). Only the latest wish is ever sent: a
//! `pending` not yet sent is dropped once the node's terminal state is known, so GitHub never
//! moves backwards, and a wish GitHub already shows is not sent at all.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use super::status::{State, Status, for_interrupt};

/// GitHub keeps at most this many statuses per sha and context; it refuses more.
pub const MAX_PER_CONTEXT: u32 = 1000;
/// Attempts at one wish that failed for a passing reason (5xx, network) before giving up.
pub const MAX_ATTEMPTS: u32 = 8;
/// The first wait after a passing failure; it doubles up to [`MAX_BACKOFF`].
pub const FIRST_BACKOFF: Duration = Duration::from_secs(1);
pub const MAX_BACKOFF: Duration = Duration::from_secs(60);

pub use odu_core::run::Unposted;

/// Why one request did not land.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Failure {
    /// Worth trying again later: a 5xx, a network error.
    Passing(String),
    /// GitHub will never take it (a 401, a 404, a 422).
    Refused(String),
    /// The context has its [`MAX_PER_CONTEXT`] statuses for this sha.
    Full(String),
    /// A rate limit: the pacer waits, the wish stays as it was.
    Limited(String),
}

#[derive(Clone, Debug, Default)]
struct Context {
    /// What odu wants it to show.
    desired: Option<Status>,
    /// What GitHub shows, as far as odu knows.
    shown: Option<Status>,
    /// The node's log, for the `error` an interrupt posts.
    log: String,
    /// odu posted to it from this server.
    owned: bool,
    /// Statuses GitHub holds for it on this sha.
    count: u32,
    attempts: u32,
    last_error: Option<String>,
    not_before: Duration,
    /// No further attempt at the current wish (refused, or attempts used up), or the context
    /// is full: it stays owed.
    given_up: bool,
    /// When its current wish was first made: the oldest goes first.
    since: u64,
}

impl Context {
    fn owed(&self) -> bool {
        self.desired.is_some() && self.desired != self.shown
    }
}

/// The per-context queue (see the module documentation).
#[derive(Debug, Default)]
pub struct Queue {
    contexts: BTreeMap<String, Context>,
    wishes: u64,
}

impl Queue {
    /// What GitHub already shows for `context` on the sha (its latest status) and how many
    /// statuses it holds there. Contexts odu does not post are never touched.
    pub fn seed(&mut self, context: &str, shown: Status, count: u32) {
        let c = self.contexts.entry(context.to_string()).or_default();
        if c.shown.is_none() {
            c.shown = Some(shown);
            c.count = count;
        }
        if c.count >= MAX_PER_CONTEXT && c.owed() {
            c.given_up = true;
            c.last_error = Some(full(context));
        }
    }

    /// odu wants `context` to show `status` (its log is `log`). The wish replaces any earlier
    /// one not yet sent, keeping its place in line.
    pub fn want(&mut self, context: &str, status: Status, log: &str) {
        let c = self.contexts.entry(context.to_string()).or_default();
        if !c.owed() {
            self.wishes += 1;
            c.since = self.wishes;
        }
        c.log = log.to_string();
        if c.desired.as_ref() != Some(&status) {
            c.desired = Some(status);
            c.attempts = 0;
            c.not_before = Duration::ZERO;
            c.given_up = c.count >= MAX_PER_CONTEXT;
            if c.given_up {
                c.last_error = Some(full(context));
            }
        }
    }

    /// The run stopped: every context odu last posted (or means to post) `pending` gets `error`
    /// with the reason.
    pub fn interrupt(&mut self, reason: &str) {
        let stale: Vec<(String, String)> = self
            .contexts
            .iter()
            .filter(|(_, c)| c.owned || c.desired.is_some())
            .filter(|(_, c)| {
                c.desired.as_ref().or(c.shown.as_ref()).is_some_and(|s| s.state == State::Pending)
            })
            .map(|(name, c)| (name.clone(), c.log.clone()))
            .collect();
        for (name, log) in stale {
            self.want(&name, for_interrupt(reason, &log), &log);
        }
    }

    /// The next wish to send at `now`: the oldest owed context that may be tried.
    pub fn next(&self, now: Duration) -> Option<(String, Status)> {
        self.contexts
            .iter()
            .filter(|(_, c)| c.owed() && !c.given_up && c.not_before <= now)
            .min_by_key(|(_, c)| c.since)
            .map(|(name, c)| (name.clone(), c.desired.clone().expect("owed")))
    }

    /// When the next wish becomes due, if one is waiting out a backoff.
    pub fn next_due(&self) -> Option<Duration> {
        self.contexts.values().filter(|c| c.owed() && !c.given_up).map(|c| c.not_before).min()
    }

    /// The answer to sending `status` to `context` at `now`.
    pub fn answered(&mut self, context: &str, status: &Status, answer: Result<(), Failure>, now: Duration) {
        let Some(c) = self.contexts.get_mut(context) else { return };
        match answer {
            Ok(()) => {
                c.shown = Some(status.clone());
                c.owned = true;
                c.count += 1;
                c.attempts = 0;
                c.last_error = None;
            }
            // The wish changed while it was on its way: the new one is tried afresh.
            Err(_) if c.desired.as_ref() != Some(status) => {}
            Err(Failure::Limited(error)) => c.last_error = Some(error),
            Err(Failure::Passing(error)) => {
                c.attempts += 1;
                c.last_error = Some(error);
                if c.attempts >= MAX_ATTEMPTS {
                    c.given_up = true;
                } else {
                    c.not_before = now + backoff(c.attempts);
                }
            }
            Err(Failure::Refused(error)) => {
                c.attempts += 1;
                c.last_error = Some(error);
                c.given_up = true;
            }
            Err(Failure::Full(error)) => {
                c.attempts += 1;
                c.count = c.count.max(MAX_PER_CONTEXT);
                c.last_error = Some(error);
                c.given_up = true;
            }
        }
    }

    /// Reading what GitHub shows failed with `error`: every context still owed says so.
    pub fn unread(&mut self, error: &str) {
        for c in self.contexts.values_mut().filter(|c| c.owed()) {
            c.last_error = Some(error.to_string());
        }
    }

    /// What is owed, by context.
    pub fn owed(&self) -> Vec<Unposted> {
        self.contexts
            .iter()
            .filter(|(_, c)| c.owed())
            .map(|(name, c)| Unposted {
                context: name.clone(),
                state: c.desired.as_ref().expect("owed").state.to_string(),
                last_error: c.last_error.clone(),
                attempts: c.attempts,
            })
            .collect()
    }

    /// Nothing owed will be tried again: everything landed, or what did not was given up.
    pub fn settled(&self) -> bool {
        self.contexts.values().all(|c| !c.owed() || c.given_up)
    }

    /// The error of the latest failure of a context still owed.
    pub fn last_error(&self) -> Option<String> {
        self.contexts.values().filter(|c| c.owed()).find_map(|c| c.last_error.clone())
    }
}

fn full(context: &str) -> String {
    format!("{context} has reached GitHub's {MAX_PER_CONTEXT} statuses for this commit")
}

/// The wait after the `attempts`-th passing failure: 1 s, 2 s, 4 s… up to a minute.
pub fn backoff(attempts: u32) -> Duration {
    FIRST_BACKOFF.saturating_mul(1 << attempts.saturating_sub(1).min(16)).min(MAX_BACKOFF)
}

/// Keeps requests within GitHub's limits: content-creating requests (posts) below 80 a minute
/// and 500 an hour, nothing at all while a rate limit holds.
#[derive(Debug)]
pub struct Pacer {
    per_minute: usize,
    per_hour: usize,
    /// When recent posts went, oldest first (the last hour's).
    sent: VecDeque<Duration>,
    /// No request before this.
    paused_until: Duration,
    /// Secondary limits hit in a row.
    strikes: u32,
}

/// At most this many posts in any minute (GitHub allows 80).
pub const PER_MINUTE: usize = 79;
/// At most this many posts in any hour (GitHub allows 500).
pub const PER_HOUR: usize = 499;
const MINUTE: Duration = Duration::from_secs(60);
const HOUR: Duration = Duration::from_secs(3600);

impl Default for Pacer {
    fn default() -> Pacer {
        Pacer::new(PER_MINUTE, PER_HOUR)
    }
}

impl Pacer {
    pub fn new(per_minute: usize, per_hour: usize) -> Pacer {
        Pacer { per_minute, per_hour, sent: VecDeque::new(), paused_until: Duration::ZERO, strikes: 0 }
    }

    /// The earliest moment any request may go.
    pub fn request_at(&self) -> Duration {
        self.paused_until
    }

    /// The earliest moment a post may go.
    pub fn post_at(&self) -> Duration {
        let mut at = self.paused_until;
        let window = |limit: usize, span: Duration| {
            (limit > 0 && self.sent.len() >= limit).then(|| self.sent[self.sent.len() - limit] + span)
        };
        if let Some(t) = window(self.per_minute, MINUTE) {
            at = at.max(t);
        }
        if let Some(t) = window(self.per_hour, HOUR) {
            at = at.max(t);
        }
        at
    }

    /// A post went at `now`.
    pub fn posted(&mut self, now: Duration) {
        self.sent.push_back(now);
        while self.sent.front().is_some_and(|t| *t + HOUR <= now) {
            self.sent.pop_front();
        }
    }

    /// A request was answered without a limit.
    pub fn clear(&mut self) {
        self.strikes = 0;
    }

    /// A primary limit: nothing until `reset` (the moment `x-ratelimit-reset` names).
    pub fn primary(&mut self, reset: Duration) {
        self.paused_until = self.paused_until.max(reset);
    }

    /// A secondary limit at `now`: wait `retry_after` when GitHub says, else at least a
    /// minute; limits hit in a row double the wait.
    pub fn secondary(&mut self, now: Duration, retry_after: Option<Duration>) {
        let base = retry_after.unwrap_or(MINUTE);
        let wait = base.saturating_mul(1 << self.strikes.min(5));
        self.strikes += 1;
        self.paused_until = self.paused_until.max(now + wait);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn st(state: State, d: &str) -> Status {
        Status { state, description: d.into() }
    }
    const T0: Duration = Duration::ZERO;

    #[test]
    fn a_pending_not_yet_sent_is_dropped_once_the_terminal_is_known() {
        let mut q = Queue::default();
        q.want("a@p", st(State::Pending, "Running: a"), "a");
        q.want("a@p", st(State::Success, "Succeeded (1s): a"), "a");
        assert_eq!(q.next(T0), Some(("a@p".into(), st(State::Success, "Succeeded (1s): a"))));
        q.answered("a@p", &st(State::Success, "Succeeded (1s): a"), Ok(()), T0);
        assert_eq!(q.next(T0), None);
        assert!(q.settled() && q.owed().is_empty());
    }

    #[test]
    fn a_pending_that_failed_on_its_way_is_never_sent_after_the_terminal() {
        let mut q = Queue::default();
        let pending = st(State::Pending, "Running: a");
        let done = st(State::Failure, "Failed (2s): a");
        q.want("a@p", pending.clone(), "a");
        let (ctx, sending) = q.next(T0).unwrap();
        q.want("a@p", done.clone(), "a");
        q.answered(&ctx, &sending, Err(Failure::Passing("502".into())), T0);
        assert_eq!(q.next(T0), Some(("a@p".into(), done.clone())), "the terminal goes at once, no backoff");
        q.answered("a@p", &done, Ok(()), T0);
        assert_eq!(q.next(Duration::from_secs(3600)), None, "the pending is gone for good");
    }

    #[test]
    fn what_github_already_shows_is_not_posted_again_and_the_oldest_wish_goes_first() {
        let mut q = Queue::default();
        q.seed("a@p", st(State::Pending, "Running: a"), 3);
        q.want("b@p", st(State::Pending, "Running: b"), "b");
        q.want("a@p", st(State::Pending, "Running: a"), "a");
        assert!(q.owed().iter().all(|u| u.context == "b@p"));
        q.want("c@p", st(State::Pending, "Running: c"), "c");
        q.want("b@p", st(State::Success, "Succeeded (0s): b"), "b");
        assert_eq!(q.next(T0).unwrap().0, "b@p", "a replaced wish keeps its place");
    }

    #[test]
    fn passing_failures_back_off_and_give_up_with_the_error_recorded() {
        let mut q = Queue::default();
        let s = st(State::Success, "ok");
        q.want("a@p", s.clone(), "a");
        let mut now = T0;
        for attempt in 1..=MAX_ATTEMPTS {
            assert_eq!(q.next(now).map(|n| n.0).as_deref(), Some("a@p"), "attempt {attempt}");
            q.answered("a@p", &s, Err(Failure::Passing(format!("503 #{attempt}"))), now);
            if attempt < MAX_ATTEMPTS {
                assert_eq!(q.next(now), None, "backing off");
                assert_eq!(q.next_due(), Some(now + backoff(attempt)));
                now += backoff(attempt);
            }
        }
        assert!(q.settled(), "given up");
        let owed = q.owed();
        assert_eq!(owed.len(), 1);
        assert_eq!(owed[0].attempts, MAX_ATTEMPTS);
        assert_eq!(owed[0].last_error.as_deref(), Some("503 #8"));
        assert_eq!(owed[0].state, "success");
        assert_eq!(backoff(1), Duration::from_secs(1));
        assert_eq!(backoff(3), Duration::from_secs(4));
        assert_eq!(backoff(30), MAX_BACKOFF);
    }

    #[test]
    fn a_full_context_is_not_posted_and_is_recorded() {
        let mut q = Queue::default();
        q.want("w@p", st(State::Pending, "Running: w"), "w");
        q.seed("w@p", st(State::Success, "old"), MAX_PER_CONTEXT);
        assert_eq!(q.next(T0), None, "a wish made before the read is held back too");
        let mut q = Queue::default();
        q.seed("a@p", st(State::Success, "old"), MAX_PER_CONTEXT);
        q.want("a@p", st(State::Pending, "Running: a"), "a");
        assert_eq!(q.next(T0), None);
        assert!(q.settled());
        assert!(q.owed()[0].last_error.as_deref().unwrap().contains("1000 statuses"));
        let mut q = Queue::default();
        q.want("b@p", st(State::Pending, "Running: b"), "b");
        q.answered("b@p", &st(State::Pending, "Running: b"), Err(Failure::Full("422".into())), T0);
        assert!(q.settled());
        q.want("b@p", st(State::Success, "done"), "b");
        assert_eq!(q.next(T0), None, "a full context takes nothing more");
    }

    #[test]
    fn an_interrupt_errors_every_context_last_posted_pending_and_nothing_else() {
        let mut q = Queue::default();
        q.seed("foreign", st(State::Pending, "someone else's"), 1);
        q.seed("a@p", st(State::Pending, "Running: a"), 1);
        let run = st(State::Pending, "Running: .ci/x/p/b.log");
        q.want("b@p", run.clone(), ".ci/x/p/b.log");
        q.answered("b@p", &run, Ok(()), T0);
        q.want("c@p", st(State::Success, "Succeeded (1s): c"), "c");
        q.want("d@p", st(State::Pending, "Running: d"), "d");
        q.interrupt("interrupted");
        let owed: BTreeMap<String, String> = q.owed().into_iter().map(|u| (u.context, u.state)).collect();
        assert_eq!(
            owed,
            BTreeMap::from([
                ("b@p".into(), "error".into()),
                ("c@p".into(), "success".into()),
                ("d@p".into(), "error".into())
            ]),
            "foreign contexts and contexts only seeded are never touched"
        );
        let mut sent = Vec::new();
        while let Some((ctx, status)) = q.next(T0) {
            q.answered(&ctx, &status, Ok(()), T0);
            sent.push(format!("{ctx} {}", status.description));
        }
        assert_eq!(
            sent,
            [
                "c@p Succeeded (1s): c",
                "d@p Errored (interrupted): d",
                "b@p Errored (interrupted): .ci/x/p/b.log"
            ]
        );
    }

    #[test]
    fn the_pacer_keeps_posts_below_80_a_minute_and_500_an_hour() {
        let mut p = Pacer::default();
        let mut now = T0;
        for _ in 0..PER_MINUTE {
            assert!(p.post_at() <= now);
            p.posted(now);
            now += Duration::from_millis(10);
        }
        assert_eq!(p.post_at(), MINUTE, "the 80th waits for the first to leave the minute");
        let mut p = Pacer::default();
        let mut now = T0;
        let mut sent = 0;
        while now < HOUR {
            now = now.max(p.post_at());
            if now >= HOUR {
                break;
            }
            p.posted(now);
            sent += 1;
        }
        assert_eq!(sent, PER_HOUR);
    }

    #[test]
    fn rate_limits_pause_every_request_as_github_says() {
        let mut p = Pacer::default();
        let now = Duration::from_secs(10);
        p.secondary(now, Some(Duration::from_secs(1)));
        assert_eq!(p.request_at(), Duration::from_secs(11));
        p.secondary(now, Some(Duration::from_secs(1)));
        assert_eq!(p.request_at(), Duration::from_secs(12), "in a row, the wait doubles");
        p.clear();
        p.secondary(Duration::from_secs(20), None);
        assert_eq!(p.request_at(), Duration::from_secs(80), "without retry-after, a minute");
        p.primary(Duration::from_secs(500));
        assert_eq!(p.post_at(), Duration::from_secs(500));
    }
}
