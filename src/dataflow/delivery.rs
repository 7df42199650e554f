//! Delivery: what became of each attempt, for the delivery counts of
//! DESIGN.md §5 (`aggregates.rs`), kept by `decide` in the user's state
//! when the spec has `[analytics]`.
//!
//! - input (through `decide`): the user's attempts (dispatches, first and
//!   further); the receipts for them (every worker has a copy of each
//!   receipt, `route`; ids find the user through the worker's [`Flight`]
//!   of tracked attempts); erasures.
//! - state: per user, the attempts whose receipt window is open
//!   ([`Tracked`]), and the sum of the facts the user contributed, which
//!   an erasure retracts.
//! - output: fact updates — an attempt made (at its time); delivered, at
//!   its first `delivered`, `opened` or `clicked` receipt in the window
//!   (a failure counted before is retracted then); failed, at its first
//!   `failed` or `bounced` receipt in the window when no success came
//!   before; a notification made (at attempt 1) and succeeded (at the
//!   earliest success of any of its attempts).
//! - key: the user. The dispatch id finds the user.
//! - time: an attempt made at t looks at the receipts for its id with time
//!   in [t, t + fallback_after], or [t, t + [`RECEIPT_WINDOW`]] for a rule
//!   without fallback (the contract names no window there), in order of
//!   (time, stream position). A notification's attempts are forgotten once
//!   every one of their windows closed before the frontier: no receipt can
//!   change them then.
//!
//! [`Flight`]: super::fallback::Flight

use serde::{Deserialize, Serialize};

use super::aggregates::{Fact, Outcome, Update};
use super::fallback::StepReceipts;
use crate::record::ReceiptStatus;
use crate::spec::Channel;
use crate::time::{MS_PER_DAY, Time};

/// How long receipts count for an attempt of a rule without
/// `fallback_after`.
pub const RECEIPT_WINDOW: Time = 7 * MS_PER_DAY;

/// An attempt whose receipt window is open.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tracked {
    /// The attempt's dispatch id, and its candidate's (attempt 1's).
    pub id: u128,
    notification: u128,
    rule: u16,
    channel: Channel,
    made: Time,
    deadline: Time,
    /// The time of its first success receipt, if any.
    success: Option<Time>,
    failure: bool,
}

/// A user's attempts and contributions to the delivery counts.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    pub tracked: Vec<Tracked>,
    /// The facts the user contributed, summed: what an erasure retracts.
    counted: Vec<(Counted, i32)>,
    /// The end of the soonest window still open, if any.
    soonest: Option<Time>,
}

/// A delivery fact, as a user's state keeps it (a [`Fact`] is larger:
/// it has room for the other kinds).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
enum Counted {
    Delivery(u16, Channel, Outcome),
    Notification(bool),
}

impl Counted {
    fn of(fact: &Fact) -> Counted {
        match *fact {
            Fact::Delivery {
                rule,
                channel,
                outcome,
            } => Counted::Delivery(rule, channel, outcome),
            Fact::Notification { succeeded } => Counted::Notification(succeeded),
            _ => unreachable!("only delivery facts are counted here"),
        }
    }

    fn fact(self) -> Fact {
        match self {
            Counted::Delivery(rule, channel, outcome) => Fact::Delivery {
                rule,
                channel,
                outcome,
            },
            Counted::Notification(succeeded) => Fact::Notification { succeeded },
        }
    }
}

/// One attempt just made.
pub struct Made {
    pub id: u128,
    pub number: u32,
    /// Attempt 1's dispatch id.
    pub notification: u128,
    pub rule: u16,
    pub channel: Channel,
    pub time: Time,
    /// `fallback_after`, if the rule has it.
    pub window: Option<Time>,
}

impl Delivery {
    pub const fn new() -> Delivery {
        Delivery {
            tracked: Vec::new(),
            counted: Vec::new(),
            soonest: None,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.tracked.is_empty() && self.counted.is_empty()
    }

    fn add(&mut self, fact: Fact, time: Time, diff: i32, out: &mut Vec<Update>) {
        let counted = Counted::of(&fact);
        out.push((fact, time, diff as isize));
        match self.counted.iter().position(|(c, _)| *c == counted) {
            Some(i) => {
                self.counted[i].1 += diff;
                if self.counted[i].1 == 0 {
                    self.counted.swap_remove(i);
                }
            }
            None => self.counted.push((counted, diff)),
        }
    }

    /// Counts an attempt, and the receipts already here for it.
    pub fn attempt(&mut self, made: Made, receipts: &StepReceipts, out: &mut Vec<Update>) {
        let outcome = |outcome| Fact::Delivery {
            rule: made.rule,
            channel: made.channel,
            outcome,
        };
        self.add(outcome(Outcome::Dispatched), made.time, 1, out);
        if made.number == 1 {
            let fact = Fact::Notification { succeeded: false };
            self.add(fact, made.time, 1, out);
        }
        let window = made.window.unwrap_or(RECEIPT_WINDOW);
        let deadline = made.time.saturating_add(window);
        self.soonest = Some(self.soonest.map_or(deadline, |s| s.min(deadline)));
        self.tracked.push(Tracked {
            id: made.id,
            notification: made.notification,
            rule: made.rule,
            channel: made.channel,
            made: made.time,
            deadline,
            success: None,
            failure: false,
        });
        self.claim_for(&[self.tracked.len() - 1], receipts, out);
    }

    /// Notes this step's receipts for the user's attempts.
    pub fn claim(&mut self, receipts: &StepReceipts, out: &mut Vec<Update>) {
        let all: Vec<usize> = (0..self.tracked.len()).collect();
        self.claim_for(&all, receipts, out);
    }

    /// Notes the receipts for the attempts at `which`, all in order of
    /// (time, stream position).
    fn claim_for(&mut self, which: &[usize], receipts: &StepReceipts, out: &mut Vec<Update>) {
        let mut found = Vec::new();
        for &i in which {
            let t = &self.tracked[i];
            for &(time, seq, status) in receipts.get(&t.id).into_iter().flatten() {
                if time >= t.made && time <= t.deadline {
                    found.push((time, seq, i, status));
                }
            }
        }
        found.sort_unstable_by_key(|&(time, seq, i, _)| (time, seq, i));
        for (time, _, i, status) in found {
            self.note(i, time, status, out);
        }
    }

    fn note(&mut self, i: usize, time: Time, status: ReceiptStatus, out: &mut Vec<Update>) {
        let success = match status {
            ReceiptStatus::Delivered | ReceiptStatus::Opened | ReceiptStatus::Clicked => true,
            ReceiptStatus::Failed | ReceiptStatus::Bounced => false,
            ReceiptStatus::Complained => return,
        };
        let t = &self.tracked[i];
        if t.success.is_some() {
            return;
        }
        let (rule, channel, notification, failed) = (t.rule, t.channel, t.notification, t.failure);
        let fact = |outcome| Fact::Delivery {
            rule,
            channel,
            outcome,
        };
        if success {
            if failed {
                self.add(fact(Outcome::Failed), time, -1, out);
            }
            self.add(fact(Outcome::Delivered), time, 1, out);
            // The notification succeeded at its earliest success.
            let before = self
                .tracked
                .iter()
                .filter(|o| o.notification == notification)
                .filter_map(|o| o.success)
                .min();
            self.tracked[i].success = Some(time);
            let succeeded = Fact::Notification { succeeded: true };
            match before {
                Some(b) if b <= time => {}
                Some(b) => {
                    self.add(succeeded.clone(), b, -1, out);
                    self.add(succeeded, time, 1, out);
                }
                None => self.add(succeeded, time, 1, out),
            }
        } else if !failed {
            self.tracked[i].failure = true;
            self.add(fact(Outcome::Failed), time, 1, out);
        }
    }

    /// Forgets the attempts of the notifications whose every window closed
    /// before `now`, with their ids in `gone`.
    pub fn expire(&mut self, now: Time, gone: &mut Vec<u128>) {
        if self.soonest.is_none_or(|s| s >= now) {
            return;
        }
        let open: Vec<u128> = self
            .tracked
            .iter()
            .filter(|t| t.deadline >= now)
            .map(|t| t.notification)
            .collect();
        self.tracked.retain(|t| {
            let keep = open.contains(&t.notification);
            if !keep {
                gone.push(t.id);
            }
            keep
        });
        self.soonest = self
            .tracked
            .iter()
            .map(|t| t.deadline)
            .filter(|d| *d >= now)
            .min();
    }

    /// States at `time` everything the user contributed again (a restart
    /// from a checkpoint: the views of the aggregates start empty).
    pub fn restate(&self, time: Time, out: &mut Vec<Update>) {
        for (counted, n) in &self.counted {
            out.push((counted.fact(), time, *n as isize));
        }
    }

    /// Retracts at `time` everything the user contributed; the ids of the
    /// attempts it was tracking go in `gone`.
    pub fn retract(&mut self, time: Time, out: &mut Vec<Update>, gone: &mut Vec<u128>) {
        for (counted, n) in self.counted.drain(..) {
            out.push((counted.fact(), time, -(n as isize)));
        }
        gone.extend(self.tracked.drain(..).map(|t| t.id));
        self.soonest = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn made(id: u128, number: u32, time: Time, window: Option<Time>) -> Made {
        Made {
            id,
            number,
            notification: 1,
            rule: 0,
            channel: Channel::Push,
            time,
            window,
        }
    }

    fn step(receipts: &[(u128, Time, ReceiptStatus)]) -> StepReceipts {
        let mut step = StepReceipts::default();
        for (seq, &(id, t, status)) in receipts.iter().enumerate() {
            step.entry(id).or_default().push((t, seq as u64, status));
        }
        step
    }

    /// The summed facts: what the aggregates hold.
    fn sum(out: &[Update], before: Time) -> BTreeMap<Fact, isize> {
        let mut sum = BTreeMap::new();
        for (f, t, d) in out {
            if *t < before {
                *sum.entry(f.clone()).or_default() += d;
            }
        }
        sum.retain(|_, d| *d != 0);
        sum
    }

    fn delivery(outcome: Outcome) -> Fact {
        Fact::Delivery {
            rule: 0,
            channel: Channel::Push,
            outcome,
        }
    }

    #[test]
    fn a_failure_then_a_success_in_the_window_counts_as_delivered() {
        use ReceiptStatus::*;
        let (mut d, mut out) = (Delivery::new(), Vec::new());
        d.attempt(made(7, 1, 100, Some(50)), &step(&[]), &mut out);
        d.claim(&step(&[(7, 99, Failed), (7, 110, Bounced)]), &mut out);
        assert_eq!(sum(&out, 120)[&delivery(Outcome::Failed)], 1);
        d.claim(
            &step(&[(7, 130, Complained), (7, 140, Opened), (7, 151, Clicked)]),
            &mut out,
        );
        let as_of = |t| sum(&out, t);
        assert_eq!(as_of(140).get(&delivery(Outcome::Delivered)), None);
        let after = as_of(141);
        assert_eq!(after[&delivery(Outcome::Delivered)], 1);
        assert_eq!(after.get(&delivery(Outcome::Failed)), None);
        assert_eq!(after[&Fact::Notification { succeeded: true }], 1);
        assert_eq!(after[&delivery(Outcome::Dispatched)], 1);
    }

    #[test]
    fn a_notification_succeeds_at_its_earliest_success() {
        use ReceiptStatus::*;
        let (mut d, mut out) = (Delivery::new(), Vec::new());
        d.attempt(made(7, 1, 100, Some(50)), &step(&[]), &mut out);
        // Attempt 2 at 120 (after a failure), delivered at 125; attempt 1
        // delivered later, at 140: the notification succeeded at 125.
        d.attempt(
            made(8, 2, 120, Some(50)),
            &step(&[(8, 125, Delivered)]),
            &mut out,
        );
        d.claim(&step(&[(7, 140, Delivered)]), &mut out);
        let succeeded = Fact::Notification { succeeded: true };
        assert_eq!(sum(&out, 126)[&succeeded], 1);
        assert_eq!(sum(&out, 200)[&succeeded], 1);
        // The other way round.
        let (mut d, mut out) = (Delivery::new(), Vec::new());
        d.attempt(made(7, 1, 100, Some(50)), &step(&[]), &mut out);
        d.claim(&step(&[(7, 140, Delivered)]), &mut out);
        d.attempt(
            made(8, 2, 120, Some(50)),
            &step(&[(8, 125, Delivered)]),
            &mut out,
        );
        assert_eq!(sum(&out, 126)[&succeeded], 1);
        assert_eq!(sum(&out, 200)[&succeeded], 1);
        assert_eq!(sum(&out, 200)[&delivery(Outcome::Delivered)], 2);
    }

    #[test]
    fn without_fallback_the_window_is_seven_days_and_attempts_expire_together() {
        use ReceiptStatus::*;
        let (mut d, mut out) = (Delivery::new(), Vec::new());
        d.attempt(made(7, 1, 0, None), &step(&[]), &mut out);
        d.claim(&step(&[(7, RECEIPT_WINDOW + 1, Delivered)]), &mut out);
        assert_eq!(
            sum(&out, Time::MAX).get(&delivery(Outcome::Delivered)),
            None
        );
        d.claim(&step(&[(7, RECEIPT_WINDOW, Failed)]), &mut out);
        assert_eq!(sum(&out, Time::MAX)[&delivery(Outcome::Failed)], 1);
        let mut gone = Vec::new();
        d.expire(RECEIPT_WINDOW, &mut gone);
        assert!(gone.is_empty());
        d.expire(RECEIPT_WINDOW + 1, &mut gone);
        assert_eq!(gone, [7]);
        // The counts stay until an erasure retracts them.
        let mut gone = Vec::new();
        d.retract(RECEIPT_WINDOW + 5, &mut out, &mut gone);
        assert!(sum(&out, Time::MAX).is_empty());
        assert!(d.is_empty());
    }
}
