//! Reading an upsert arrangement "as of" an exact time: the shared piece of
//! `consent` and `preferences`.
//!
//! A [`TraceSnapshot`] is a cursor over every batch of a trace, taken once per
//! activation of `decide`; [`History`] holds one key's values with their
//! update times and diffs, so that the value in force at any `t` not before
//! the trace's compaction frontier can be read off.

use differential_dataflow::operators::arrange::TraceAgent;
use differential_dataflow::trace::cursor::{Cursor, CursorList, cursor_list};
use differential_dataflow::trace::implementations::ValSpine;
use differential_dataflow::trace::{Navigable, TraceReader};
use timely::progress::frontier::AntichainRef;

use crate::time::Time;

/// The values of one key, each with its `(time, diff)` updates.
#[derive(Clone, Debug)]
pub struct History<V> {
    values: Vec<(V, Vec<(Time, isize)>)>,
}

impl<V> Default for History<V> {
    fn default() -> Self {
        History { values: Vec::new() }
    }
}

impl<V> History<V> {
    /// The value present at `t` (an upsert collection holds at most one).
    pub fn as_of(&self, t: Time) -> Option<&V> {
        self.values
            .iter()
            .find(|(_, updates)| {
                updates
                    .iter()
                    .filter(|(u, _)| *u <= t)
                    .map(|(_, d)| d)
                    .sum::<isize>()
                    > 0
            })
            .map(|(v, _)| v)
    }
}

type Batch<K, V> = <ValSpine<K, V, Time, isize> as TraceReader>::Batch;
type BatchCur<K, V> = <Batch<K, V> as Navigable>::Cursor;

/// A cursor over all batches of an upsert trace.
pub struct TraceSnapshot<K: Ord + Clone + 'static, V: Ord + Clone + 'static> {
    cursor: CursorList<BatchCur<K, V>>,
    storage: Vec<Batch<K, V>>,
}

impl<K: Ord + Clone + 'static, V: Ord + Clone + 'static> TraceSnapshot<K, V> {
    pub fn new(trace: &mut TraceAgent<ValSpine<K, V, Time, isize>>) -> Self {
        let batches = trace
            .batches_through(AntichainRef::new(&[]))
            .expect("the whole trace is readable");
        if std::env::var("NF_DEBUG").is_ok() {
            eprintln!("snapshot batches {}", batches.len());
        }
        let (cursor, storage) = cursor_list(batches);
        TraceSnapshot { cursor, storage }
    }

    /// Calls `each` for every key from `start` on while `within` holds, with
    /// the key's history.
    pub fn scan_from(
        &mut self,
        start: &K,
        within: impl Fn(&K) -> bool,
        mut each: impl FnMut(&K, History<V>),
    ) {
        let (cursor, storage) = (&mut self.cursor, &self.storage);
        cursor.rewind_keys(storage);
        cursor.seek_key(storage, start);
        while let Some(key) = cursor.get_key(storage) {
            if !within(key) {
                break;
            }
            let key = key.clone();
            let mut values = Vec::new();
            while let Some(val) = cursor.get_val(storage) {
                let val = val.clone();
                let mut updates = Vec::new();
                cursor.map_times(storage, |t, d| updates.push((*t, *d)));
                values.push((val, updates));
                cursor.step_val(storage);
            }
            each(&key, History { values });
            cursor.step_key(storage);
        }
    }
}
