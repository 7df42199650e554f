//! Inbox: the in-app inbox (DESIGN.md §9) — every `in_app` dispatch, kept
//! per user for `inbox_ttl`, read by the app over HTTP.
//!
//! - state: per user, in `decide`'s user state (so that it is keyed,
//!   checkpointed, rescaled and erased with the rest of the user): the
//!   [`InboxItem`]s, oldest first, and the `opened` receipts waiting for
//!   their instant.
//! - input (through `decide`): `in_app` dispatches, placed at their
//!   decision time; `opened` receipts for an item (each worker gets a copy
//!   of every receipt, `route`), which mark it read at their time if it
//!   was placed by then; erasures, which empty it.
//! - output: [`InboxUpdate`]s — the user's whole inbox after each change,
//!   at the instant of the change — to the [`InboxView`] of every process,
//!   a map of all users' inboxes that the HTTP server reads
//!   (`GET /v1/users/{user}/inbox`). Each process holds the whole view, so
//!   any process answers for any user.
//! - time: an item placed at s is in the inbox from instant s on and
//!   leaves it at instant s + ttl (when `decide` forgets it). The
//!   view applies an update once its frontier has passed the update's
//!   time, and answers as of that frontier: what every instant before it
//!   made of the inbox.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use compact_str::CompactString;
use serde::{Deserialize, Serialize};
use timely::dataflow::Stream;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::core::Map;
use timely::dataflow::operators::generic::Operator;

use crate::spec::Spec;
use crate::time::Time;

/// One in-app notification in a user's inbox.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InboxItem {
    /// The dispatch id's 128 bits.
    pub id: u128,
    pub rule: u16,
    /// When it was placed: the dispatch's decision time.
    pub time: Time,
    pub vars: Option<Box<str>>,
    pub read: bool,
}

/// A user's inbox in `decide`'s state.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Inbox {
    /// Oldest first.
    pub items: Vec<InboxItem>,
    /// `opened` receipts for items, as (time, dispatch id), applied at
    /// their instant.
    pub reads: Vec<(Time, u128)>,
}

impl Inbox {
    pub fn is_empty(&self) -> bool {
        self.items.is_empty() && self.reads.is_empty()
    }

    /// When something next happens: a read to apply, or an item to leave.
    pub fn next_due(&self, ttl: Time) -> Option<Time> {
        let leaves = self.items.iter().map(|i| i.time.saturating_add(ttl));
        leaves.chain(self.reads.iter().map(|r| r.0)).min()
    }

    /// Applies what is due at `t`: reads of items placed by then, and items
    /// whose time is up. Returns the ids of the items that left, and
    /// whether anything changed.
    pub fn advance(&mut self, t: Time, ttl: Time, left: &mut Vec<u128>) -> bool {
        let mut changed = false;
        let items = &mut self.items;
        self.reads.retain(|&(at, id)| {
            if at != t {
                return true;
            }
            for item in items.iter_mut().filter(|i| i.id == id && i.time <= t) {
                changed |= !item.read;
                item.read = true;
            }
            false
        });
        self.items.retain(|i| {
            let stays = i.time.saturating_add(ttl) > t;
            if !stays {
                left.push(i.id);
            }
            changed |= !stays;
            stays
        });
        changed
    }

    /// Notes the `opened` receipts of `times` for item `id`, those not
    /// before it was placed at `placed`.
    pub fn note_reads(&mut self, id: u128, placed: Time, times: impl Iterator<Item = Time>) {
        self.reads
            .extend(times.filter(|&t| t >= placed).map(|t| (t, id)));
    }
}

/// A user's whole inbox after a change at `time`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InboxUpdate {
    pub user: CompactString,
    pub time: Time,
    pub items: Vec<InboxItem>,
}

/// What every process serves: all users' inboxes as of a frontier.
#[derive(Default)]
pub struct ViewState {
    /// The frontier: the view holds what every instant before it made.
    pub as_of: Time,
    pub users: HashMap<CompactString, Vec<InboxItem>, foldhash::fast::FixedState>,
}

/// A process's inbox view; clones share it.
#[derive(Clone)]
pub struct InboxView {
    state: Arc<RwLock<ViewState>>,
    spec: Arc<Spec>,
    ttl: Time,
}

/// One item as the API writes it.
#[derive(Serialize)]
struct ItemJson<'a> {
    dispatch_id: String,
    rule: &'a str,
    template: &'a str,
    vars: Option<&'a serde_json::value::RawValue>,
    time: String,
    read: bool,
}

impl InboxView {
    pub fn new(spec: Arc<Spec>, ttl: Time) -> InboxView {
        InboxView {
            state: Arc::new(RwLock::new(ViewState::default())),
            spec,
            ttl,
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, ViewState> {
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    /// The answer to `GET /v1/users/{user}/inbox`: newest first, unread
    /// only with `unread`, at most `limit` items.
    pub fn answer(&self, user: &str, unread: bool, limit: usize) -> serde_json::Value {
        let state = self.read();
        let as_of = state.as_of;
        let mut items: Vec<&InboxItem> = state
            .users
            .get(user)
            .into_iter()
            .flatten()
            .filter(|i| i.time < as_of && i.time.saturating_add(self.ttl) >= as_of)
            .filter(|i| !unread || !i.read)
            .collect();
        items.sort_by_key(|i| std::cmp::Reverse((i.time, i.id)));
        let items: Vec<ItemJson<'_>> = items
            .into_iter()
            .take(limit)
            .map(|i| {
                let rule = &self.spec.rules[i.rule as usize];
                ItemJson {
                    dispatch_id: uuid::Uuid::from_u128(i.id).hyphenated().to_string(),
                    rule: &rule.name,
                    template: &rule.template,
                    vars: i.vars.as_deref().and_then(|v| serde_json::from_str(v).ok()),
                    time: crate::time::format_rfc3339(i.time),
                    read: i.read,
                }
            })
            .collect();
        serde_json::json!({
            "as_of": crate::time::format_rfc3339(as_of),
            "items": items,
        })
    }

    /// Whether `user`'s inbox holds the dispatch `id`, as of the view.
    pub fn holds(&self, user: &str, id: u128) -> bool {
        let state = self.read();
        let as_of = state.as_of;
        state.users.get(user).is_some_and(|items| {
            items
                .iter()
                .any(|i| i.id == id && i.time < as_of && i.time.saturating_add(self.ttl) >= as_of)
        })
    }
}

/// Keeps the inbox view of every process: each update goes to the worker
/// of each process in `leaders` (one per process), which applies it to
/// its process's `view` once its frontier has passed the update's time.
/// Workers without a view (not leaders) receive nothing.
pub fn view<'s>(
    updates: Stream<'s, Time, Vec<InboxUpdate>>,
    leaders: Vec<u32>,
    view: Option<InboxView>,
) {
    let copies = updates.flat_map(move |u| {
        let leaders = leaders.clone();
        leaders.into_iter().map(move |to| (to, u.clone()))
    });
    let by_leader = Exchange::new(|(to, _): &(u32, InboxUpdate)| *to as u64);
    let mut stash: Vec<InboxUpdate> = Vec::new();
    copies.sink(by_leader, "InboxView", move |(input, frontier)| {
        {
            input.for_each(|_cap, data| stash.extend(data.drain(..).map(|(_, u)| u)));
            let now = frontier.frontier().first().copied().unwrap_or(Time::MAX);
            let Some(view) = view.as_ref() else {
                stash.clear();
                return;
            };
            // In time order; at one time, as they came (one user's updates
            // come from one worker, in order).
            stash.sort_by_key(|u| u.time);
            let due = stash.partition_point(|u| u.time < now);
            let mut state = view.state.write().unwrap_or_else(|e| e.into_inner());
            for u in stash.drain(..due) {
                if u.items.is_empty() {
                    state.users.remove(&u.user);
                } else {
                    state.users.insert(u.user, u.items);
                }
            }
            if now > state.as_of {
                state.as_of = now;
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(id: u128, time: Time) -> InboxItem {
        InboxItem {
            id,
            rule: 0,
            time,
            vars: None,
            read: false,
        }
    }

    #[test]
    fn reads_apply_at_their_instant_and_items_leave_after_the_ttl() {
        let mut inbox = Inbox {
            items: vec![item(1, 100), item(2, 200)],
            reads: Vec::new(),
        };
        // A read before the item was placed is not noted.
        inbox.note_reads(2, 200, [150, 250].into_iter());
        assert_eq!(inbox.reads, [(250, 2)]);
        assert_eq!(inbox.next_due(1000), Some(250));
        let mut left = Vec::new();
        assert!(!inbox.advance(240, 1000, &mut left));
        assert!(inbox.advance(250, 1000, &mut left));
        assert!(inbox.items[1].read && !inbox.items[0].read);
        assert_eq!(inbox.next_due(1000), Some(1100));
        assert!(!inbox.advance(1099, 1000, &mut left));
        assert!(inbox.advance(1100, 1000, &mut left));
        assert_eq!(left, [1]);
        assert_eq!(
            inbox.items,
            [InboxItem {
                read: true,
                ..item(2, 200)
            }]
        );
    }
}
