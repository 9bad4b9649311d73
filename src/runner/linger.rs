//! Spaces a busy lane's reports, so the coordinator (and every face that follows it) wakes
//! once for several nodes' transitions instead of once for each.
//!
//! While any node of the lane is pending or running, a node's new status and its log's end
//! pass [`Linger::pass`]. After a quiet [`REPORT_WINDOW`], the first [`IMMEDIATE_TICKS`]
//! moments that report go at once (so a lane's start, and a lane whose nodes take longer
//! than the window, report as they happen; only the first while the runner is still spawning
//! a burst of nodes, whose windows are [`STARTING_WINDOWS`] long); later ones wait for the
//! window's end and go out together, one write, and while reports keep coming the lane
//! reports once a window. The moment the lane settles (every node terminal), whatever waits
//! goes at once and nothing waits after, so a run ends as soon as its last node does.
//! Answers, heartbeats and log bytes never wait: only when the coordinator hears of a
//! transition moves, by at most the window, never when a node starts (the runner starts the
//! nodes itself). A link that dies loses what was waiting: a node that started or ended in
//! the last window of a burst is judged as the coordinator last heard of it.

use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

/// How long a busy lane's reports gather. A dashboard following a busy lane is then redrawn
/// up to four times a second for its transitions (its clock redraws the rest). Several nodes'
/// worth gather even where each `just` call takes 25 ms (a justfile of 2,000 recipes), and
/// every window costs a wake-up of the runner, the coordinator and each face, which on a
/// machine that idles between them runs cold: at 20 ms a chain of such nodes woke the
/// coordinator from idle for every node, at 50 ms for every second one. A chain of 200 nodes
/// of 25 ms each, server left up, cost the server 47 ms and the runner 45 ms (medians of 5) at
/// 50 ms, against 30 and 38 ms at 100 ms; a chain of 200 nodes sleeping 25 ms cost the server
/// 42.3 ms and the runner 66.0 ms at 100 ms, against 32.8 and 61.0 ms at 250 ms (medians of
/// 5, alternating). A node's start never waits (the runner starts it), nor a run's end.
pub const REPORT_WINDOW: Duration = Duration::from_millis(250);

/// While the runner is still spawning nodes an event started (see `Actor::starting`), a
/// window lasts this many [`REPORT_WINDOW`]s (500 ms): such a burst keeps ending nodes all
/// along (at 2,000 nodes on two cores it lasts seconds), and every window's reports wake every
/// follower of the run, so a face sees such a burst twice a second; and only the burst's start
/// goes at once, not the moment after it too. With 100 followers a 200-node burst took 11–13 %
/// longer than with none at windows of 50 or 200 ms, 5–10 % at 500 ms, and −3 to +1 % (as when
/// nothing was reported before the last spawn) once its second moment waited too.
pub const STARTING_WINDOWS: u32 = 2;

/// How many moments report at once in a window that follows a quiet one.
pub const IMMEDIATE_TICKS: u32 = 2;

/// Reports this close to one that went at once are of the same moment (a node's end and its
/// log's end, the next node's start) and go with it.
const SAME_TICK: Duration = Duration::from_millis(1);

/// The gate every deferrable report passes ([`Linger::pass`]).
pub struct Linger {
    window: Duration,
    state: Mutex<State>,
    /// Wakes every waiter when the lane settles.
    settled: Notify,
}

#[derive(Default)]
struct State {
    busy: bool,
    /// The runner has nodes left to spawn: windows are [`STARTING_WINDOWS`] long.
    starting: bool,
    /// When the current window began, and how many moments in it went at once. A window
    /// that begins in the future is one that reports are waiting for.
    window_start: Option<Instant>,
    ticks: u32,
    /// When the last moment went at once.
    last_tick: Option<Instant>,
}

impl Linger {
    pub fn new(window: Duration) -> Linger {
        Linger { window, state: Mutex::new(State::default()), settled: Notify::new() }
    }

    /// Whether the lane has a node pending or running; turning false lets every waiter go.
    pub fn set_busy(&self, busy: bool) {
        let mut state = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let was = std::mem::replace(&mut state.busy, busy);
        if was && !busy {
            *state = State::default();
            drop(state);
            self.settled.notify_waiters();
        }
    }

    /// Whether the runner has nodes an event started left to spawn: while it has, a window
    /// lasts [`STARTING_WINDOWS`] windows.
    pub fn set_starting(&self, starting: bool) {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner).starting = starting;
    }

    /// Returns when a report may go: at once while the lane is not busy or its window has
    /// room, else when the window ends (or the lane settles).
    pub async fn pass(&self) {
        let settled = self.settled.notified();
        tokio::pin!(settled);
        let opens_at = {
            let mut state = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if !state.busy {
                return;
            }
            // Registered under the lock: a lane that settles from here on wakes this waiter.
            settled.as_mut().enable();
            let now = Instant::now();
            let window = if state.starting { self.window * STARTING_WINDOWS } else { self.window };
            match state.window_start {
                Some(at) if at > now => at,
                _ if state.last_tick.is_some_and(|tick| now < tick + SAME_TICK) => return,
                _ if state.window_start.is_none_or(|start| now >= start + window) => {
                    (state.window_start, state.ticks, state.last_tick) = (Some(now), 1, Some(now));
                    return;
                }
                // A burst being started has had its moment at once: its start.
                _ if !state.starting && state.ticks < IMMEDIATE_TICKS => {
                    state.ticks += 1;
                    state.last_tick = Some(now);
                    return;
                }
                _ => {
                    // The window is full: this report waits for its end, when those waiting go
                    // together and begin a window that is full from the start, so a lane that
                    // stays busy reports once a window.
                    let at = state.window_start.map_or(now, |start| start + window);
                    (state.window_start, state.ticks, state.last_tick) =
                        (Some(at), IMMEDIATE_TICKS, Some(at));
                    at
                }
            }
        };
        tokio::select! {
            _ = tokio::time::sleep_until(opens_at) => {}
            _ = settled => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    // Every test runs on a paused clock that moves only when every task waits: what each
    // asserts of time is exact, however loaded the machine.

    const PROMPT: Duration = Duration::from_secs(5);

    /// Two moments, a few milliseconds apart: both go at once, filling the window.
    async fn fill(linger: &Linger, window: Duration) {
        for _ in 0..IMMEDIATE_TICKS {
            let start = Instant::now();
            linger.pass().await;
            assert!(start.elapsed() < window / 2, "a window's first moments go at once");
            // A later moment, not the same one.
            tokio::time::sleep(SAME_TICK * 2).await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_lane_reports_at_once() {
        let linger = Linger::new(Duration::from_secs(3600));
        for _ in 0..5 {
            tokio::time::timeout(PROMPT, linger.pass()).await.expect("passes at once");
        }
        linger.set_busy(true);
        linger.set_busy(false);
        tokio::time::timeout(PROMPT, linger.pass()).await.expect("passes at once");
    }

    #[tokio::test(start_paused = true)]
    async fn a_busy_lanes_reports_past_its_first_moments_wait_for_the_windows_end_together() {
        let window = Duration::from_millis(300);
        let linger = Arc::new(Linger::new(window));
        linger.set_busy(true);
        let start = Instant::now();
        fill(&linger, window).await;
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        for n in 0..3 {
            let (linger, tx) = (linger.clone(), tx.clone());
            tokio::spawn(async move {
                linger.pass().await;
                let _ = tx.send((n, Instant::now()));
            });
        }
        let mut passed = Vec::new();
        for _ in 0..3 {
            passed.push(tokio::time::timeout(PROMPT, rx.recv()).await.unwrap().unwrap().1);
        }
        let (first, last) = (passed.iter().min().unwrap(), passed.iter().max().unwrap());
        assert!(*first >= start + window, "went {:?} after the window began", *first - start);
        assert!(*last - *first < window / 2, "the three went {:?} apart", *last - *first);
    }

    #[tokio::test(start_paused = true)]
    async fn a_lane_that_stays_busy_reports_once_a_window() {
        let window = Duration::from_millis(200);
        let linger = Linger::new(window);
        linger.set_busy(true);
        fill(&linger, window).await;
        // Waits for the first window's end, and begins a window that is already full: a
        // report a moment later waits for that one's end too.
        let start = Instant::now();
        linger.pass().await;
        let first = Instant::now();
        assert!(first - start > window / 2, "waited for the window's end");
        tokio::time::sleep(SAME_TICK * 2).await;
        let again = Instant::now();
        linger.pass().await;
        assert!(again.elapsed() > window / 2, "waited {:?}, not for the next window's end", again.elapsed());
        assert!(Instant::now() - first >= window - SAME_TICK * 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_lane_still_starting_a_burst_reports_its_start_at_once_then_once_a_longer_window() {
        let window = Duration::from_millis(50);
        let linger = Linger::new(window);
        linger.set_busy(true);
        linger.set_starting(true);
        let start = Instant::now();
        linger.pass().await;
        assert_eq!(start.elapsed(), Duration::ZERO, "the burst's start goes at once");
        tokio::time::sleep(SAME_TICK * 2).await;
        let next = Instant::now();
        linger.pass().await;
        assert!(next.elapsed() >= window * (STARTING_WINDOWS - 1), "waited {:?}", next.elapsed());
        // Once the burst is started, windows are short again.
        linger.set_starting(false);
        tokio::time::sleep(SAME_TICK * 2).await;
        let again = Instant::now();
        linger.pass().await;
        assert!(again.elapsed() <= window, "waited {:?}", again.elapsed());
    }

    #[tokio::test(start_paused = true)]
    async fn a_lane_that_settles_lets_every_waiting_report_go() {
        let window = Duration::from_secs(3600);
        let linger = Arc::new(Linger::new(window));
        linger.set_busy(true);
        fill(&linger, window).await;
        let waiting = {
            let linger = linger.clone();
            tokio::spawn(async move { linger.pass().await })
        };
        // The waiter runs until it waits for the hour-long window's end.
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        linger.set_busy(false);
        tokio::time::timeout(PROMPT, waiting).await.expect("released").unwrap();
        // Nothing waits once the lane has settled.
        tokio::time::timeout(PROMPT, linger.pass()).await.expect("passes at once");
    }
}
