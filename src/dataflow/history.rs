//! Upsert arrangements and reading them "as of" an exact time (used by
//! `profile`, for consent and preferences).
//!
//! [`arrange_upserts`] builds a Differential collection replaced by key
//! whose update times are the records' own exact times, arranged by a key
//! of the caller's choosing (`arranged`; `profile` arranges by the user's
//! hash, so that trace seeks compare integers). It is differential's
//! `arrange_core` with a batcher of its own, [`UpsertBatcher`]: the batcher
//! holds each upsert until the arrangement's input frontier has passed its
//! time, then turns it into the collection's updates (retract the key's
//! value in force, insert the new one), sorts them and builds the batch.
//! It remembers each key's current value in a hash map under a 128-bit
//! fingerprint of the key (one probe per upsert; 48-byte entries for
//! profile slots, where the key itself took 40 of 72), where differential's
//! `arrange_from_upsert` would seek the key in the trace's batches; on this
//! workload that seek and its priority queue cost more than the rest of the
//! pipeline. (A separate upsert operator in front of differential's merge
//! batcher cost twice as much: another hop, and a chunked merge sort of
//! updates that one sort produces here.)
//!
//! A [`TraceSnapshot`] holds the batches of a trace, taken once per
//! activation of `decide`; its [`Reader`] walks them with one cursor that
//! only moves forward (users are visited in key order). A [`History`] holds
//! one key's values — borrowed from the batches, never copied — with their
//! update times and diffs, so that the value in force at any `t` not before
//! the trace's compaction frontier can be read off.

use differential_dataflow::ExchangeData;
use differential_dataflow::batcher::merge::Sealer;
use differential_dataflow::batcher::{Batcher, Extract};
use differential_dataflow::operators::arrange::arrangement::arrange_core;
use differential_dataflow::operators::arrange::{Arranged, TraceAgent};
use differential_dataflow::trace::cursor::{Cursor, CursorList, cursor_list};
use differential_dataflow::trace::implementations::ValSpine;
use differential_dataflow::trace::implementations::ord_neu::VecOrdValBuilder;
use differential_dataflow::trace::{Builder, Navigable, TraceReader};
use timely::dataflow::Stream;
use timely::dataflow::channels::pact::ParallelizationContract;
use timely::progress::Antichain;
use timely::progress::frontier::AntichainRef;

use crate::time::Time;

/// An upsert: the key's new value (`None` deletes it) from time `t` on.
pub type Upsert<K, V> = (K, Option<V>, Time);

/// The upserts an upsert arrangement's batcher holds (their time not yet
/// complete), shared with the worker's other operators: a checkpoint
/// writes them with the trace, and a recovery puts them back.
pub type PendingUpserts<K, V> = std::rc::Rc<std::cell::RefCell<Vec<Upsert<K, V>>>>;
/// The trace of an upsert collection.
pub type UpsertTrace<K, V> = TraceAgent<ValSpine<K, V, Time, isize>>;
type UpsertBuilder<K, V> = VecOrdValBuilder<K, V, Time, isize>;
type UpsertBatch<K, V> = <UpsertBuilder<K, V> as Builder>::Output;

/// Arranges `upserts` replaced by key: at each time a key holds its latest
/// value (at equal times, the greatest; `None` deletes). Each `(key, value)`
/// is arranged as `arranged(key, value)`, which must keep the key's
/// identity (distinct keys, distinct arranged pairs). `identity(key)` is a
/// 128-bit fingerprint of the key (distinct keys must not collide in
/// practice): the batcher remembers current values under it, an integer
/// to hash and compare, instead of under a copy of the key.
///
/// `pact` routes each upsert to the worker that holds its key; `pending`
/// is the batcher's store of upserts not yet complete (it may hold
/// upserts already: a recovery's).
pub fn arrange_upserts<'s, K, V, AK, AV, P>(
    upserts: Stream<'s, Time, Vec<Upsert<K, V>>>,
    pact: P,
    pending: PendingUpserts<K, V>,
    name: &str,
    identity: impl Fn(&K) -> u128 + 'static,
    arranged: impl Fn(&K, V) -> (AK, AV) + 'static,
) -> Arranged<'s, UpsertTrace<AK, AV>>
where
    K: ExchangeData,
    V: ExchangeData,
    AK: ExchangeData,
    AV: ExchangeData,
    P: ParallelizationContract<Time, Vec<Upsert<K, V>>>,
{
    arrange_core::<_, _, _, ValSpine<AK, AV, Time, isize>>(upserts, pact, name, move |_, _| {
        UpsertBatcher {
            pending,
            current: Default::default(),
            updates: Vec::new(),
            lower: Antichain::new(),
            identity,
            arranged,
        }
    })
}

/// The batcher of an upsert arrangement: holds upserts until their time is
/// complete, then turns them into the collection's updates (retract the
/// key's value in force, insert the new one) and builds them into a batch.
struct UpsertBatcher<K, V, AK, AV, I, A> {
    /// Upserts at or after the last extracted upper.
    pending: PendingUpserts<K, V>,
    /// Each key's value in force, under its identity.
    current: hashbrown::HashMap<u128, V, foldhash::fast::FixedState>,
    /// Scratch: the updates of the batch being built.
    updates: Vec<((AK, AV), Time, isize)>,
    /// The least time in `pending`.
    lower: Antichain<Time>,
    identity: I,
    arranged: A,
}

impl<K, V, AK, AV, I, A> Batcher<Vec<Upsert<K, V>>> for UpsertBatcher<K, V, AK, AV, I, A>
where
    Self: Extract,
{
    fn insert(&mut self, container: &mut Vec<Upsert<K, V>>) {
        self.pending.borrow_mut().append(container);
    }
}

impl<K, V, AK, AV, I, A> Extract for UpsertBatcher<K, V, AK, AV, I, A>
where
    K: Ord,
    V: Clone + Ord,
    AK: Ord + Clone + 'static,
    AV: Ord + Clone + 'static,
    I: Fn(&K) -> u128,
    A: Fn(&K, V) -> (AK, AV),
{
    type Time = Time;
    type Output = UpsertBatch<AK, AV>;

    fn extract<'a>(
        &'a mut self,
        upper: AntichainRef<'_, Time>,
    ) -> (Option<Self::Output>, AntichainRef<'a, Time>) {
        let upper = upper.first().copied().unwrap_or(Time::MAX);
        // The upserts whose time is complete, moved to the front of
        // `pending` (in place: the first extraction holds the whole initial
        // load, and a copy of it was the largest allocation of the run).
        let mut pending = self.pending.borrow_mut();
        let pending = &mut *pending;
        let mut ready = 0;
        for i in 0..pending.len() {
            if pending[i].2 < upper {
                pending.swap(ready, i);
                ready += 1;
            }
        }
        self.lower.clear();
        if let Some(least) = pending[ready..].iter().map(|u| u.2).min() {
            self.lower.insert(least);
        }
        // By key and time; at equal times the greatest value first, and
        // only it is kept.
        pending[..ready].sort_unstable_by(|a, b| (&a.0, a.2, &b.1).cmp(&(&b.0, b.2, &a.1)));
        let updates = &mut self.updates;
        updates.clear();
        let mut last: Option<(K, Time)> = None;
        for (key, value, time) in pending.drain(..ready) {
            if last.as_ref().is_some_and(|(k, t)| *k == key && *t == time) {
                continue;
            }
            let id = (self.identity)(&key);
            let previous = match &value {
                Some(v) => self.current.insert(id, v.clone()),
                None => self.current.remove(&id),
            };
            if previous != value {
                if let Some(previous) = previous {
                    updates.push(((self.arranged)(&key, previous), time, -1));
                }
                if let Some(value) = value {
                    updates.push(((self.arranged)(&key, value), time, 1));
                }
            }
            last = Some((key, time));
        }
        // Distinct keys arrange as distinct pairs, and a key has at most
        // one update per value and time: sorted, the updates are already
        // consolidated.
        updates.sort_unstable_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
        let batch = if updates.is_empty() {
            None
        } else {
            let mut chain = vec![std::mem::take(updates)];
            let batch = <UpsertBuilder<AK, AV> as Sealer<_>>::seal(&mut chain);
            // The builder drained the vector: keep its allocation.
            *updates = chain.pop().unwrap_or_default();
            batch
        };
        (batch, self.lower.borrow())
    }
}

/// One key's updates `(value, time, diff)`, grouped by value.
#[derive(Clone, Debug)]
pub struct History<'a, V> {
    updates: Vec<(&'a V, Time, isize)>,
}

impl<V> Default for History<'_, V> {
    fn default() -> Self {
        History {
            updates: Vec::new(),
        }
    }
}

impl<'a, V> History<'a, V> {
    /// The runs of values that `same` groups (the values come in order),
    /// each with its first value and its range of updates (for [`part`]).
    ///
    /// [`part`]: History::part
    pub fn runs<'h>(
        &'h self,
        same: impl Fn(&V, &V) -> bool + 'h,
    ) -> impl Iterator<Item = (&'a V, std::ops::Range<usize>)> + 'h {
        self.updates
            .chunk_by(move |a, b| same(a.0, b.0))
            .scan(0, |at, run| {
                let start = *at;
                *at += run.len();
                Some((run[0].0, start..*at))
            })
    }

    /// The updates in `range`, as a history of their own.
    pub fn part(&self, range: std::ops::Range<usize>) -> Part<'_, 'a, V> {
        Part(&self.updates[range])
    }

    /// The value present at `t` (an upsert collection holds at most one).
    pub fn as_of(&self, t: Time) -> Option<&'a V> {
        Part(&self.updates).as_of(t)
    }
}

/// Part of a [`History`]: one key's updates, borrowed.
#[derive(Clone, Copy)]
pub struct Part<'h, 'a, V>(&'h [(&'a V, Time, isize)]);

impl<'a, V> Part<'_, 'a, V> {
    /// The value present at `t` (an upsert collection holds at most one).
    pub fn as_of(self, t: Time) -> Option<&'a V> {
        let mut rest = self.0;
        while let Some(&(value, _, _)) = rest.first() {
            let same = rest
                .iter()
                .take_while(|(v, _, _)| std::ptr::eq(*v, value))
                .count();
            let count: isize = rest[..same]
                .iter()
                .filter(|(_, u, _)| *u <= t)
                .map(|(_, _, d)| d)
                .sum();
            if count > 0 {
                return Some(value);
            }
            rest = &rest[same..];
        }
        None
    }
}

type Batch<K, V> = <ValSpine<K, V, Time, isize> as TraceReader>::Batch;
type BatchCur<K, V> = <Batch<K, V> as Navigable>::Cursor;

/// The batches of an upsert trace, and a cursor over them.
pub struct TraceSnapshot<K: Ord + Clone + 'static, V: Ord + Clone + 'static> {
    cursor: CursorList<BatchCur<K, V>>,
    storage: Vec<Batch<K, V>>,
}

impl<K: Ord + Clone + 'static, V: Ord + Clone + 'static> TraceSnapshot<K, V> {
    pub fn new(trace: &mut TraceAgent<ValSpine<K, V, Time, isize>>) -> Self {
        let batches = trace
            .batches_through(AntichainRef::new(&[]))
            .expect("the whole trace is readable");
        let (cursor, storage) = cursor_list(batches);
        TraceSnapshot { cursor, storage }
    }

    pub fn reader(&mut self) -> Reader<'_, K, V> {
        Reader {
            cursor: &mut self.cursor,
            storage: &self.storage,
        }
    }
}

/// A forward-only reader over a [`TraceSnapshot`]; histories it returns
/// borrow the snapshot's batches.
pub struct Reader<'a, K: Ord + Clone + 'static, V: Ord + Clone + 'static> {
    cursor: &'a mut CursorList<BatchCur<K, V>>,
    storage: &'a Vec<Batch<K, V>>,
}

impl<'a, K: Ord + Clone + 'static, V: Ord + Clone + 'static> Reader<'a, K, V> {
    /// The history of `key` (empty if it has none). Successive calls must
    /// ask for non-decreasing keys; the same key may be asked for again
    /// (the cursor stays on it).
    pub fn get(&mut self, key: &K) -> History<'a, V> {
        let storage: &'a Vec<Batch<K, V>> = self.storage;
        let cursor = &mut *self.cursor;
        cursor.seek_key(storage, key);
        let mut updates = Vec::new();
        if cursor.get_key(storage) == Some(key) {
            while let Some(val) = cursor.get_val(storage) {
                cursor.map_times(storage, |t, d| updates.push((val, *t, *d)));
                cursor.step_val(storage);
            }
            cursor.rewind_vals(storage);
        }
        History { updates }
    }

    /// Calls `f` with every `(key, value)` the trace holds (whose diffs
    /// sum to more than zero over all times), in key order; the reader is
    /// then at its end.
    pub fn for_each_present(&mut self, mut f: impl FnMut(&K, &V)) {
        let storage: &'a Vec<Batch<K, V>> = self.storage;
        let cursor = &mut *self.cursor;
        cursor.rewind_keys(storage);
        while let Some(key) = cursor.get_key(storage) {
            while let Some(val) = cursor.get_val(storage) {
                let mut count = 0;
                cursor.map_times(storage, |_, d| count += *d);
                if count > 0 {
                    f(key, val);
                }
                cursor.step_val(storage);
            }
            cursor.step_key(storage);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use timely::dataflow::operators::{Input, Probe};

    /// Upserts sent over two rounds, some out of time order: the arranged
    /// collection holds each key's latest value, the greatest at equal
    /// times, nothing after a delete, and no update for a repeated value.
    #[test]
    fn upserts_replace_by_key_at_exact_times() {
        timely::execute_directly(|worker| {
            let (mut input, probe, mut trace) = worker.dataflow::<Time, _, _>(|scope| {
                let (input, upserts) = scope.new_input::<Vec<Upsert<u64, u32>>>();
                let arranged = arrange_upserts(
                    upserts,
                    timely::dataflow::channels::pact::Exchange::new(|u: &Upsert<u64, u32>| u.0),
                    Default::default(),
                    "Test",
                    |k: &u64| *k as u128,
                    |k: &u64, v| (*k, v),
                );
                let (probe, _) = arranged.stream.probe();
                (input, probe, arranged.trace)
            });
            input.send((1, Some(10), 5));
            input.send((1, Some(20), 5));
            input.send((1, Some(20), 7));
            input.advance_to(8);
            while probe.less_than(&8) {
                worker.step();
            }
            input.send((2, Some(4), 12));
            input.send((2, Some(3), 8));
            input.send((1, None, 9));
            input.advance_to(100);
            while probe.less_than(&100) {
                worker.step();
            }
            let mut snapshot = TraceSnapshot::new(&mut trace);
            let mut reader = snapshot.reader();
            let one = reader.get(&1);
            assert_eq!(one.as_of(4), None);
            assert_eq!(one.as_of(5), Some(&20), "the greatest at equal times");
            assert_eq!(one.as_of(8), Some(&20));
            assert_eq!(one.as_of(9), None, "deleted");
            let mut updates: Vec<_> = one.updates.iter().map(|&(v, t, d)| (*v, t, d)).collect();
            updates.sort();
            assert_eq!(
                updates,
                [(20, 5, 1), (20, 9, -1)],
                "no update for 10 or the repeat"
            );
            let two = reader.get(&2);
            assert_eq!(two.as_of(8), Some(&3));
            assert_eq!(two.as_of(11), Some(&3));
            assert_eq!(two.as_of(12), Some(&4));
            assert_eq!(reader.get(&3).as_of(100), None);
        });
    }
}
