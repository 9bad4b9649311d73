//! Cells: a value served as a snapshot, then deltas, to any number of subscribers.
//!
//! The owner publishes every change as (delta, fresh snapshot). Each subscriber has a bounded
//! queue of deltas; one that falls behind is never waited for: its queue overflows, the
//! overflow is flagged, and its reader skips what is queued and resumes from the latest
//! snapshot. So a slow subscriber costs at most its queue, and no change is ever lost: a
//! subscriber either sees every delta or a snapshot that contains them.
//!
//! A subscriber that finds several deltas queued takes them as one (see [`CellValue::merge`]
//! and [`CellValue::merge_span`], which folds them in one pass): a burst of changes costs each
//! subscriber one frame, not one per change, and adds no latency.
//!
//! A delta is made once and shared: every queue holds the same [`Published`] delta, and the
//! first subscriber to write it out keeps its JSON for the others ([`Delivered::json`]), so a
//! change costs the hub one copy and one encoding whatever the number of subscribers. Deltas
//! merged for one subscriber are shared the same way: subscribers woken by one burst find the
//! same deltas queued, so the first to merge a span of revisions leaves the result (and its
//! JSON) for the others ([`Merged`]).

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use odu_core::NodeView;
use odu_proto::{Header, HeaderFrame, NodesFrame, RunSummary, RunsFrame};
use tokio::sync::{mpsc, watch};

pub trait Revisioned {
    fn revision(&self) -> u64;
}

/// A cell's whole value. Publishing one on every change must be cheap (share parts behind
/// `Arc`s); it becomes a wire frame only when a subscriber needs a snapshot.
pub trait CellValue: Revisioned + Send + Sync + 'static {
    type Frame: Revisioned + Clone + Send + Sync + 'static;
    fn snapshot_frame(&self) -> Self::Frame;

    /// Folds delta `later` into delta `into`, so that applying the result equals applying both
    /// in turn; gives `later` back when the two cannot be folded.
    fn merge(into: &mut Self::Frame, later: Self::Frame) -> Option<Self::Frame> {
        let _ = into;
        Some(later)
    }

    /// Folds the deltas of `span`, in order, into delta `into` while they fold (as
    /// [`CellValue::merge`] does, one at a time); gives back the first that does not, the
    /// rest left in `span`. A cell whose deltas carry many items overrides it to fold a whole
    /// span in one pass.
    fn merge_span(
        into: &mut Self::Frame,
        span: &mut dyn Iterator<Item = Self::Frame>,
    ) -> Option<Self::Frame> {
        for later in span {
            if let Some(unmerged) = Self::merge(into, later) {
                return Some(unmerged);
            }
        }
        None
    }
}

/// Folds the items of `later` into `into`: an item with the same key is replaced in place,
/// a new one is appended.
fn fold_by_key<T>(into: &mut Vec<T>, later: Vec<T>, key: impl Fn(&T) -> &str) {
    for item in later {
        match into.iter_mut().find(|old| key(old) == key(&item)) {
            Some(old) => *old = item,
            None => into.push(item),
        }
    }
}

struct Sub<F> {
    tx: mpsc::Sender<Arc<Published<F>>>,
    overflowed: Arc<AtomicBool>,
}

/// The hub's last merged delta, shared by its subscribers: the deltas of revisions `from` to
/// `to` merged into one. Every queue receives every delta in order (a subscriber that misses
/// one overflows and resynchronises instead), so two subscribers that merged the same span
/// merged the same deltas: the second takes the first's frame and JSON instead of folding and
/// encoding them again.
type Merged<F> = Arc<std::sync::Mutex<Option<(u64, u64, Arc<Published<F>>)>>>;

/// One published delta, shared by every subscriber's queue.
pub struct Published<F> {
    frame: F,
    /// The delta's JSON, made by the first subscriber that writes it out as it is.
    json: OnceLock<Vec<u8>>,
}

/// A frame as one subscriber takes it.
pub enum Delivered<F> {
    /// A delta as it was published, shared with the other subscribers.
    Shared(Arc<Published<F>>),
    /// This subscriber's own: a snapshot, or queued deltas merged into one.
    Own(F),
}

impl<F> Delivered<F> {
    pub fn frame(&self) -> &F {
        match self {
            Delivered::Shared(published) => &published.frame,
            Delivered::Own(frame) => frame,
        }
    }
}

impl<F: Clone> Delivered<F> {
    /// The frame itself, copied only if other subscribers still share it.
    pub fn into_frame(self) -> F {
        match self {
            Delivered::Shared(published) => {
                Arc::try_unwrap(published).map_or_else(|shared| shared.frame.clone(), |own| own.frame)
            }
            Delivered::Own(frame) => frame,
        }
    }
}

impl<F: serde::Serialize> Delivered<F> {
    /// The frame's JSON: a shared delta is encoded once for all its subscribers.
    pub fn json(&self) -> Cow<'_, [u8]> {
        let encode = |frame: &F| serde_json::to_vec(frame).expect("frames serialize");
        match self {
            Delivered::Shared(published) => {
                Cow::Borrowed(published.json.get_or_init(|| encode(&published.frame)))
            }
            Delivered::Own(frame) => Cow::Owned(encode(frame)),
        }
    }
}

/// The value of a `nodes` cell (a lane's or the fan-in's): shared node views, so publishing a
/// change copies a few pointers only.
pub struct NodesValue {
    pub revision: u64,
    pub name: Arc<str>,
    pub order: Arc<Vec<String>>,
    pub nodes: Views,
}

/// How many node views share one chunk of [`Views`].
const CHUNK: usize = 64;

/// A cell's node views in order, held in shared chunks: a copy (every published snapshot)
/// costs one pointer per chunk and a change copies one chunk, so publishing a transition costs
/// about the same at 200 nodes as at 20,000. A flat list of views made every transition copy
/// every view's pointer, which grew a run's cost with the square of its size.
#[derive(Clone, Default)]
pub struct Views {
    chunks: Vec<Arc<Vec<Arc<NodeView>>>>,
    len: usize,
}

impl Views {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn get(&self, at: usize) -> Option<&NodeView> {
        self.chunks.get(at / CHUNK).and_then(|chunk| chunk.get(at % CHUNK)).map(|view| &**view)
    }

    /// Replaces the view at `at` (copying its chunk when a published snapshot shares it).
    pub fn set(&mut self, at: usize, view: NodeView) {
        if let Some(chunk) = self.chunks.get_mut(at / CHUNK)
            && let Some(slot) = Arc::make_mut(chunk).get_mut(at % CHUNK)
        {
            *slot = Arc::new(view);
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = &NodeView> {
        self.chunks.iter().flat_map(|chunk| chunk.iter().map(|view| &**view))
    }
}

impl FromIterator<NodeView> for Views {
    fn from_iter<I: IntoIterator<Item = NodeView>>(views: I) -> Views {
        let mut chunks: Vec<Arc<Vec<Arc<NodeView>>>> = Vec::new();
        let mut len = 0;
        let mut chunk = Vec::with_capacity(CHUNK);
        for view in views {
            chunk.push(Arc::new(view));
            len += 1;
            if chunk.len() == CHUNK {
                chunks.push(Arc::new(std::mem::replace(&mut chunk, Vec::with_capacity(CHUNK))));
            }
        }
        if !chunk.is_empty() {
            chunks.push(Arc::new(chunk));
        }
        Views { chunks, len }
    }
}

impl NodesValue {
    /// A copy sharing every node view.
    pub fn share(&self) -> NodesValue {
        NodesValue {
            revision: self.revision,
            name: self.name.clone(),
            order: self.order.clone(),
            nodes: self.nodes.clone(),
        }
    }
}

impl Revisioned for NodesValue {
    fn revision(&self) -> u64 {
        self.revision
    }
}

impl CellValue for NodesValue {
    type Frame = NodesFrame;
    fn snapshot_frame(&self) -> NodesFrame {
        NodesFrame::Snapshot {
            revision: self.revision,
            name: self.name.to_string(),
            order: self.order.to_vec(),
            nodes: self.nodes.iter().cloned().collect(),
        }
    }

    fn merge(into: &mut NodesFrame, later: NodesFrame) -> Option<NodesFrame> {
        Self::merge_span(into, &mut std::iter::once(later))
    }

    /// One pass over the span, each node's place in the merge found in a map: folded a delta
    /// at a time, each node was looked for among all the merge held already, and a subscriber
    /// that found a burst of single-node deltas queued (a lagging client, the runner's link
    /// while the coordinator is busy) paid the square of the burst.
    fn merge_span(into: &mut NodesFrame, span: &mut dyn Iterator<Item = NodesFrame>) -> Option<NodesFrame> {
        let NodesFrame::Delta { revision, nodes } = into else { return span.next() };
        let mut at: HashMap<String, usize> =
            nodes.iter().enumerate().map(|(i, n)| (n.id.clone(), i)).collect();
        for later in span {
            let NodesFrame::Delta { revision: r, nodes: more } = later else { return Some(later) };
            *revision = r;
            for node in more {
                match at.get(&node.id) {
                    Some(&i) => nodes[i] = node,
                    None => {
                        at.insert(node.id.clone(), nodes.len());
                        nodes.push(node);
                    }
                }
            }
        }
        None
    }
}

impl Revisioned for NodesFrame {
    fn revision(&self) -> u64 {
        match self {
            NodesFrame::Snapshot { revision, .. } | NodesFrame::Delta { revision, .. } => *revision,
        }
    }
}

/// The value of a run's `header` cell.
pub struct HeaderValue {
    pub revision: u64,
    pub header: Arc<Header>,
}

impl Revisioned for HeaderValue {
    fn revision(&self) -> u64 {
        self.revision
    }
}

impl Revisioned for HeaderFrame {
    fn revision(&self) -> u64 {
        match self {
            HeaderFrame::Snapshot { revision, .. } => *revision,
        }
    }
}

impl CellValue for HeaderValue {
    type Frame = HeaderFrame;
    fn snapshot_frame(&self) -> HeaderFrame {
        HeaderFrame::Snapshot { revision: self.revision, header: Header::clone(&self.header) }
    }

    /// Every header item is the whole header: the later one stands for both.
    fn merge(into: &mut HeaderFrame, later: HeaderFrame) -> Option<HeaderFrame> {
        *into = later;
        None
    }
}

impl HeaderValue {
    /// Publishes `header` as the next revision (every header item is the whole header).
    pub fn publish(hub: &mut Hub<HeaderValue>, header: Header) {
        let revision = hub.current().revision + 1;
        let frame = HeaderFrame::Snapshot { revision, header: header.clone() };
        hub.publish(HeaderValue { revision, header: Arc::new(header) }, frame);
    }
}

/// The value of the server's `runs` cell: every run it knows, newest first.
pub struct RunsValue {
    pub revision: u64,
    pub runs: Arc<Vec<RunSummary>>,
}

impl Revisioned for RunsValue {
    fn revision(&self) -> u64 {
        self.revision
    }
}

impl Revisioned for RunsFrame {
    fn revision(&self) -> u64 {
        match self {
            RunsFrame::Snapshot { revision, .. } | RunsFrame::Delta { revision, .. } => *revision,
        }
    }
}

impl CellValue for RunsValue {
    type Frame = RunsFrame;
    fn snapshot_frame(&self) -> RunsFrame {
        RunsFrame::Snapshot { revision: self.revision, runs: self.runs.to_vec() }
    }

    fn merge(into: &mut RunsFrame, later: RunsFrame) -> Option<RunsFrame> {
        match (into, later) {
            (RunsFrame::Delta { revision, runs }, RunsFrame::Delta { revision: r, runs: more }) => {
                *revision = r;
                fold_by_key(runs, more, |s| &s.run);
                None
            }
            (_, later) => Some(later),
        }
    }
}

impl RunsValue {
    /// Publishes a run that started or changed: it replaces its entry, or goes first.
    pub fn publish(hub: &mut Hub<RunsValue>, summary: RunSummary) {
        let current = hub.current();
        let mut runs = current.runs.to_vec();
        match runs.iter_mut().find(|r| r.run == summary.run) {
            Some(entry) => *entry = summary.clone(),
            None => runs.insert(0, summary.clone()),
        }
        let revision = current.revision + 1;
        let frame = RunsFrame::Delta { revision, runs: vec![summary] };
        hub.publish(RunsValue { revision, runs: Arc::new(runs) }, frame);
    }
}

/// The publishing side, owned by the actor that owns the value.
pub struct Hub<V: CellValue> {
    latest: watch::Sender<Arc<V>>,
    subs: Vec<Sub<V::Frame>>,
    capacity: usize,
    merged: Merged<V::Frame>,
}

impl<V: CellValue> Hub<V> {
    pub fn new(snapshot: V, capacity: usize) -> Self {
        Hub {
            latest: watch::channel(Arc::new(snapshot)).0,
            subs: Vec::new(),
            capacity,
            merged: Merged::default(),
        }
    }

    /// Publishes a change: `snapshot` is the whole value after it, `delta` the change alone.
    pub fn publish(&mut self, snapshot: V, delta: V::Frame) {
        self.latest.send_replace(Arc::new(snapshot));
        let delta = Arc::new(Published { frame: delta, json: OnceLock::new() });
        self.subs.retain(|sub| {
            if sub.overflowed.load(Ordering::SeqCst) {
                return !sub.tx.is_closed();
            }
            match sub.tx.try_send(delta.clone()) {
                Ok(()) => true,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    sub.overflowed.store(true, Ordering::SeqCst);
                    true
                }
                Err(mpsc::error::TrySendError::Closed(_)) => false,
            }
        });
    }

    /// Replaces the value without a delta (every subscriber resynchronises).
    pub fn replace(&mut self, snapshot: V) {
        self.latest.send_replace(Arc::new(snapshot));
        for sub in &self.subs {
            sub.overflowed.store(true, Ordering::SeqCst);
        }
        // Wake readers whose queues are empty so they notice the flag.
        self.subs.retain(|sub| !sub.tx.is_closed());
    }

    /// A new subscriber, whose first item is the current snapshot.
    pub fn subscribe(&mut self) -> Subscription<V> {
        let (tx, rx) = mpsc::channel(self.capacity);
        let overflowed = Arc::new(AtomicBool::new(false));
        self.subs.push(Sub { tx, overflowed: overflowed.clone() });
        let mut latest = self.latest.subscribe();
        let first = latest.borrow_and_update().snapshot_frame();
        Subscription {
            rx,
            overflowed,
            latest,
            first: Some(first),
            held: std::collections::VecDeque::new(),
            merged: self.merged.clone(),
            last_revision: 0,
            resyncs: 0,
            hub_gone: false,
        }
    }

    pub fn current(&self) -> Arc<V> {
        self.latest.borrow().clone()
    }

    pub fn subscribers(&self) -> usize {
        self.subs.len()
    }
}

/// The reading side of one subscriber.
pub struct Subscription<V: CellValue> {
    rx: mpsc::Receiver<Arc<Published<V::Frame>>>,
    overflowed: Arc<AtomicBool>,
    latest: watch::Receiver<Arc<V>>,
    first: Option<V::Frame>,
    /// Deltas taken from the queue that could not be merged into the ones before them.
    held: std::collections::VecDeque<Delivered<V::Frame>>,
    /// The hub's last merged delta.
    merged: Merged<V::Frame>,
    last_revision: u64,
    /// How many times this subscriber fell behind and was resynchronised.
    pub resyncs: u64,
    hub_gone: bool,
}

impl<V: CellValue> Subscription<V>
where
    V::Frame: serde::Serialize,
{
    /// Streams this subscription's frames as items of request `id` on `out` (a link's
    /// writer) until the hub or the link is gone: the server's cells to its clients, the
    /// runner's `nodes` cell to its coordinator. A delta every subscriber shares is encoded
    /// once, by the first to send it.
    pub fn forward(self, out: &mpsc::Sender<Vec<u8>>, id: &serde_json::Value) -> tokio::task::JoinHandle<()> {
        self.forward_gated(out, id, || std::future::ready(()))
    }

    /// [`Subscription::forward`] with each delta first passing `gate`; the frames that queued
    /// meanwhile go right after it (merged, as ever), so a gate that holds frames back sends
    /// what it held together (the link's writer gathers frames queued together into one
    /// write): the runner's reports while its lane is busy (`runner::linger`).
    pub fn forward_gated<G, F>(
        mut self,
        out: &mpsc::Sender<Vec<u8>>,
        id: &serde_json::Value,
        gate: G,
    ) -> tokio::task::JoinHandle<()>
    where
        G: Fn() -> F + Send + 'static,
        F: std::future::Future<Output = ()> + Send,
    {
        let (out, stream) = (out.clone(), id.clone());
        tokio::spawn(async move {
            let (mut first, mut resyncs) = (true, self.resyncs);
            while let Some(frame) = self.next().await {
                // A snapshot (the first frame, or one after a resync) never waits: it is what
                // the subscriber starts from.
                let snapshot = std::mem::take(&mut first) || self.resyncs != resyncs;
                resyncs = self.resyncs;
                if !snapshot {
                    gate().await;
                }
                let mut frame = Some(frame);
                while let Some(next) = frame.take() {
                    if out.send(odu_proto::item_frame(&stream, &next.json())).await.is_err() {
                        return;
                    }
                    frame = ready_now(self.next()).flatten();
                }
            }
        })
    }
}

/// `future`'s output if it is ready without waiting; the future is dropped otherwise, so it
/// must lose nothing when dropped unfinished (as [`Subscription::next`] does not).
fn ready_now<F: std::future::Future>(future: F) -> Option<F::Output> {
    let mut future = std::pin::pin!(future);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match future.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(output) => Some(output),
        std::task::Poll::Pending => None,
    }
}

impl<V: CellValue> Subscription<V> {
    /// The next frame: a snapshot first (and after any overflow), then deltas, the ones found
    /// queued together merged into one (a delta found alone stays shared). `None` when the hub
    /// is gone.
    pub async fn next(&mut self) -> Option<Delivered<V::Frame>> {
        if let Some(first) = self.first.take() {
            self.last_revision = first.revision();
            return Some(Delivered::Own(first));
        }
        loop {
            if self.overflowed.load(Ordering::SeqCst) {
                while self.rx.try_recv().is_ok() {}
                self.held.clear();
                self.overflowed.store(false, Ordering::SeqCst);
                let snapshot = self.latest.borrow_and_update().snapshot_frame();
                self.resyncs += 1;
                self.last_revision = snapshot.revision();
                return Some(Delivered::Own(snapshot));
            }
            let delta = match self.held.pop_front() {
                Some(delta) => delta,
                None => tokio::select! {
                    delta = self.rx.recv() => match delta {
                        Some(delta) => Delivered::Shared(delta),
                        None => return None,
                    },
                    changed = self.latest.changed(), if !self.hub_gone => {
                        if changed.is_err() {
                            self.hub_gone = true;
                        } else {
                            self.latest.borrow_and_update();
                        }
                        continue;
                    }
                },
            };
            if delta.frame().revision() <= self.last_revision {
                continue;
            }
            // Everything else queued, in order, stale revisions left out.
            let mut newest = delta.frame().revision();
            let mut span = Vec::new();
            let (held, rx) = (std::mem::take(&mut self.held), &mut self.rx);
            for later in
                held.into_iter().chain(std::iter::from_fn(|| rx.try_recv().ok().map(Delivered::Shared)))
            {
                if later.frame().revision() > newest {
                    newest = later.frame().revision();
                    span.push(later);
                }
            }
            if self.overflowed.load(Ordering::SeqCst) {
                continue;
            }
            if span.is_empty() {
                self.last_revision = newest;
                return Some(delta);
            }
            let from = delta.frame().revision();
            let shared = self.merged.lock().ok().and_then(|merged| match merged.as_ref() {
                Some((f, t, published)) if (*f, *t) == (from, newest) => Some(published.clone()),
                _ => None,
            });
            if let Some(published) = shared {
                self.last_revision = newest;
                return Some(Delivered::Shared(published));
            }
            // Merging makes the delta this subscriber's own, until it is left for the others.
            let mut own = delta.into_frame();
            let mut rest = span.into_iter();
            if let Some(unmerged) = V::merge_span(&mut own, &mut rest.by_ref().map(Delivered::into_frame)) {
                self.held.push_back(Delivered::Own(unmerged));
                self.held.extend(rest);
            }
            self.last_revision = own.revision();
            if !self.held.is_empty() {
                return Some(Delivered::Own(own));
            }
            let published = Arc::new(Published { frame: own, json: OnceLock::new() });
            if let Ok(mut merged) = self.merged.lock() {
                *merged = Some((from, newest, published.clone()));
            }
            return Some(Delivered::Shared(published));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A cell of counters; a delta carries (index, value) pairs.
    #[derive(Clone, Debug, PartialEq, serde::Serialize)]
    struct Counters {
        revision: u64,
        values: Vec<u64>,
    }

    #[derive(Clone, Debug, PartialEq, serde::Serialize)]
    enum Frame {
        Snapshot(Counters),
        Delta(u64, Vec<(usize, u64)>),
    }

    impl Revisioned for Counters {
        fn revision(&self) -> u64 {
            self.revision
        }
    }

    impl Revisioned for Frame {
        fn revision(&self) -> u64 {
            match self {
                Frame::Snapshot(c) => c.revision,
                Frame::Delta(r, _) => *r,
            }
        }
    }

    impl CellValue for Counters {
        type Frame = Frame;
        fn snapshot_frame(&self) -> Frame {
            Frame::Snapshot(self.clone())
        }

        /// Folds deltas while they stay short, so both merging and holding back are exercised.
        fn merge(into: &mut Frame, later: Frame) -> Option<Frame> {
            match (into, later) {
                (Frame::Delta(revision, changes), Frame::Delta(r, more))
                    if changes.len() + more.len() <= 4 =>
                {
                    *revision = r;
                    changes.extend(more);
                    None
                }
                (_, later) => Some(later),
            }
        }
    }

    /// A small deterministic generator, so a failure replays.
    fn next(seed: &mut u64) -> u64 {
        *seed ^= *seed << 13;
        *seed ^= *seed >> 7;
        *seed ^= *seed << 17;
        *seed
    }

    #[tokio::test]
    async fn deltas_applied_to_a_snapshot_equal_the_next_snapshot_even_for_slow_subscribers() {
        for round in 1..=20u64 {
            let mut seed = round.wrapping_mul(0x9E37_79B9_7F4A_7C15);
            let mut value = Counters { revision: 0, values: vec![0; 8] };
            let mut hub = Hub::new(value.clone(), 4);
            let mut fast = hub.subscribe();
            let mut slow = hub.subscribe();
            let mut batched = hub.subscribe();
            let mut twin = hub.subscribe();
            let mut fast_view: Option<Counters> = None;
            let mut slow_view: Option<Counters> = None;
            let mut batched_view: Option<Counters> = None;
            let mut batched_frames = 0;
            let apply = |view: &mut Option<Counters>, frame: Frame| match frame {
                Frame::Snapshot(c) => *view = Some(c),
                Frame::Delta(revision, changes) => {
                    let v = view.as_mut().expect("a snapshot comes first");
                    assert!(revision > v.revision, "a delta follows the revision it applies to");
                    for (i, x) in changes {
                        v.values[i] = x;
                    }
                    v.revision = revision;
                }
            };
            for step in 1..=200 {
                let changes: Vec<(usize, u64)> = (0..1 + next(&mut seed) % 3)
                    .map(|_| ((next(&mut seed) % 8) as usize, next(&mut seed)))
                    .collect();
                for &(i, x) in &changes {
                    value.values[i] = x;
                }
                value.revision += 1;
                hub.publish(value.clone(), Frame::Delta(value.revision, changes));
                // The fast subscriber reads everything; the slow one only now and then.
                while let Ok(Some(frame)) =
                    tokio::time::timeout(std::time::Duration::from_millis(1), fast.next()).await
                {
                    apply(&mut fast_view, frame.into_frame());
                    if fast_view.as_ref().is_some_and(|v| v.revision == value.revision) {
                        break;
                    }
                }
                if next(&mut seed).is_multiple_of(10) {
                    let frame = slow.next().await.expect("hub alive");
                    apply(&mut slow_view, frame.into_frame());
                }
                // The batched one catches up every third change, within its queue of 4; its
                // twin right after it, finding the same deltas queued (and taking its merges).
                if step % 3 == 0 {
                    let mut frames = Vec::new();
                    while batched_view.as_ref().is_none_or(|v| v.revision < value.revision) {
                        let frame = batched.next().await.expect("hub alive").into_frame();
                        frames.push(frame.clone());
                        apply(&mut batched_view, frame);
                        batched_frames += 1;
                    }
                    assert_eq!(batched_view.as_ref(), Some(&value), "merged deltas equal the value");
                    let mut twin_frames = Vec::new();
                    while twin_frames.len() < frames.len() {
                        twin_frames.push(twin.next().await.expect("hub alive").into_frame());
                    }
                    assert_eq!(twin_frames, frames, "the twin took the same frames");
                }
            }
            assert_eq!(batched.resyncs, 0, "a subscriber that keeps within its queue never resyncs");
            assert!(
                batched_frames < 150,
                "queued deltas were merged: {batched_frames} frames for 200 changes"
            );
            assert_eq!(fast_view.as_ref(), Some(&value));
            while slow_view.as_ref().is_none_or(|v| v.revision < value.revision) {
                let frame = slow.next().await.expect("hub alive");
                apply(&mut slow_view, frame.into_frame());
            }
            assert_eq!(slow_view.as_ref(), Some(&value), "the slow subscriber converges on the value");
            assert!(slow.resyncs > 0, "the slow subscriber overflowed and was resynchronised");
        }
    }

    /// A delta taken alone is the one every subscriber shares, encoded once for all of them;
    /// queued deltas merged by one subscriber are shared, made and encoded once, by the others
    /// that find the same deltas queued, and the deltas they were merged from are untouched.
    #[tokio::test]
    async fn a_delta_or_a_merge_of_deltas_is_shared_and_encoded_once() {
        let mut value = Counters { revision: 0, values: vec![0; 4] };
        let mut hub = Hub::new(value.clone(), 8);
        let mut subs: Vec<_> = (0..4).map(|_| hub.subscribe()).collect();
        for sub in &mut subs {
            assert!(matches!(sub.next().await, Some(Delivered::Own(Frame::Snapshot(_)))));
        }
        value.values[1] = 7;
        value.revision = 1;
        hub.publish(value.clone(), Frame::Delta(1, vec![(1, 7)]));
        let mut taken = Vec::new();
        for sub in &mut subs[..2] {
            taken.push(sub.next().await.expect("hub alive"));
        }
        let (Delivered::Shared(a), Delivered::Shared(b)) = (&taken[0], &taken[1]) else {
            panic!("a delta found alone is shared");
        };
        assert!(Arc::ptr_eq(a, b), "both subscribers hold the one published delta");
        let (first, second) = (taken[0].json(), taken[1].json());
        assert_eq!(first.as_ptr(), second.as_ptr(), "its JSON was made once");
        assert_eq!(&*first, serde_json::to_vec(&Frame::Delta(1, vec![(1, 7)])).unwrap().as_slice());
        // The last two subscribers find two deltas queued: the first merges them, the second
        // takes that merge as it is.
        value.values[2] = 9;
        value.revision = 2;
        hub.publish(value.clone(), Frame::Delta(2, vec![(2, 9)]));
        let merged = subs[2].next().await.expect("hub alive");
        assert_eq!(merged.frame(), &Frame::Delta(2, vec![(1, 7), (2, 9)]));
        assert_eq!(taken[0].frame(), &Frame::Delta(1, vec![(1, 7)]), "the shared delta is unchanged");
        let again = subs[3].next().await.expect("hub alive");
        let (Delivered::Shared(a), Delivered::Shared(b)) = (&merged, &again) else {
            panic!("a merge of the same deltas is shared");
        };
        assert!(Arc::ptr_eq(a, b), "both subscribers hold the one merge");
        assert_eq!(merged.json().as_ptr(), again.json().as_ptr(), "its JSON was made once");
        let alone = subs[0].next().await.expect("hub alive");
        assert!(matches!(&alone, Delivered::Shared(p) if p.frame == Frame::Delta(2, vec![(2, 9)])));
        // A subscriber that finds a different span of deltas merges its own.
        value.values[3] = 5;
        value.revision = 3;
        hub.publish(value.clone(), Frame::Delta(3, vec![(3, 5)]));
        let longer = subs[1].next().await.expect("hub alive");
        assert_eq!(longer.frame(), &Frame::Delta(3, vec![(2, 9), (3, 5)]));
        let shorter = subs[0].next().await.expect("hub alive");
        assert_eq!(shorter.frame(), &Frame::Delta(3, vec![(3, 5)]));
    }

    /// Subscribers that join while another thread publishes: whatever the moment, the snapshot
    /// and the deltas after it add up to every change, none lost between the two.
    #[test]
    fn a_subscriber_joining_mid_stream_loses_nothing_between_its_snapshot_and_first_delta() {
        use std::sync::atomic::AtomicUsize;
        const SLOTS: usize = 20_000;
        const SUBSCRIBERS: usize = 50;
        let hub = Arc::new(std::sync::Mutex::new(Hub::new(
            Counters { revision: 0, values: vec![0; SLOTS] },
            SLOTS,
        )));
        let joined = Arc::new(AtomicUsize::new(0));
        let publisher = {
            let (hub, joined) = (hub.clone(), joined.clone());
            std::thread::spawn(move || {
                // Each change sets its own slot, so a lost delta leaves a 0 behind. It goes on
                // until every subscriber has joined, then publishes once more, so every
                // snapshot taken is older than the last value.
                let mut value = Counters { revision: 0, values: vec![0; SLOTS] };
                let mut all_joined = false;
                for step in 1..SLOTS as u64 {
                    value.values[step as usize] = 1;
                    value.revision = step;
                    hub.lock().unwrap().publish(value.clone(), Frame::Delta(step, vec![(step as usize, 1)]));
                    if all_joined {
                        break;
                    }
                    all_joined = joined.load(Ordering::SeqCst) >= SUBSCRIBERS;
                    std::thread::yield_now();
                }
                value
            })
        };
        // The first subscriber joins once the publisher has begun, so at least one snapshot
        // is taken mid-stream, whatever the scheduler does.
        let began = std::time::Instant::now();
        while hub.lock().unwrap().current().revision == 0 {
            assert!(began.elapsed() < std::time::Duration::from_secs(10), "the publisher never began");
            std::thread::yield_now();
        }
        let mut subs = Vec::new();
        while subs.len() < SUBSCRIBERS {
            subs.push(hub.lock().unwrap().subscribe());
            joined.fetch_add(1, Ordering::SeqCst);
            std::thread::yield_now();
        }
        let last = publisher.join().unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let mut mid_stream = 0;
        runtime.block_on(async {
            for mut sub in subs {
                let mut view: Option<Counters> = None;
                while view.as_ref().is_none_or(|v| v.revision < last.revision) {
                    let next = tokio::time::timeout(std::time::Duration::from_secs(5), sub.next());
                    match next.await.expect("every change arrives").expect("hub alive").into_frame() {
                        Frame::Snapshot(c) => {
                            mid_stream += usize::from(c.revision > 0 && c.revision < last.revision);
                            view = Some(c);
                        }
                        Frame::Delta(revision, changes) => {
                            let v = view.as_mut().expect("a snapshot comes first");
                            assert!(revision > v.revision);
                            for (i, x) in changes {
                                v.values[i] = x;
                            }
                            v.revision = revision;
                        }
                    }
                }
                assert_eq!(view.as_ref(), Some(&last), "snapshot plus deltas is the value");
                assert_eq!(sub.resyncs, 0, "the queue is as long as the changes: no overflow");
            }
        });
        assert!(mid_stream > 0, "some subscribers joined while changes were being published");
    }

    #[test]
    fn a_span_of_node_deltas_folds_as_the_deltas_applied_in_turn() {
        let view = |id: &str, command: &str| NodeView::pending(id, command.to_string(), vec![]);
        let delta = |revision, nodes| NodesFrame::Delta { revision, nodes };
        let mut into = delta(1, vec![view("a", "1"), view("b", "1")]);
        let mut span = vec![
            delta(2, vec![view("c", "1")]),
            delta(3, vec![view("a", "2")]),
            delta(4, vec![view("c", "2"), view("d", "1")]),
        ]
        .into_iter();
        assert_eq!(NodesValue::merge_span(&mut into, &mut span), None);
        let folded = vec![view("a", "2"), view("b", "1"), view("c", "2"), view("d", "1")];
        assert_eq!(into, delta(4, folded.clone()), "each node once, where it first came, as it last was");

        // A snapshot is not folded into a delta: it comes back, and what follows it stays.
        let snapshot = NodesFrame::Snapshot { revision: 6, name: "ci".into(), order: vec![], nodes: vec![] };
        let mut span = vec![delta(5, vec![view("e", "1")]), snapshot.clone(), delta(7, vec![])].into_iter();
        assert_eq!(NodesValue::merge_span(&mut into, &mut span), Some(snapshot));
        assert_eq!(span.count(), 1, "the delta after the snapshot is left");
        let mut with_e = folded;
        with_e.push(view("e", "1"));
        assert_eq!(into, delta(5, with_e));
    }
}
