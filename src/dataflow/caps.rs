//! Frequency caps (docs/semantics.md steps 5 and 6): sliding windows over a user's
//! first-attempt dispatches.
//!
//! A cap `max per` holds at `t` when fewer than `max` first-attempt
//! dispatches (of the purpose, or on the channel, any purpose) have decision
//! times in `(t − per, t]`. Dispatches are recorded in decision-time order, so
//! the history is a deque trimmed from the front.

use std::collections::VecDeque;

use crate::spec::{Cap, Channel, Purpose, Spec};
use crate::time::Time;

#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct CapHistory {
    /// (decision time, channel, purpose) of recent first attempts.
    sent: VecDeque<(Time, Channel, Purpose)>,
}

/// The index of the first of `caps` that is full at `t`, if any.
fn first_full(caps: &[Cap], t: Time, count_since: impl Fn(Time) -> usize) -> Option<u16> {
    caps.iter()
        .position(|c| count_since(t.saturating_sub(c.per)) >= c.max as usize)
        .map(|i| i as u16)
}

impl CapHistory {
    fn count_since(&self, from: Time, matches: impl Fn(Channel, Purpose) -> bool) -> usize {
        self.sent
            .iter()
            .rev()
            .take_while(|(t, _, _)| *t > from)
            .filter(|(_, c, p)| matches(*c, *p))
            .count()
    }

    pub fn channel_allows(&self, spec: &Spec, channel: Channel, t: Time) -> bool {
        self.full_channel_cap(spec, channel, t).is_none()
    }

    pub fn purpose_allows(&self, spec: &Spec, purpose: Purpose, t: Time) -> bool {
        self.full_purpose_cap(spec, purpose, t).is_none()
    }

    /// The first (in spec order) of the channel's caps that is full at `t`.
    pub fn full_channel_cap(&self, spec: &Spec, channel: Channel, t: Time) -> Option<u16> {
        first_full(&spec.channel_caps[channel as usize], t, |from| {
            self.count_since(from, |c, _| c == channel)
        })
    }

    /// The first (in spec order) of the purpose's caps that is full at `t`.
    pub fn full_purpose_cap(&self, spec: &Spec, purpose: Purpose, t: Time) -> Option<u16> {
        first_full(&spec.purpose_caps[purpose as usize], t, |from| {
            self.count_since(from, |_, p| p == purpose)
        })
    }

    /// Records a first-attempt dispatch at `t`, forgetting what no cap of
    /// `spec` can see any more.
    pub fn record(&mut self, t: Time, channel: Channel, purpose: Purpose, horizon: Time) {
        while self
            .sent
            .front()
            .is_some_and(|(s, _, _)| *s <= t.saturating_sub(horizon))
        {
            self.sent.pop_front();
        }
        if horizon > 0 {
            self.sent.push_back((t, channel, purpose));
        }
    }

    /// Drops entries no cap window reaching back `horizon` from `t` can see.
    pub fn expire(&mut self, t: Time, horizon: Time) {
        while self
            .sent
            .front()
            .is_some_and(|(s, _, _)| *s <= t.saturating_sub(horizon))
        {
            self.sent.pop_front();
        }
    }

    pub fn is_empty(&self) -> bool {
        self.sent.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sliding_window_is_half_open_at_the_past_end() {
        let spec = Spec::parse("t", "[[cap]]\npurpose = \"marketing\"\nmax = 2\nper = \"1h\"\n[[cap]]\nchannel = \"sms\"\nmax = 1\nper = \"1d\"\n").unwrap();
        let h = 3_600_000;
        let mut caps = CapHistory::default();
        caps.record(0, Channel::Push, Purpose::Marketing, spec.longest_window());
        caps.record(
            10,
            Channel::Sms,
            Purpose::Transactional,
            spec.longest_window(),
        );
        assert!(
            caps.purpose_allows(&spec, Purpose::Marketing, 20),
            "one marketing dispatch in the window"
        );
        caps.record(20, Channel::Push, Purpose::Marketing, spec.longest_window());
        assert!(!caps.purpose_allows(&spec, Purpose::Marketing, h - 1));
        assert!(
            caps.purpose_allows(&spec, Purpose::Marketing, h),
            "the dispatch at 0 = t − per is outside (t − per, t]"
        );
        assert!(
            caps.purpose_allows(&spec, Purpose::Marketing, h + 20),
            "both have left the window"
        );
        assert!(!caps.channel_allows(&spec, Channel::Sms, 24 * h + 9));
        assert!(caps.channel_allows(&spec, Channel::Sms, 24 * h + 10));
        assert!(
            caps.channel_allows(&spec, Channel::Push, 21),
            "no cap on push"
        );
        assert!(
            caps.purpose_allows(&spec, Purpose::Transactional, 21),
            "no cap on transactional"
        );
    }

    /// With several caps on one channel, the first full one in spec order
    /// is the one named.
    #[test]
    fn the_first_full_cap_is_named() {
        let spec = Spec::parse("t", "[[cap]]\nchannel = \"push\"\nmax = 5\nper = \"1d\"\n[[cap]]\nchannel = \"push\"\nmax = 1\nper = \"1h\"\n[[cap]]\nchannel = \"push\"\nmax = 2\nper = \"1d\"\n").unwrap();
        let h = 3_600_000;
        let mut caps = CapHistory::default();
        assert_eq!(caps.full_channel_cap(&spec, Channel::Push, 0), None);
        caps.record(0, Channel::Push, Purpose::Marketing, spec.longest_window());
        assert_eq!(caps.full_channel_cap(&spec, Channel::Push, 1), Some(1));
        caps.record(h, Channel::Push, Purpose::Marketing, spec.longest_window());
        assert_eq!(caps.full_channel_cap(&spec, Channel::Push, h + 1), Some(1));
        assert_eq!(caps.full_channel_cap(&spec, Channel::Push, 2 * h), Some(2));
        assert_eq!(
            caps.full_purpose_cap(&spec, Purpose::Marketing, 2 * h),
            None
        );
    }
}
