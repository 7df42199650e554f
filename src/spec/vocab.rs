//! The closed vocabularies shared by specs and records: channels, purposes,
//! priorities.

use serde::{Deserialize, Serialize};

/// Delivery channels. Any other name in a record or spec is bad input.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Channel {
    Push = 0,
    Email = 1,
    Sms = 2,
    InApp = 3,
    Webhook = 4,
}

impl Channel {
    pub const ALL: [Channel; 5] = [
        Channel::Push,
        Channel::Email,
        Channel::Sms,
        Channel::InApp,
        Channel::Webhook,
    ];
    pub const NAMES: &'static str = "push, email, sms, in_app, webhook";
    pub fn parse(s: &str) -> Option<Channel> {
        Some(match s {
            "push" => Channel::Push,
            "email" => Channel::Email,
            "sms" => Channel::Sms,
            "in_app" => Channel::InApp,
            "webhook" => Channel::Webhook,
            _ => return None,
        })
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Push => "push",
            Channel::Email => "email",
            Channel::Sms => "sms",
            Channel::InApp => "in_app",
            Channel::Webhook => "webhook",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Purpose {
    Marketing = 0,
    Transactional = 1,
}

impl Purpose {
    pub const ALL: [Purpose; 2] = [Purpose::Marketing, Purpose::Transactional];
    pub fn parse(s: &str) -> Option<Purpose> {
        match s {
            "marketing" => Some(Purpose::Marketing),
            "transactional" => Some(Purpose::Transactional),
            _ => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Purpose::Marketing => "marketing",
            Purpose::Transactional => "transactional",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Priority {
    Normal,
    High,
    Critical,
}

impl Priority {
    pub const ALL: [Priority; 3] = [Priority::Normal, Priority::High, Priority::Critical];
    pub fn parse(s: &str) -> Option<Priority> {
        match s {
            "normal" => Some(Priority::Normal),
            "high" => Some(Priority::High),
            "critical" => Some(Priority::Critical),
            _ => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Normal => "normal",
            Priority::High => "high",
            Priority::Critical => "critical",
        }
    }
}
