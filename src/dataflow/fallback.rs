//! Fallback: the further attempts of a dispatch whose channel failed
//! (docs/semantics.md "Channel fallback"), kept by `decide` beside its
//! candidates.
//!
//! - input: receipts. A receipt names a dispatch id, not a user, so every
//!   worker gets a copy of each (`route`); a worker applies those whose id
//!   is one of its attempts in flight ([`Flight`]), and drops the rest once
//!   their time is complete: a receipt can only count for an attempt made
//!   at or before its time, which is decided by then.
//! - state: per user, the [`Attempt`]s in flight — dispatches of rules with
//!   `fallback_after` whose window is open and whose outcome is not known.
//! - output (through `decide`): attempt k + 1 on the next channel with
//!   consent, or `undeliverable` when none is left.
//! - key: the user (attempts live in the user's state); the dispatch id
//!   finds the user.
//! - time: an attempt made at t with window d looks at the receipts for
//!   its id with time in [t, t + d], in order of (time, stream position).
//!   The first success (`delivered`, `opened`, `clicked`) ends it; a first
//!   failure (`failed`, `bounced`) at r makes attempt k + 1 at r; with
//!   neither by t + d, attempt k + 1 is made at t + d. `complained` counts
//!   as neither. Every receipt with time before the frontier has arrived
//!   when the frontier passes it, so an attempt's outcome is known as soon
//!   as the frontier passes the time it resolves at ([`Attempt::due`]).
//!   A receipt at the very instant of its dispatch counts: it is applied
//!   as soon as the dispatch exists.

use std::collections::HashMap;

use compact_str::CompactString;
use foldhash::fast::FixedState;
use serde::{Deserialize, Serialize};

use super::route::ReceiptArrival;
use crate::record::ReceiptStatus;
use crate::spec::Channel;
use crate::time::Time;

/// A dispatch waiting for its outcome.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    /// The dispatch id's 128 bits.
    pub id: u128,
    pub number: u32,
    /// When it was made (its decision time), and the end of its window.
    pub made: Time,
    pub deadline: Time,
    pub rule: u16,
    /// The candidate's channel order, fixed at attempt 1 (the rule's
    /// channels as the user's preferences restrict and reorder them), and
    /// the place in it of this attempt's channel.
    pub order: Vec<Channel>,
    pub at: u8,
    pub event_key: CompactString,
    pub event_time: Time,
    pub vars: Option<Box<str>>,
    /// Attempt 1's dispatch id (the notification's, for the delivery
    /// counts).
    pub first: u128,
    /// The first success or failure receipt in the window so far, as
    /// (time, stream position, success).
    decisive: Option<(Time, u64, bool)>,
}

/// A receipt noted for this step: (time, stream position, status).
pub type Noted = (Time, u64, ReceiptStatus);

/// The receipts whose time the frontier has passed in this step, by
/// dispatch id.
pub type StepReceipts = HashMap<u128, Vec<Noted>, FixedState>;

impl Attempt {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        id: u128,
        number: u32,
        made: Time,
        window: Time,
        rule: u16,
        order: Vec<Channel>,
        at: u8,
        event_key: CompactString,
        event_time: Time,
        vars: Option<Box<str>>,
    ) -> Attempt {
        Attempt {
            id,
            number,
            made,
            deadline: made.saturating_add(window),
            rule,
            order,
            at,
            event_key,
            event_time,
            vars,
            first: id,
            decisive: None,
        }
    }

    /// Notes the receipts of this step that are for this attempt and in its
    /// window.
    pub fn claim(&mut self, receipts: &StepReceipts) {
        for &(time, seq, status) in receipts.get(&self.id).into_iter().flatten() {
            if time < self.made || time > self.deadline {
                continue;
            }
            let success = match status {
                ReceiptStatus::Delivered | ReceiptStatus::Opened | ReceiptStatus::Clicked => true,
                ReceiptStatus::Failed | ReceiptStatus::Bounced => false,
                ReceiptStatus::Complained => continue,
            };
            if self.decisive.is_none_or(|(t, s, _)| (time, seq) < (t, s)) {
                self.decisive = Some((time, seq, success));
            }
        }
    }

    /// When the outcome is known: the first success or failure in the
    /// window, else the window's end.
    pub fn due(&self) -> Time {
        self.decisive.map_or(self.deadline, |(t, ..)| t)
    }

    /// Whether the attempt succeeded (meaningful once [`Attempt::due`] is
    /// complete).
    pub fn succeeded(&self) -> bool {
        self.decisive.is_some_and(|(.., success)| success)
    }

    /// The next channel after this attempt's in the candidate's order that
    /// `usable` accepts, with its place.
    pub fn next_channel(&self, usable: impl Fn(Channel) -> bool) -> Option<(u8, Channel)> {
        (self.at as usize + 1..self.order.len())
            .map(|i| (i as u8, self.order[i]))
            .find(|&(_, ch)| usable(ch))
    }
}

/// The attempts in flight on one worker: dispatch id → the user's routing
/// hash, with how many attempts share the id (an event decided again after
/// its dedup horizon makes the same ids).
#[derive(Default)]
pub struct Flight(HashMap<u128, (u64, u32), FixedState>);

impl Flight {
    pub fn add(&mut self, id: u128, user: u64) {
        self.0.entry(id).or_insert((user, 0)).1 += 1;
    }

    pub fn remove(&mut self, id: u128) {
        if let Some(entry) = self.0.get_mut(&id) {
            entry.1 -= 1;
            if entry.1 == 0 {
                self.0.remove(&id);
            }
        }
    }

    /// The user hash of the attempts with this id.
    pub fn user(&self, id: u128) -> Option<u64> {
        self.0.get(&id).map(|(user, _)| *user)
    }
}

/// Collects the receipts complete before a step's frontier, by id, each
/// id's in order of (time, position).
pub fn note_step(receipts: impl Iterator<Item = ReceiptArrival>, step: &mut StepReceipts) -> usize {
    step.clear();
    let mut n = 0;
    for r in receipts {
        step.entry(r.id())
            .or_default()
            .push((r.time, r.seq, r.status));
        n += 1;
    }
    for list in step.values_mut() {
        list.sort_unstable_by_key(|&(t, seq, _)| (t, seq));
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attempt() -> Attempt {
        let order = vec![Channel::Push, Channel::Sms, Channel::Email];
        Attempt::new(7, 1, 100, 50, 0, order, 0, "s/1".into(), 90, None)
    }

    fn step(receipts: &[(Time, u64, ReceiptStatus)]) -> StepReceipts {
        let arrivals = receipts
            .iter()
            .map(|&(t, seq, status)| ReceiptArrival::new(0, status, 7, t, seq));
        let mut step = StepReceipts::default();
        note_step(arrivals, &mut step);
        step
    }

    #[test]
    fn the_first_decisive_receipt_in_the_window_settles_the_attempt() {
        use ReceiptStatus::*;
        let mut a = attempt();
        a.claim(&step(&[]));
        assert_eq!((a.due(), a.succeeded()), (150, false), "timeout at t + d");
        // Before the window, complained, and after the window: nothing.
        let mut a = attempt();
        a.claim(&step(&[
            (99, 0, Failed),
            (120, 1, Complained),
            (151, 2, Failed),
        ]));
        assert_eq!((a.due(), a.succeeded()), (150, false));
        // Both edges count.
        let mut a = attempt();
        a.claim(&step(&[(100, 0, Bounced)]));
        assert_eq!((a.due(), a.succeeded()), (100, false));
        let mut a = attempt();
        a.claim(&step(&[(150, 0, Delivered)]));
        assert_eq!((a.due(), a.succeeded()), (150, true));
        // Success first, then failure; at one instant the stream order.
        let mut a = attempt();
        a.claim(&step(&[
            (130, 5, Failed),
            (120, 9, Opened),
            (120, 3, Clicked),
        ]));
        assert_eq!((a.due(), a.succeeded()), (120, true));
        let mut a = attempt();
        a.claim(&step(&[(120, 4, Delivered), (120, 3, Failed)]));
        assert_eq!((a.due(), a.succeeded()), (120, false));
        // Claimed over two steps: the earlier one wins.
        let mut a = attempt();
        a.claim(&step(&[(140, 0, Delivered)]));
        a.claim(&step(&[(110, 1, Failed)]));
        assert_eq!((a.due(), a.succeeded()), (110, false));
    }

    #[test]
    fn the_next_channel_comes_after_the_current_one() {
        let a = attempt();
        assert_eq!(a.next_channel(|_| true), Some((1, Channel::Sms)));
        assert_eq!(
            a.next_channel(|c| c != Channel::Sms),
            Some((2, Channel::Email))
        );
        let mut last = attempt();
        last.at = 2;
        assert_eq!(last.next_channel(|_| true), None);
    }

    #[test]
    fn shared_ids_stay_in_flight_until_the_last_attempt_ends() {
        let mut flight = Flight::default();
        flight.add(1, 10);
        flight.add(1, 10);
        flight.remove(1);
        assert_eq!(flight.user(1), Some(10));
        flight.remove(1);
        assert_eq!(flight.user(1), None);
    }
}
