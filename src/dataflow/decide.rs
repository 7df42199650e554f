//! Decide: the per-user decision operator (docs/semantics.md, the decision
//! steps and channel fallback, `fallback.rs`).
//!
//! - inputs: arrivals from `route` (exchanged by user), and the profile
//!   arrangement of consent and preferences (whose frontier says its trace
//!   is complete).
//! - output: [`Decision`]s, dispatches and suppressions.
//! - key: the user. All of a user's arrivals, consent and preferences are on
//!   one worker (every stage routes by `user_hash`).
//! - time: arrivals are stashed until the input frontier passes their exact
//!   millisecond time. When the frontier reaches `F`, the arrivals before
//!   `F` are taken by user hash in arrival order (time, erasures first, then
//!   events by key fingerprint, see [`Applied`]): first their event
//!   keys are checked and noted ([`SeenKeys`]; duplicates and events that
//!   trigger and cancel nothing end there), then every user with arrivals
//!   left or candidates due before `F` is advanced instant by instant: at
//!   each instant `t` the user's records at `t` are applied, then the
//!   candidates due at `t` are decided in order of (decision time, event
//!   time, event key, rule order), reading consent and preferences from the
//!   profile arrangement as of `t`. Candidates decided later (delays, `at`,
//!   quiet-hour deferrals) wait in per-user state with a timer, and so do
//!   dispatches of rules with `fallback_after` until their outcome is
//!   known (`fallback.rs`: receipts reach every worker, and are applied by
//!   the one whose attempt they name).
//! - checkpoints (`run`, `decide_with`): at a requested time T, once the
//!   frontier has reached T (the cuts in front hold it there, `cut.rs`),
//!   everything before T is decided and the state is snapshot as of T
//!   ([`DecideState`], with the profiles as upserts); a recovery starts
//!   the operator from such a state.

use std::cell::RefCell;
use std::collections::BTreeSet;

use compact_str::CompactString;
use hashbrown::hash_table::{Entry, HashTable};
use std::rc::Rc;
use std::sync::Arc;

use differential_dataflow::operators::arrange::Arranged;
use differential_dataflow::trace::TraceReader;
use differential_dataflow::{AsCollection, VecCollection};
use timely::dataflow::Stream;
use timely::dataflow::channels::pact::{Exchange, ParallelizationContract, Pipeline};
use timely::dataflow::operators::generic::OutputBuilder;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::progress::frontier::AntichainRef;

use super::UserKey;
use super::activity::{Activity, signal_id};
use super::aggregates::{Fact, Update};
use super::caps::CapHistory;
use super::cut::{Request, Taken};
use super::delivery::{Delivery, Made};
use super::fallback::{Attempt, Flight, StepReceipts, note_step};
use super::history::{Reader, TraceSnapshot};
use super::holdout::in_holdout;
use super::inbox::{Inbox, InboxItem, InboxUpdate};
use super::profile::{PendingProfiles, ProfileEntry, ProfileTrace, UserProfile, profile_upserts};
use super::quiet_hours::{in_quiet_hours, quiet_hours_end};
use super::route::{Arrival, EventArrival, PlainArrival, ReceiptArrival, Router, RuleHit};
use super::seen::SeenKeys;
use crate::record::ReceiptStatus;
use crate::record::output::{
    ChurnSignal, Decision, Detail, Dispatch, Reason, RuledOut, Suppression, dispatch_id,
};
use crate::spec::analytics::CHURN_EVENT;
use crate::spec::{Channel, Priority, Purpose, Rule, Spec};
use crate::time::Time;
use serde::{Deserialize, Serialize};

/// Per-worker counts, read after the run.
#[derive(Clone, Debug, Default)]
pub struct DecideStats {
    pub events: u64,
    /// Event-key duplicates dropped (counted, not suppressed).
    pub duplicates: u64,
    pub candidates: u64,
    pub deferrals: u64,
}

/// A rule match waiting for its decision time.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Candidate {
    decision: Time,
    event_time: Time,
    event_key: CompactString,
    rule: u16,
    dedup_key: Option<String>,
    /// The event's `data`, moved into the dispatch (copied only for the
    /// second and later rules one event fires).
    vars: Option<Box<str>>,
}

/// What `decide` keeps about a user who has candidates or dispatches in
/// some window (event keys are in the worker's [`SeenKeys`]).
#[derive(Default, Serialize, Deserialize)]
pub struct UserState {
    pending: Vec<Candidate>,
    /// (rule, dedup key) → decision time and event key of the last
    /// first-attempt dispatch.
    dedup: Vec<(u16, String, Time, CompactString)>,
    caps: CapHistory,
    /// Fallback attempts, the inbox and activity: boxed, as most users of
    /// most specs have none of them, and every user's entry is moved and
    /// scanned in the worker's table.
    extra: Option<Box<Extras>>,
    /// When to next drop expired entries.
    #[serde(skip)]
    next_expiry: Time,
}

/// The rarer parts of a user's state.
#[derive(Default, Serialize, Deserialize)]
struct Extras {
    /// Dispatches waiting for their outcome (rules with `fallback_after`).
    attempts: Vec<Attempt>,
    /// The in-app inbox (`inbox.rs`).
    inbox: Inbox,
    /// Activity and churn risk (`activity.rs`), from the first activity on.
    activity: Option<Activity>,
    /// Attempts and their outcomes, for the delivery counts (`delivery.rs`).
    delivery: Delivery,
}

impl Extras {
    fn is_empty(&self) -> bool {
        self.attempts.is_empty()
            && self.inbox.is_empty()
            && self.activity.is_none()
            && self.delivery.is_empty()
    }
}

/// What a user without [`Extras`] has.
static NO_EXTRAS: Extras = Extras {
    attempts: Vec::new(),
    inbox: Inbox {
        items: Vec::new(),
        reads: Vec::new(),
    },
    activity: None,
    delivery: Delivery::new(),
};

/// What `decide` holds on one worker as of a checkpoint's time T (all
/// before T decided): each user's pending candidates, dedup and cap
/// history, the event keys last seen, and the arrivals at T or later.
#[derive(Default, Serialize, Deserialize)]
pub struct DecideState {
    /// The checkpoint's time T.
    pub time: Time,
    pub users: Vec<(UserKey, UserState)>,
    /// (fingerprint, user hash, time) of each event key last seen.
    pub seen: Vec<(u128, u64, Time)>,
    /// Users erased since the table's last sweep (by hash), and when.
    pub erased: Vec<(u64, Time)>,
    pub waiting: Vec<Arrival>,
}

/// [`DecideState`] borrowed, to encode without a copy of the users.
#[derive(Serialize)]
pub struct DecideStateRef<'a> {
    pub time: Time,
    pub users: Vec<(&'a UserKey, &'a UserState)>,
    pub seen: Vec<(u128, u64, Time)>,
    pub erased: Vec<(u64, Time)>,
    pub waiting: Vec<Arrival>,
}

impl DecideState {
    /// Moves each entry to the part of `parts` whose worker owns its
    /// user (`hash % parts.len()`, timely's exchange rule).
    pub fn split_into(self, parts: &mut [DecideState]) {
        let n = parts.len() as u64;
        for part in parts.iter_mut() {
            part.time = part.time.max(self.time);
        }
        for (user, state) in self.users {
            parts[(user.hash % n) as usize].users.push((user, state));
        }
        for entry in self.seen {
            parts[(entry.1 % n) as usize].seen.push(entry);
        }
        for entry in self.erased {
            parts[(entry.0 % n) as usize].erased.push(entry);
        }
        for arrival in self.waiting {
            match arrival {
                // Every worker holds a copy of each receipt: worker 0's
                // copies go to every new worker, the others' are dropped.
                Arrival::Receipt(r) if r.to == 0 => {
                    for (to, part) in parts.iter_mut().enumerate() {
                        let copy = r.for_worker(to as u32);
                        part.waiting.push(Arrival::Receipt(copy));
                    }
                }
                Arrival::Receipt(_) => {}
                arrival => parts[(arrival.hash() % n) as usize].waiting.push(arrival),
            }
        }
    }

    /// Renumbers the rules that candidates, dedup history and waiting
    /// arrivals name, after a spec change: `map[old]` is the rule's new
    /// index, `None` if it was removed. Dedup history of a removed rule is
    /// dropped; a pending candidate or a waiting match of one is an error
    /// naming the rule (by `old_names`).
    pub fn renumber_rules(
        &mut self,
        map: &[Option<u16>],
        old_names: &[String],
    ) -> Result<(), String> {
        let removed = |rule: u16| {
            format!(
                "rule {:?} is no longer in the spec, but the checkpoint holds notifications of it still to be decided",
                old_names.get(rule as usize).map_or("?", |n| n.as_str())
            )
        };
        let new = |rule: u16| map.get(rule as usize).copied().flatten();
        for (_, state) in &mut self.users {
            for c in &mut state.pending {
                c.rule = new(c.rule).ok_or_else(|| removed(c.rule))?;
            }
            let x = state.x_mut();
            for a in &mut x.attempts {
                a.rule = new(a.rule).ok_or_else(|| removed(a.rule))?;
            }
            // Inbox items of a removed rule leave the inbox.
            x.inbox.items.retain_mut(|i| match new(i.rule) {
                Some(r) => {
                    i.rule = r;
                    true
                }
                None => false,
            });
            state.trim();
            state.dedup.retain_mut(|(rule, ..)| match new(*rule) {
                Some(r) => {
                    *rule = r;
                    true
                }
                None => false,
            });
        }
        for arrival in &mut self.waiting {
            if let Arrival::Event(e) = arrival {
                for fire in &mut e.hit.fires {
                    fire.rule = new(fire.rule).ok_or_else(|| removed(fire.rule))?;
                }
                let mut cancels = 0u64;
                for old in 0..64u16 {
                    if e.hit.cancels >> old & 1 == 1
                        && let Some(r) = new(old)
                    {
                        cancels |= 1 << r;
                    }
                }
                e.hit.cancels = cancels;
            }
        }
        Ok(())
    }
}

impl UserState {
    fn is_empty(&self) -> bool {
        self.pending.is_empty()
            && self.dedup.is_empty()
            && self.caps.is_empty()
            && self.x().is_empty()
    }

    /// The attempts, inbox and activity (empty ones when there are none).
    fn x(&self) -> &Extras {
        self.extra.as_deref().unwrap_or(&NO_EXTRAS)
    }

    /// The attempts, inbox and activity, to change.
    fn x_mut(&mut self) -> &mut Extras {
        self.extra.get_or_insert_with(Box::default)
    }

    /// Drops the box of extras once they are all empty.
    fn trim(&mut self) {
        if self.extra.as_ref().is_some_and(|e| e.is_empty()) {
            self.extra = None;
        }
    }

    /// When the user next has something to do: a candidate to decide, an
    /// attempt whose outcome is due, a read or an item leaving the inbox
    /// (with items kept for `inbox_ttl`).
    fn next_due(&self, inbox_ttl: Time) -> Option<Time> {
        let candidates = self.pending.iter().map(|c| c.decision);
        let x = self.x();
        let attempts = x.attempts.iter().map(Attempt::due);
        let inbox = x.inbox.next_due(inbox_ttl);
        let churn = x.activity.as_ref().and_then(|a| a.crossing);
        candidates.chain(attempts).chain(inbox).chain(churn).min()
    }

    /// Whether a timer may find work for this user.
    fn waits(&self) -> bool {
        !self.pending.is_empty()
            || !self.x().attempts.is_empty()
            || !self.x().inbox.is_empty()
            || self
                .x()
                .activity
                .as_ref()
                .is_some_and(|a| a.crossing.is_some())
    }

    /// Whether receipts for the user's attempts may change the delivery
    /// counts.
    fn tracks(&self) -> bool {
        !self.x().delivery.tracked.is_empty()
    }

    /// Forgets what no future instant `≥ from` can see.
    fn expire(&mut self, spec: &Spec, longest_window: Time, from: Time) {
        self.dedup.retain(|(rule, _, t, _)| {
            let window = spec.rules[*rule as usize]
                .dedup
                .as_ref()
                .map_or(0, |d| d.window);
            *t > from.saturating_sub(window)
        });
        self.caps.expire(from, longest_window);
        self.next_expiry = from.saturating_add(longest_window.max(1) / 2);
    }
}

/// Consent and preferences of the user being decided, loaded on first use;
/// they borrow the trace snapshots of the current activation.
struct UserView<'u, 'a> {
    user: &'u UserKey,
    profile: Option<UserProfile<'a>>,
}

impl<'u, 'a> UserView<'u, 'a> {
    /// The user's consent and preferences, read from the trace on first use.
    fn load(&mut self, readers: &mut Readers<'a>) -> &UserProfile<'a> {
        let user = self.user;
        self.profile
            .get_or_insert_with(|| UserProfile::load(readers, user))
    }
}

/// Forward-only reader of the profile trace.
type Readers<'a> = Reader<'a, u64, ProfileEntry>;

struct Engine {
    /// Per-user state, found by the user's routing hash.
    users: HashTable<(UserKey, UserState)>,
    /// Arrivals whose time is not yet complete (at or after the frontier):
    /// plain events apart, as they come (nothing but their key to check).
    waiting_plain: Vec<PlainArrival>,
    waiting: Vec<Arrival>,
    /// This worker's copies of receipts whose time is not yet complete.
    waiting_receipts: Vec<ReceiptArrival>,
    /// Scratch: the other arrivals being applied (taken in turn), the
    /// order of all of them ([`Applied`]), users with due candidates, and
    /// the users of one hash.
    ready: Vec<Option<Arrival>>,
    order: Vec<Applied>,
    timer_users: Vec<UserKey>,
    hash_users: Vec<UserKey>,
    /// Everything before this time is decided.
    done: Time,
    core: Core,
}

/// One ready arrival's place in the order `decide` applies arrivals in:
/// by user hash, then by time, rank (erasures before events), the
/// fingerprint of the event key and stream position. (docs/semantics.md orders
/// events at one instant by event key; between different keys at one
/// instant that order is not observable — cancellation needs an earlier
/// event, candidates are decided in their own order — so the fingerprint,
/// which needs no string, stands in for the key. Equal keys, whose order
/// decides which is the duplicate, go by stream position.)
///
/// It holds what the event-key pass needs, so that the pass reads a dense
/// sorted array and visits no arrival: plain events are nothing more.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Applied {
    hash: u64,
    time: Time,
    rank: u8,
    fingerprint: u128,
    seq: u64,
    /// Where the arrival is in `ready`, or [`PLAIN`] or [`DROPPED`].
    index: u32,
}

/// [`Applied::rank`] of erasures, which come before events at an instant.
const RANK_ERASURE: u8 = 0;
/// [`Applied::rank`] of events, plain or not.
const RANK_EVENT: u8 = 1;

/// [`Applied::index`] of a plain event (kept nowhere: its key is all).
const PLAIN: u32 = u32::MAX;
/// [`Applied::index`] of an event found to be a duplicate.
const DROPPED: u32 = u32::MAX - 1;

impl Applied {
    fn plain(p: &PlainArrival) -> Applied {
        Applied {
            hash: p.user,
            time: p.time,
            rank: RANK_EVENT,
            fingerprint: p.fingerprint(),
            seq: p.seq,
            index: PLAIN,
        }
    }

    fn of(a: &Arrival, index: u32) -> Applied {
        let (hash, time, rank, fingerprint, seq) = match a {
            Arrival::Erasure { user, time } => (user.hash, *time, RANK_ERASURE, 0, 0),
            Arrival::Event(e) => (e.user.hash, e.time, RANK_EVENT, e.fingerprint, e.seq),
            Arrival::Plain(_) | Arrival::Receipt(_) => {
                unreachable!("plain events and receipts wait apart")
            }
            Arrival::Late(_) => unreachable!("late events are reported on arrival"),
        };
        Applied {
            hash,
            time,
            rank,
            fingerprint,
            seq,
            index,
        }
    }

    /// Not a plain event, nor a dropped duplicate.
    fn kept(&self) -> bool {
        self.index < DROPPED
    }
}

/// Everything `decide` shares across users.
struct Core {
    spec: Arc<Spec>,
    /// The longest cap or dedup window of the spec.
    longest_window: Time,
    /// (time, user hash) of users with pending candidates; may hold stale
    /// entries, which cost one empty visit.
    timers: BTreeSet<(Time, u64)>,
    /// Event keys last seen, for duplicates.
    seen: SeenKeys,
    /// The sweep of the user table (dropping what expired) is due at this
    /// time, once as many arrivals as a quarter of the table have come
    /// since the last: with `[analytics]` users stay in the table, and a
    /// sweep visits them all.
    next_sweep: Time,
    since_sweep: usize,
    stats: Rc<RefCell<DecideStats>>,
    /// The attempts in flight on this worker, by dispatch id.
    flight: Flight,
    /// How long in-app dispatches stay in the inbox; `None`: no inbox.
    inbox_ttl: Option<Time>,
    /// The inbox items on this worker, by dispatch id.
    inbox_ids: Flight,
    /// Inbox changes not yet sent.
    updates: Vec<InboxUpdate>,
    /// Matches rules on the `churn.risk_high` events `decide` makes.
    router: Router,
    /// (time, user hash) of the churn signals due (may hold stale entries).
    crossings: BTreeSet<(Time, u64)>,
    /// The receipts whose time is complete in the current step.
    receipts: StepReceipts,
    /// The attempts tracked for the delivery counts, by dispatch id.
    delivery_ids: Flight,
    /// Fact updates of the aggregates not yet sent (`aggregates.rs`); only
    /// with `[analytics]`.
    facts: Vec<Update>,
}

impl Engine {
    /// The state to checkpoint, once everything before the checkpoint's
    /// time is decided.
    fn snapshot(&self, time: Time) -> DecideStateRef<'_> {
        let (seen, erased) = self.core.seen.entries();
        let mut waiting: Vec<Arrival> = self.waiting.clone();
        waiting.extend(self.waiting_plain.iter().map(|p| Arrival::Plain(*p)));
        waiting.extend(self.waiting_receipts.iter().map(|r| Arrival::Receipt(*r)));
        DecideStateRef {
            time,
            users: self.users.iter().map(|(k, s)| (k, s)).collect(),
            seen,
            erased,
            waiting,
        }
    }

    /// Starts from a checkpoint's state (of this worker's users). The
    /// views of the aggregates start empty: each user's facts are stated
    /// again, as of just before the checkpoint's time.
    fn restore(&mut self, state: DecideState) {
        let before = state.time.saturating_sub(1);
        let analytics = self.core.spec.analytics.is_some();
        for (user, state) in state.users {
            if analytics && let Some(x) = state.extra.as_deref() {
                let holdout = in_holdout(&user.user, self.core.spec.holdout_bp);
                if let Some(a) = &x.activity {
                    a.restate(&user.user, holdout, before, &mut self.core.facts);
                }
                x.delivery.restate(before, &mut self.core.facts);
            }
            if let Some(due) = state.next_due(self.core.inbox_ttl.unwrap_or(Time::MAX)) {
                self.core.timers.insert((due, user.hash));
            }
            let x = state.x();
            if let Some(m) = x.activity.as_ref().and_then(|a| a.crossing) {
                self.core.crossings.insert((m, user.hash));
            }
            for a in &x.attempts {
                self.core.flight.add(a.id, user.hash);
            }
            for i in &x.inbox.items {
                self.core.inbox_ids.add(i.id, user.hash);
            }
            for t in &x.delivery.tracked {
                self.core.delivery_ids.add(t.id, user.hash);
            }
            // The inbox views start from the restored inboxes.
            if !x.inbox.items.is_empty() {
                self.core.updates.push(InboxUpdate {
                    user: user.user.clone(),
                    time: Time::MIN,
                    items: x.inbox.items.clone(),
                });
            }
            let hash = user.hash;
            self.users
                .insert_unique(hash, (user, state), |(u, _)| u.hash);
        }
        self.core.seen.restore(state.seen, state.erased);
        for arrival in state.waiting {
            match arrival {
                Arrival::Plain(p) => self.waiting_plain.push(p),
                Arrival::Receipt(r) => self.waiting_receipts.push(r),
                other => self.waiting.push(other),
            }
        }
    }

    /// Decides everything strictly before `frontier`. A churn signal's
    /// event takes part in its user's event keys at its instant, but event
    /// keys are checked for a whole step before users are visited: so, when
    /// the spec computes churn risk, a step stops after each instant a
    /// signal may be due at — a UTC midnight among the arrivals, or a
    /// signal already known — and the keys after it are checked once the
    /// signal's is.
    fn advance(&mut self, frontier: Time, profiles: &mut ProfileTrace, out: &mut Vec<Decision>) {
        let churn = self
            .core
            .spec
            .analytics
            .as_ref()
            .is_some_and(|a| a.churn.is_some());
        if !churn {
            return self.advance_step(frontier, profiles, out);
        }
        // The span of the arrivals this advance applies.
        let times = self
            .waiting
            .iter()
            .map(Arrival::time)
            .chain(self.waiting_plain.iter().map(|p| p.time))
            .filter(|t| *t < frontier);
        let (first, last) =
            times.fold((Time::MAX, Time::MIN), |(lo, hi), t| (lo.min(t), hi.max(t)));
        // Everything before `at` is decided.
        let mut at = self.done;
        loop {
            while self.core.crossings.first().is_some_and(|&(m, _)| m < at) {
                self.core.crossings.pop_first();
            }
            let midnight = ceil_to_midnight(at.max(first)).filter(|m| *m <= last);
            let known = self.core.crossings.first().map(|&(m, _)| m);
            let stop = midnight.into_iter().chain(known).min().unwrap_or(Time::MAX);
            if stop >= frontier || stop == Time::MAX {
                return self.advance_step(frontier, profiles, out);
            }
            self.advance_step(stop + 1, profiles, out);
            at = stop + 1;
        }
    }

    /// Decides everything strictly before `frontier`: applies the arrivals
    /// before it and decides the candidates due before it, user by user in
    /// key order (hash first), so that trace cursors only ever move forward.
    fn advance_step(
        &mut self,
        frontier: Time,
        profiles: &mut ProfileTrace,
        out: &mut Vec<Decision>,
    ) {
        self.done = self.done.max(frontier);
        let (ready, order) = (&mut self.ready, &mut self.order);
        ready.clear();
        order.clear();
        order.extend(
            self.waiting_plain
                .extract_if(.., |p| p.time < frontier)
                .map(|p| Applied::plain(&p)),
        );
        for a in self.waiting.extract_if(.., |a| a.time() < frontier) {
            order.push(Applied::of(&a, ready.len() as u32));
            ready.push(Some(a));
        }
        let timer_users = &mut self.timer_users;
        timer_users.clear();
        // Receipts now complete, and the users whose attempts they name.
        let receipts = self.waiting_receipts.extract_if(.., |r| r.time < frontier);
        if note_step(receipts, &mut self.core.receipts) > 0 {
            for id in self.core.receipts.keys() {
                let users = [
                    self.core.flight.user(*id),
                    self.core.inbox_ids.user(*id),
                    self.core.delivery_ids.user(*id),
                ];
                for hash in users.into_iter().flatten() {
                    self.core.timers.insert((Time::MIN, hash));
                }
            }
        }
        while self.core.timers.first().is_some_and(|(t, _)| *t < frontier) {
            let (_, hash) = self.core.timers.pop_first().unwrap();
            // Almost always one user; distinct users may share a hash.
            timer_users.extend(
                self.users
                    .iter_hash(hash)
                    .filter(|(k, s)| k.hash == hash && (s.waits() || s.tracks()))
                    .map(|(k, _)| k.clone()),
            );
        }
        if order.is_empty() && timer_users.is_empty() {
            return;
        }
        timer_users.sort_unstable();
        timer_users.dedup();
        order.sort_unstable();
        self.core.since_sweep += order.len();

        // One reference count per step, not per user visited.
        let spec = self.core.spec.clone();
        let mut snapshot = TraceSnapshot::new(profiles);
        let mut readers = snapshot.reader();
        // Visit user hashes in order: those with arrivals merged with those
        // with due candidates.
        let (mut next, mut timer) = (0, 0);
        let users = &mut self.hash_users;
        loop {
            let hash = match (order.get(next).map(|o| o.hash), timer_users.get(timer)) {
                (None, None) => break,
                (Some(a), None) => a,
                (None, Some(t)) => t.hash,
                (Some(a), Some(t)) => a.min(t.hash),
            };
            let len = order[next..].iter().take_while(|o| o.hash == hash).count();
            let run = &mut order[next..next + len];
            next += len;
            users.clear();
            while let Some(u) = timer_users.get(timer).filter(|u| u.hash == hash) {
                users.push(u.clone());
                timer += 1;
            }
            // Event keys first, for the whole run in arrival order: "last
            // seen" depends on nothing but arrivals and erasures, and is kept
            // per user hash (`seen.rs`). Duplicates are dropped here, and so
            // are events that trigger and cancel nothing (most events),
            // which never touch a user's decision state.
            let mut rest = false;
            for o in run.iter_mut() {
                if o.index == PLAIN {
                    self.core.is_duplicate(o.hash, o.fingerprint, o.time);
                } else if o.rank == RANK_ERASURE {
                    let Some(Arrival::Erasure { user, time }) = &ready[o.index as usize] else {
                        unreachable!("only erasures have their rank")
                    };
                    self.core.seen.erase(user, *time);
                    rest = true;
                } else if self.core.is_duplicate(o.hash, o.fingerprint, o.time) {
                    o.index = DROPPED;
                } else {
                    rest = true;
                }
            }
            if users.is_empty() && !rest {
                continue;
            }
            let run = &*run;
            // The users of this hash: almost always one.
            users.extend(run.iter().filter(|o| o.kept()).filter_map(|o| {
                ready[o.index as usize]
                    .as_ref()
                    .and_then(Arrival::user)
                    .cloned()
            }));
            users.sort_unstable();
            users.dedup();
            for user in users.iter() {
                let (key, state) = match self.users.entry(hash, |(u, _)| u == user, |(u, _)| u.hash)
                {
                    Entry::Occupied(o) => o.into_mut(),
                    Entry::Vacant(v) => v.insert((user.clone(), UserState::default())).into_mut(),
                };
                let mut mine = run.iter().filter(|o| o.kept()).filter_map(|o| {
                    let slot = &mut ready[o.index as usize];
                    if slot.as_ref()?.user() == Some(user) {
                        slot.take()
                    } else {
                        None
                    }
                });
                self.core
                    .advance_user(&spec, key, state, &mut mine, frontier, &mut readers, out);
                if state.is_empty()
                    && let Ok(o) = self.users.find_entry(hash, |(u, _)| u == user)
                {
                    o.remove();
                }
            }
        }
        self.core.seen.end_step(frontier);
        if frontier >= self.core.next_sweep
            && frontier != Time::MAX
            && self.core.since_sweep * 4 >= self.users.len()
        {
            self.core.since_sweep = 0;
            let (spec, longest) = (&self.core.spec, self.core.longest_window);
            let ids = &mut self.core.delivery_ids;
            let mut gone = Vec::new();
            self.users.retain(|(_, s)| {
                if !s.waits() && frontier >= s.next_expiry {
                    s.expire(spec, longest, frontier);
                }
                if let Some(x) = s.extra.as_mut() {
                    x.delivery.expire(frontier, &mut gone);
                }
                s.trim();
                !s.is_empty()
            });
            for id in gone {
                ids.remove(id);
            }
            self.core.next_sweep = frontier.saturating_add(longest.max(60_000));
        }
    }
}

impl Core {
    /// Applies one user's `arrivals` (all before `frontier`, in arrival
    /// order; duplicates already dropped and erasures already applied to
    /// the event keys) and decides its candidates due before `frontier`, instant by
    /// instant.
    #[allow(clippy::too_many_arguments)]
    fn advance_user<'a>(
        &mut self,
        spec: &Spec,
        user: &UserKey,
        state: &mut UserState,
        arrivals: &mut impl Iterator<Item = Arrival>,
        frontier: Time,
        readers: &mut Readers<'a>,
        out: &mut Vec<Decision>,
    ) {
        let mut view = UserView {
            user,
            profile: None,
        };
        let mut arrivals = arrivals.peekable();
        // This step's receipts for the attempts in flight and the inbox.
        if !self.receipts.is_empty() && state.extra.is_some() {
            let x = state.x_mut();
            for a in &mut x.attempts {
                self.claim(a);
            }
            x.delivery.claim(&self.receipts, &mut self.facts);
            for i in 0..x.inbox.items.len() {
                let (id, placed) = (x.inbox.items[i].id, x.inbox.items[i].time);
                self.note_reads(&mut x.inbox, id, placed);
            }
        }
        let inbox_ttl = self.inbox_ttl.unwrap_or(Time::MAX);
        loop {
            let next_arrival = arrivals.peek().map(Arrival::time);
            let next_due = state.next_due(inbox_ttl).filter(|d| *d < frontier);
            let t = match (next_arrival, next_due) {
                (None, None) => break,
                (Some(a), None) => a,
                (None, Some(d)) => d,
                (Some(a), Some(d)) => a.min(d),
            };
            while let Some(arrival) = arrivals.next_if(|a| a.time() == t) {
                match arrival {
                    Arrival::Erasure { time, .. } => {
                        for c in state.pending.drain(..) {
                            out.push(suppress(user, &c, time, Reason::Erased, Detail::None));
                        }
                        self.retract(spec, user, state, time);
                        // Dispatched candidates make no further attempts.
                        for a in &state.x().attempts {
                            self.flight.remove(a.id);
                        }
                        if !state.x().inbox.items.is_empty() {
                            for i in &state.x().inbox.items {
                                self.inbox_ids.remove(i.id);
                            }
                            self.inbox_update(user, time, Vec::new());
                        }
                        *state = UserState::default();
                    }
                    Arrival::Event(e) => self.apply_event(user, *e, state, out),
                    Arrival::Plain(_) | Arrival::Late(_) | Arrival::Receipt(_) => {
                        unreachable!("plain and late events and receipts do not reach users")
                    }
                }
            }
            // Churn risk: the signal due at t, unless activity at t moved it.
            if state.x().activity.as_ref().and_then(|a| a.crossing) == Some(t) {
                self.churn_signal(spec, user, state, t, out);
            }
            // Attempts whose outcome is known at t: done, or the next one.
            while let Some(i) = state.x().attempts.iter().position(|a| a.due() == t) {
                let a = state.x_mut().attempts.swap_remove(i);
                self.flight.remove(a.id);
                if !a.succeeded() {
                    self.fall_back(spec, a, t, state, &mut view, readers, out);
                }
            }
            // The inbox: reads at t, and items whose time is up.
            if !state.x().inbox.is_empty() {
                let mut left = Vec::new();
                if state.x_mut().inbox.advance(t, inbox_ttl, &mut left) {
                    let items = state.x().inbox.items.clone();
                    self.inbox_update(user, t, items);
                }
                for id in left {
                    self.inbox_ids.remove(id);
                }
            }
            while let Some(i) = (0..state.pending.len())
                .filter(|&i| state.pending[i].decision == t)
                .min_by(|&i, &j| state.pending[i].cmp(&state.pending[j]))
            {
                let c = state.pending.swap_remove(i);
                self.decide_one(spec, c, t, state, &mut view, readers, out);
            }
        }
        if let Some(next) = state.next_due(inbox_ttl) {
            self.timers.insert((next, user.hash));
        }
        if let Some(m) = state.x().activity.as_ref().and_then(|a| a.crossing) {
            self.crossings.insert((m, user.hash));
        }
        if !state.x().delivery.tracked.is_empty() {
            let mut gone = Vec::new();
            state.x_mut().delivery.expire(frontier, &mut gone);
            for id in gone {
                self.delivery_ids.remove(id);
            }
        }
        state.trim();
        if frontier != Time::MAX && frontier >= state.next_expiry {
            state.expire(spec, self.longest_window, frontier);
        }
    }

    /// Counts an event arrival and notes its key as seen; true if it is a
    /// duplicate (docs/semantics.md: last seen within (t − horizon, t]), which is
    /// dropped.
    fn is_duplicate(&mut self, user: u64, fingerprint: u128, t: Time) -> bool {
        let mut stats = self.stats.borrow_mut();
        stats.events += 1;
        let duplicate = self.seen.observe(user, fingerprint, t);
        stats.duplicates += duplicate as u64;
        duplicate
    }

    /// Applies an event that is not a duplicate: cancels, then fires.
    fn apply_event(
        &mut self,
        user: &UserKey,
        e: EventArrival,
        state: &mut UserState,
        out: &mut Vec<Decision>,
    ) {
        let t = e.time;
        let RuleHit {
            fires,
            cancels,
            data,
            activity,
        } = e.hit;
        if let (Some(hit), Some(analytics)) = (activity, self.spec.analytics.as_ref()) {
            let holdout = in_holdout(&user.user, self.spec.holdout_bp);
            let x = state.x_mut();
            match x.activity.as_mut() {
                None => {
                    let a = Activity::first(analytics, t, hit.segment);
                    a.joined(&user.user, holdout, t, &mut self.facts);
                    x.activity = Some(a);
                }
                Some(a) => match a.note(analytics, t) {
                    Some(before) => a.active_again(&user.user, holdout, before, t, &mut self.facts),
                    None => a.settle(t, &mut self.facts),
                },
            }
        }
        // Cancellation: pending candidates of a cancelling rule whose event
        // came strictly before this one (their decision time is ≥ t).
        if cancels != 0 {
            state.pending.retain(|c| {
                let cancelled = cancels >> c.rule & 1 == 1 && c.event_time < t;
                if cancelled {
                    let by = Detail::CancelledBy(e.key.clone());
                    out.push(suppress(user, c, t, Reason::Cancelled, by));
                }
                !cancelled
            });
        }
        self.stats.borrow_mut().candidates += fires.len() as u64;
        // The last fire takes the key and data; earlier ones copy them.
        let (mut key, mut data) = (e.key, data);
        let mut fires = fires.into_iter().peekable();
        while let Some(fire) = fires.next() {
            let (event_key, vars) = match fires.peek() {
                None => (std::mem::take(&mut key), data.take()),
                Some(_) => (key.clone(), data.clone()),
            };
            state.pending.push(Candidate {
                decision: fire.decision,
                event_time: t,
                event_key,
                rule: fire.rule,
                dedup_key: fire.dedup_key,
                vars,
            });
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn decide_one<'a>(
        &mut self,
        spec: &Spec,
        mut c: Candidate,
        t: Time,
        state: &mut UserState,
        view: &mut UserView<'_, 'a>,
        readers: &mut Readers<'a>,
        out: &mut Vec<Decision>,
    ) {
        let rule = &spec.rules[c.rule as usize];
        let user = view.user;
        let profile = view.load(readers);
        let prefs = profile.prefs(t);
        // 1. muted
        if prefs.is_some_and(|p| p.muted_rules.contains(&rule.name)) {
            return out.push(suppress(user, &c, t, Reason::Muted, Detail::None));
        }
        // 2. holdout
        if rule.purpose == Purpose::Marketing && in_holdout(&user.user, spec.holdout_bp) {
            return out.push(suppress(user, &c, t, Reason::Holdout, Detail::None));
        }
        // 3. per-rule dedup
        if let (Some(dedup), Some(key)) = (&rule.dedup, &c.dedup_key)
            && let Some((.., earlier)) = state.dedup.iter().find(|(r, k, last, _)| {
                *r == c.rule && k == key && *last > t.saturating_sub(dedup.window)
            })
        {
            let detail = Detail::DuplicateOf(earlier.clone());
            return out.push(suppress(user, &c, t, Reason::Duplicate, detail));
        }
        let critical = rule.priority == Priority::Critical;
        // 4. quiet hours: defer to their end, decide again from step 1.
        if rule.purpose == Purpose::Marketing
            && !critical
            && let Some(q) = prefs.and_then(|p| p.quiet_hours.as_ref())
            && in_quiet_hours(q, t)
            && let Some(end) = quiet_hours_end(q, t)
        {
            c.decision = end;
            self.stats.borrow_mut().deferrals += 1;
            state.pending.push(c);
            return;
        }
        // 5. channel selection: consent as of t, channel caps.
        let preferred = prefs.and_then(|p| p.channels.as_ref());
        let mut order = channel_order(rule, preferred);
        let mut any_consent = false;
        let chosen = order.find(|&ch| {
            let ok = profile.granted(ch, rule.purpose, t);
            any_consent |= ok;
            ok && (critical || state.caps.channel_allows(spec, ch, t))
        });
        let Some(channel) = chosen else {
            let reason = if any_consent {
                Reason::RateLimited
            } else {
                Reason::NoChannel
            };
            // Why each of the rule's channels was ruled out, in its order.
            let why = rule
                .channels
                .iter()
                .map(|&ch| {
                    let why = if preferred.is_some_and(|p| !p.contains(&ch)) {
                        RuledOut::NotInPreferences
                    } else if !profile.granted(ch, rule.purpose, t) {
                        RuledOut::NoConsent
                    } else {
                        let full = state.caps.full_channel_cap(spec, ch, t);
                        RuledOut::Cap(full.expect("a channel with consent was ruled out by a cap"))
                    };
                    (ch, why)
                })
                .collect();
            return out.push(suppress(user, &c, t, reason, Detail::Channels(why)));
        };
        // 6. purpose caps
        if !critical && let Some(cap) = state.caps.full_purpose_cap(spec, rule.purpose, t) {
            let detail = Detail::PurposeCap(rule.purpose, cap);
            return out.push(suppress(user, &c, t, Reason::RateLimited, detail));
        }
        // 7. dispatch
        state
            .caps
            .record(t, channel, rule.purpose, self.longest_window);
        if let (Some(_), Some(key)) = (&rule.dedup, c.dedup_key.take()) {
            match state
                .dedup
                .iter_mut()
                .find(|(r, k, ..)| *r == c.rule && *k == key)
            {
                Some(entry) => (entry.2, entry.3) = (t, c.event_key.clone()),
                None => state.dedup.push((c.rule, key, t, c.event_key.clone())),
            }
        }
        // The dispatch's id, once, when anything here needs it.
        let needs_id =
            rule.fallback_after.is_some() || channel == Channel::InApp || spec.analytics.is_some();
        let id = if needs_id {
            dispatch_id(&user.user, &c.event_key, &rule.name, 1).as_u128()
        } else {
            0
        };
        if let Some(window) = rule.fallback_after {
            let order: Vec<Channel> = channel_order(rule, preferred).collect();
            let at = order.iter().position(|&ch| ch == channel).unwrap_or(0) as u8;
            let attempt = Attempt::new(
                id,
                1,
                t,
                window,
                c.rule,
                order,
                at,
                c.event_key.clone(),
                c.event_time,
                c.vars.clone(),
            );
            self.start(user, attempt, state);
        }
        if channel == Channel::InApp {
            self.place(user, state, c.rule, t, &c.vars, || id);
        }
        if spec.analytics.is_some() {
            let made = Made {
                id,
                number: 1,
                notification: id,
                rule: c.rule,
                channel,
                time: t,
                window: rule.fallback_after,
            };
            self.count_attempt(user, state, made);
        }
        out.push(Decision::Dispatch(Dispatch {
            user: user.user.clone(),
            rule: c.rule,
            channel,
            attempt: 1,
            event_key: c.event_key,
            event_time: c.event_time,
            decision_time: t,
            locale: prefs.and_then(|p| p.locale.clone()),
            vars: c.vars,
            id: std::num::NonZeroU128::new(id),
        }));
    }

    /// Counts an attempt for the delivery aggregates, and tracks its id
    /// for the receipts that name it.
    fn count_attempt(&mut self, user: &UserKey, state: &mut UserState, made: Made) {
        let id = made.id;
        let delivery = &mut state.x_mut().delivery;
        delivery.attempt(made, &self.receipts, &mut self.facts);
        self.delivery_ids.add(id, user.hash);
    }

    /// An erasure at `t`: retracts everything the user contributed to the
    /// aggregates (the state itself is dropped by the caller).
    fn retract(&mut self, spec: &Spec, user: &UserKey, state: &mut UserState, t: Time) {
        let Some(x) = state.extra.as_mut() else {
            return;
        };
        let holdout = in_holdout(&user.user, spec.holdout_bp);
        if let Some(a) = x.activity.as_mut() {
            a.retract(&user.user, holdout, t, &mut self.facts);
        }
        let mut gone = Vec::new();
        x.delivery.retract(t, &mut self.facts, &mut gone);
        for id in gone {
            self.delivery_ids.remove(id);
        }
    }

    /// Notes this step's receipts for an attempt.
    fn claim(&mut self, attempt: &mut Attempt) {
        attempt.claim(&self.receipts);
    }

    /// The `churn.risk_high` signal at `t`: written to the churn-signal
    /// output, and applied as an event of the user at `t`, so that rules
    /// react to it (a win-back rule).
    fn churn_signal(
        &mut self,
        spec: &Spec,
        user: &UserKey,
        state: &mut UserState,
        t: Time,
        out: &mut Vec<Decision>,
    ) {
        let (Some(activity), Some(churn)) = (
            state.x_mut().activity.as_mut(),
            spec.analytics.as_ref().and_then(|a| a.churn.as_ref()),
        ) else {
            return;
        };
        activity.crossing = None;
        activity.signalled(t, &mut self.facts);
        let summary = activity.summary();
        let p_alive =
            crate::analytics::bgnbd::evaluate(&churn.model, churn.unit, &summary, t).p_alive;
        out.push(Decision::Churn(ChurnSignal::new(
            user.user.clone(),
            t,
            p_alive,
        )));
        let key = CompactString::from(format!("nudgeflow/{}", signal_id(&user.user, t)));
        let fingerprint = super::seen::fingerprint(&user.user, key.as_bytes());
        if self.seen.observe(user.hash, fingerprint, t) {
            return;
        }
        let data = format!("{{\"p_alive\":{}}}", serde_json::Value::from(p_alive));
        let (fires, cancels) = self.router.evaluate(CHURN_EVENT, t, Some(&data));
        if fires.is_empty() && cancels == 0 {
            return;
        }
        let event = EventArrival {
            user: user.clone(),
            key,
            fingerprint,
            time: t,
            seq: 0,
            hit: RuleHit {
                data: (!fires.is_empty()).then(|| data.into_boxed_str()),
                fires,
                cancels,
                activity: None,
            },
        };
        self.apply_event(user, event, state, out);
    }

    /// Notes this step's `opened` receipts for inbox item `id`, placed at
    /// `placed`.
    fn note_reads(&self, inbox: &mut Inbox, id: u128, placed: Time) {
        let Some(receipts) = self.receipts.get(&id) else {
            return;
        };
        let opened = receipts
            .iter()
            .filter(|r| r.2 == ReceiptStatus::Opened)
            .map(|r| r.0);
        inbox.note_reads(id, placed, opened);
    }

    /// Places an in-app dispatch made at `t` in the user's inbox, when the
    /// job keeps one.
    fn place(
        &mut self,
        user: &UserKey,
        state: &mut UserState,
        rule: u16,
        t: Time,
        vars: &Option<Box<str>>,
        id: impl FnOnce() -> u128,
    ) {
        if self.inbox_ttl.is_none() {
            return;
        }
        let id = id();
        let inbox = &mut state.x_mut().inbox;
        inbox.items.push(InboxItem {
            id,
            rule,
            time: t,
            vars: vars.clone(),
            read: false,
        });
        self.inbox_ids.add(id, user.hash);
        self.note_reads(&mut state.x_mut().inbox, id, t);
        let items = state.x().inbox.items.clone();
        self.inbox_update(user, t, items);
    }

    fn inbox_update(&mut self, user: &UserKey, time: Time, items: Vec<InboxItem>) {
        self.updates.push(InboxUpdate {
            user: user.user.clone(),
            time,
            items,
        });
    }

    /// Puts a new attempt in flight, with the receipts already here for it.
    fn start(&mut self, user: &UserKey, mut attempt: Attempt, state: &mut UserState) {
        self.claim(&mut attempt);
        self.flight.add(attempt.id, user.hash);
        state.x_mut().attempts.push(attempt);
    }

    /// Attempt k + 1 at `t` after attempt `a` failed or timed out: the next
    /// channel with consent as of `t`, or `undeliverable`. It is not muted,
    /// capped, deduplicated, deferred or cancelled, and counts toward no cap.
    #[allow(clippy::too_many_arguments)]
    fn fall_back<'a>(
        &mut self,
        spec: &Spec,
        a: Attempt,
        t: Time,
        state: &mut UserState,
        view: &mut UserView<'_, 'a>,
        readers: &mut Readers<'a>,
        out: &mut Vec<Decision>,
    ) {
        let rule = &spec.rules[a.rule as usize];
        let user = view.user;
        let profile = view.load(readers);
        let Some((at, channel)) = a.next_channel(|ch| profile.granted(ch, rule.purpose, t)) else {
            return out.push(Decision::Suppression(Suppression {
                user: user.user.clone(),
                rule: Some(a.rule),
                event_key: a.event_key,
                time: t,
                reason: Reason::Undeliverable,
                detail: Detail::None,
            }));
        };
        let number = a.number + 1;
        let locale = profile.prefs(t).and_then(|p| p.locale.clone());
        let id = dispatch_id(&user.user, &a.event_key, &rule.name, number).as_u128();
        out.push(Decision::Dispatch(Dispatch {
            user: user.user.clone(),
            rule: a.rule,
            channel,
            attempt: number,
            event_key: a.event_key.clone(),
            event_time: a.event_time,
            decision_time: t,
            locale,
            vars: a.vars.clone(),
            id: std::num::NonZeroU128::new(id),
        }));
        if channel == Channel::InApp {
            self.place(user, state, a.rule, t, &a.vars, || id);
        }
        let window = a.deadline - a.made;
        if spec.analytics.is_some() {
            let made = Made {
                id,
                number,
                notification: a.first,
                rule: a.rule,
                channel,
                time: t,
                window: Some(window),
            };
            self.count_attempt(user, state, made);
        }
        let first = a.first;
        let mut next = Attempt::new(
            id,
            number,
            t,
            window,
            a.rule,
            a.order,
            at,
            a.event_key,
            a.event_time,
            a.vars,
        );
        next.first = first;
        self.start(user, next, state);
    }
}

/// The first UTC midnight at or after `t`, if there is one.
fn ceil_to_midnight(t: Time) -> Option<Time> {
    const DAY: Time = crate::time::MS_PER_DAY;
    let floor = t.div_euclid(DAY).checked_mul(DAY)?;
    if floor == t {
        Some(t)
    } else {
        floor.checked_add(DAY)
    }
}

/// The candidate's channel order (step 5): the rule's channels, restricted
/// to and reordered by the user's `channels` preference when there is one.
fn channel_order<'r>(
    rule: &'r Rule,
    preferred: Option<&'r Vec<Channel>>,
) -> impl Iterator<Item = Channel> + 'r {
    let own = rule
        .channels
        .iter()
        .copied()
        .filter(move |_| preferred.is_none());
    let restricted = preferred
        .into_iter()
        .flatten()
        .copied()
        .filter(|ch| rule.channels.contains(ch));
    own.chain(restricted)
}

fn suppress(user: &UserKey, c: &Candidate, t: Time, reason: Reason, detail: Detail) -> Decision {
    Decision::Suppression(Suppression {
        user: user.user.clone(),
        rule: Some(c.rule),
        event_key: c.event_key.clone(),
        time: t,
        reason,
        detail,
    })
}

/// What `decide` needs to take checkpoints (`run`): the requests (every
/// worker sees each), the cuts to release once its snapshot is taken, the
/// profile upserts not yet complete, and the state to start from.
pub struct Checkpoints<'s> {
    pub requests: Stream<'s, Time, Vec<Request>>,
    pub taken: Taken,
    pub pending_profiles: PendingProfiles,
    pub restore: Option<DecideState>,
}

/// One worker's snapshot as of a checkpoint request's time, encoded
/// (`checkpoint::state`).
pub struct Snapshot {
    pub request: Request,
    pub bytes: Vec<u8>,
    /// Users with decision state, for the log.
    pub users: usize,
    /// How long the snapshot took to take and encode.
    pub seconds: f64,
}

/// What `decide` sends on: decisions, checkpoint snapshots, inbox changes
/// and the facts of the aggregates (a Differential collection, at the
/// facts' exact times; empty without `[analytics]`).
pub struct Decided<'s> {
    pub decisions: Stream<'s, Time, Vec<Decision>>,
    pub snapshots: Stream<'s, Time, Vec<Snapshot>>,
    pub inbox: Stream<'s, Time, Vec<InboxUpdate>>,
    pub facts: VecCollection<'s, Time, Fact, isize>,
}

/// Builds the decide operator, without checkpoints or an inbox.
pub fn decide<'s>(
    arrivals: Stream<'s, Time, Vec<Arrival>>,
    profiles: Arranged<'s, ProfileTrace>,
    spec: Arc<Spec>,
    stats: Rc<RefCell<DecideStats>>,
) -> Decided<'s> {
    let pact = Exchange::new(|a: &Arrival| a.hash());
    decide_with(arrivals, pact, profiles, spec, stats, None, None)
}

/// Builds the decide operator, its arrivals routed by `pact`; with
/// `checkpoints`, it also snapshots its state at each requested time T, when
/// its frontier has reached T (the cuts hold it there until then), after
/// deciding everything before T. With `inbox_ttl`, in-app dispatches are
/// kept in the users' inboxes for that long (`inbox.rs`).
pub fn decide_with<'s, P>(
    arrivals: Stream<'s, Time, Vec<Arrival>>,
    pact: P,
    profiles: Arranged<'s, ProfileTrace>,
    spec: Arc<Spec>,
    stats: Rc<RefCell<DecideStats>>,
    checkpoints: Option<Checkpoints<'s>>,
    inbox_ttl: Option<Time>,
) -> Decided<'s>
where
    P: ParallelizationContract<Time, Vec<Arrival>>,
{
    let mut builder = OperatorBuilder::new("Decide".to_owned(), arrivals.scope());
    let mut arrivals_in = builder.new_input(arrivals, pact);
    let mut profiles_in = builder.new_input(profiles.stream, Pipeline);
    let (output, decisions) = builder.new_output::<Vec<Decision>>();
    let mut output = OutputBuilder::from(output);
    let (snapshot_output, snapshots) = builder.new_output::<Vec<Snapshot>>();
    let mut snapshot_output = OutputBuilder::from(snapshot_output);
    let (inbox_output, inbox) = builder.new_output::<Vec<InboxUpdate>>();
    let mut inbox_output = OutputBuilder::from(inbox_output);
    let (facts_output, facts) = builder.new_output::<Vec<Update>>();
    let mut facts_output = OutputBuilder::from(facts_output);
    let mut profile_trace = profiles.trace;
    let (mut requests_in, taken, pending_profiles, restore) = match checkpoints {
        Some(c) => (
            Some(builder.new_input(c.requests, Pipeline)),
            Some(c.taken),
            c.pending_profiles,
            c.restore,
        ),
        None => (None, None, Default::default(), None),
    };

    builder.build(move |mut capabilities| {
        let mut facts_capability = capabilities.pop();
        let mut inbox_capability = capabilities.pop();
        let mut snapshot_capability = capabilities.pop();
        let mut capability = capabilities.pop();
        let router = Router::new(spec.clone());
        let mut engine = Engine {
            users: HashTable::new(),
            waiting_plain: Vec::new(),
            waiting: Vec::new(),
            waiting_receipts: Vec::new(),
            ready: Vec::new(),
            order: Vec::new(),
            timer_users: Vec::new(),
            hash_users: Vec::new(),
            done: Time::MIN,
            core: Core {
                longest_window: spec.longest_window(),
                seen: SeenKeys::new(spec.dedup_horizon),
                spec,
                timers: BTreeSet::new(),
                next_sweep: Time::MIN,
                since_sweep: 0,
                stats,
                flight: Flight::default(),
                receipts: StepReceipts::default(),
                inbox_ttl,
                inbox_ids: Flight::default(),
                updates: Vec::new(),
                router,
                crossings: BTreeSet::new(),
                delivery_ids: Flight::default(),
                facts: Vec::new(),
            },
        };
        if let Some(state) = restore {
            engine.restore(state);
        }
        let mut done_through = Time::MIN;
        let mut buffer = Vec::new();
        let mut requested: Vec<Request> = Vec::new();
        move |frontiers| {
            arrivals_in.for_each(|_cap, data| {
                for arrival in data.drain(..) {
                    match arrival {
                        Arrival::Late(late) => buffer.push(Decision::Suppression(Suppression {
                            user: late.user.user,
                            rule: None,
                            event_key: late.event_key,
                            time: late.time,
                            reason: Reason::Late,
                            detail: Detail::None,
                        })),
                        Arrival::Plain(p) => engine.waiting_plain.push(p),
                        Arrival::Receipt(r) => engine.waiting_receipts.push(r),
                        other => engine.waiting.push(other),
                    }
                }
            });
            // The arrangements' batches are already in their traces.
            profiles_in.for_each(|_cap, _batches| {});
            if let Some(requests) = requests_in.as_mut() {
                requests.for_each(|_cap, data| requested.append(data));
                requested.sort_by_key(|r| r.time);
            }

            let frontier = frontiers
                .iter()
                .filter_map(|f| f.frontier().first().copied())
                .min()
                .unwrap_or(Time::MAX);
            // Checkpoints the frontier has reached, oldest first: decide
            // everything before T, then snapshot.
            while let Some(request) = requested.first().copied()
                && request.time <= frontier
            {
                requested.remove(0);
                if request.time > done_through {
                    engine.advance(request.time, &mut profile_trace, &mut buffer);
                    done_through = request.time;
                }
                let started = std::time::Instant::now();
                let profile = profile_upserts(&mut profile_trace, &pending_profiles, request.time);
                let users = engine.users.len();
                let bytes =
                    crate::checkpoint::state::encode(&engine.snapshot(request.time), &profile);
                if let Some(cap) = snapshot_capability.as_ref() {
                    let snapshot = Snapshot {
                        request,
                        bytes,
                        users,
                        seconds: started.elapsed().as_secs_f64(),
                    };
                    snapshot_output
                        .activate()
                        .session(&cap.delayed(&request.time))
                        .give(snapshot);
                }
                if let Some(taken) = &taken {
                    taken.set(request.time);
                }
            }
            if frontier > done_through {
                engine.advance(frontier, &mut profile_trace, &mut buffer);
                done_through = frontier;
            }
            let compaction = if frontier == Time::MAX {
                AntichainRef::new(&[])
            } else {
                AntichainRef::new(std::slice::from_ref(&done_through))
            };
            profile_trace.set_logical_compaction(compaction);
            profile_trace.set_physical_compaction(compaction);
            if let Some(cap) = capability.as_mut() {
                if !buffer.is_empty() {
                    let len = buffer.len();
                    output.activate().session(&*cap).give_container(&mut buffer);
                    // The next step most likely decides as many: room for
                    // them at once, not grown by doubling.
                    buffer.reserve(len);
                }
                if frontier == Time::MAX {
                    capability = None;
                } else if frontier > *cap.time() {
                    cap.downgrade(&frontier);
                }
            }
            if let Some(cap) = inbox_capability.as_mut() {
                if !engine.core.updates.is_empty() {
                    let updates = &mut engine.core.updates;
                    inbox_output
                        .activate()
                        .session(&*cap)
                        .give_container(updates);
                }
                if frontier == Time::MAX {
                    inbox_capability = None;
                } else if frontier > *cap.time() {
                    cap.downgrade(&frontier);
                }
            }
            if let Some(cap) = facts_capability.as_mut() {
                // Each fact's time is at least the capability's: nothing
                // before the last frontier is decided now.
                if !engine.core.facts.is_empty() {
                    let facts = &mut engine.core.facts;
                    let len = facts.len();
                    facts_output.activate().session(&*cap).give_container(facts);
                    facts.reserve(len);
                }
                if frontier == Time::MAX {
                    facts_capability = None;
                } else if frontier > *cap.time() {
                    cap.downgrade(&frontier);
                }
            }
            if let Some(cap) = snapshot_capability.as_mut() {
                let least = requested.first().map_or(frontier, |r| r.time.min(frontier));
                if least == Time::MAX {
                    snapshot_capability = None;
                } else if least > *cap.time() {
                    cap.downgrade(&least);
                }
            }
        }
    });
    Decided {
        decisions,
        snapshots,
        inbox,
        facts: facts.as_collection(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataflow::profile::{ProfileUpsert, arrange_profiles};
    use crate::dataflow::route::Fire;
    use crate::dataflow::seen::fingerprint;
    use timely::dataflow::operators::Input;

    /// Two users sharing a routing hash: each one's event keys, erasure and
    /// decisions stay its own, even when only one of them has decision
    /// state to visit and the other's events travel as bare fingerprints.
    #[test]
    fn users_sharing_a_hash_keep_their_own_event_keys() {
        let spec = Arc::new(
            Spec::parse(
                "t.toml",
                r#"
[[rule]]
name = "alert"
on = "login.new_device"
purpose = "transactional"
channels = ["email"]
"#,
            )
            .unwrap(),
        );
        let user = |name: &str| UserKey {
            hash: 7,
            user: name.into(),
        };
        let (a, b) = (user("u-a"), user("u-b"));
        let plain = |u: &UserKey, key: &str, time: Time| {
            Arrival::Plain(PlainArrival::new(
                u.hash,
                fingerprint(&u.user, key.as_bytes()),
                time,
                time as u64,
            ))
        };
        let fires = |u: &UserKey, key: &str, time: Time| {
            Arrival::Event(Box::new(EventArrival {
                user: u.clone(),
                key: key.into(),
                fingerprint: fingerprint(&u.user, key.as_bytes()),
                time,
                seq: time as u64,
                hit: RuleHit {
                    fires: vec![Fire {
                        rule: 0,
                        decision: time,
                        dedup_key: None,
                    }],
                    cancels: 0,
                    data: None,
                    activity: None,
                },
            }))
        };
        let arrivals = vec![
            fires(&a, "s/a", 5),
            plain(&b, "s/1", 10),
            Arrival::Erasure {
                user: b.clone(),
                time: 20,
            },
            plain(&b, "s/1", 30), // forgotten by b's erasure: not a duplicate
            plain(&a, "s/1", 30), // a's own key, never seen before
            plain(&b, "s/1", 40), // duplicate of b's at 30
            fires(&b, "s/9", 50),
            fires(&b, "s/9", 60), // duplicate: no second dispatch
        ];
        let (stats, decisions) = timely::execute_directly(move |worker| {
            let stats = Rc::new(RefCell::new(DecideStats::default()));
            let decisions = Rc::new(RefCell::new(Vec::new()));
            let (mut events, profile, probe) = worker.dataflow::<Time, _, _>(|scope| {
                let (events, arrivals) = scope.new_input::<Vec<Arrival>>();
                let (profile, upserts) = scope.new_input::<Vec<ProfileUpsert>>();
                let out = decide(arrivals, arrange_profiles(upserts), spec, stats.clone());
                (
                    events,
                    profile,
                    crate::sink::collect(out.decisions, decisions.clone()),
                )
            });
            for arrival in arrivals {
                events.send(arrival);
            }
            events.close();
            profile.close();
            while !probe.done() {
                worker.step();
            }
            (stats.take(), decisions.take())
        });
        assert_eq!((stats.events, stats.duplicates), (7, 2));
        let decisions: Vec<Decision> = decisions.into_iter().flatten().collect();
        let dispatched: Vec<(CompactString, CompactString, Time)> = decisions
            .iter()
            .map(|d| match d {
                Decision::Dispatch(d) => (d.user.clone(), d.event_key.clone(), d.decision_time),
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        assert_eq!(
            dispatched,
            [
                ("u-a".into(), "s/a".into(), 5),
                ("u-b".into(), "s/9".into(), 50)
            ]
        );
    }

    /// Every worker holds a copy of each waiting receipt; split over any
    /// new worker count, each new worker gets exactly one copy, addressed
    /// to it.
    #[test]
    fn waiting_receipts_are_split_one_copy_per_new_worker() {
        use crate::record::ReceiptStatus;
        let copies = |workers: u32| -> Vec<DecideState> {
            (0..workers)
                .map(|to| DecideState {
                    waiting: vec![Arrival::Receipt(ReceiptArrival::new(
                        to,
                        ReceiptStatus::Failed,
                        42,
                        100,
                        7,
                    ))],
                    ..Default::default()
                })
                .collect()
        };
        for (old, new) in [(1u32, 3usize), (3, 1), (2, 2)] {
            let mut parts: Vec<DecideState> = (0..new).map(|_| DecideState::default()).collect();
            for state in copies(old) {
                state.split_into(&mut parts);
            }
            for (i, part) in parts.iter().enumerate() {
                let [Arrival::Receipt(r)] = part.waiting.as_slice() else {
                    panic!("{old} → {new}: worker {i} holds {:?}", part.waiting);
                };
                assert_eq!((r.to as usize, r.id(), r.seq), (i, 42, 7));
            }
        }
    }

    /// After a spec change, candidates, dedup history and waiting matches
    /// follow their rules to their new places; a removed rule's dedup
    /// history is dropped, and its pending candidate refuses the change.
    #[test]
    fn rules_are_renumbered_and_a_removed_rule_with_candidates_is_refused() {
        let candidate = |rule| Candidate {
            decision: 10,
            event_time: 5,
            event_key: "s/1".into(),
            rule,
            dedup_key: None,
            vars: None,
        };
        let user = UserKey::new("u-1");
        let state = |pending: Vec<Candidate>| UserState {
            pending,
            dedup: vec![
                (0, "k".into(), 3, "s/0".into()),
                (1, "k".into(), 4, "s/0".into()),
            ],
            ..Default::default()
        };
        let waiting = Arrival::Event(Box::new(EventArrival {
            user: user.clone(),
            key: "s/2".into(),
            fingerprint: 1,
            time: 20,
            seq: 0,
            hit: RuleHit {
                fires: vec![Fire {
                    rule: 0,
                    decision: 20,
                    dedup_key: None,
                }],
                cancels: 0b11,
                data: None,
                activity: None,
            },
        }));
        let names = ["a".to_string(), "b".to_string()];
        // a moves to 1, b is removed.
        let map = [Some(1), None];
        let mut ok = DecideState {
            users: vec![(user.clone(), state(vec![candidate(0)]))],
            waiting: vec![waiting.clone()],
            ..Default::default()
        };
        ok.renumber_rules(&map, &names).unwrap();
        let (_, s) = &ok.users[0];
        assert_eq!(s.pending[0].rule, 1);
        assert_eq!(s.dedup.len(), 1, "b's dedup history is dropped");
        assert_eq!(s.dedup[0].0, 1);
        let Arrival::Event(e) = &ok.waiting[0] else {
            unreachable!()
        };
        assert_eq!(e.hit.fires[0].rule, 1);
        assert_eq!(e.hit.cancels, 0b10, "cancels a (now 1); b is gone");

        let mut refused = DecideState {
            users: vec![(user, state(vec![candidate(1)]))],
            ..Default::default()
        };
        let e = refused.renumber_rules(&map, &names).unwrap_err();
        assert!(e.contains("rule \"b\" is no longer in the spec"), "{e}");
    }
}
