use std::fmt;
use std::str::FromStr;

/// A state name read from storage or input that sendwerk does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {kind} state {value:?}")]
pub struct StateParseError {
    kind: &'static str,
    value: String,
}

/// The life of a mailing: `draft → scheduled → sending ⇄ paused → completed | cancelled`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MailingState {
    /// Being edited; recipients may be added; nothing is sent.
    Draft,
    /// Waiting for its `send_at`; becomes `Sending` on or after it.
    Scheduled,
    /// Senders claim its due recipients.
    Sending,
    /// No new SMTP transactions start until resumed.
    Paused,
    /// Final: every recipient reached a final state.
    Completed,
    /// Final: stopped by a user; recipients not yet sent ended `cancelled`.
    Cancelled,
}

impl MailingState {
    pub const ALL: [Self; 6] =
        [Self::Draft, Self::Scheduled, Self::Sending, Self::Paused, Self::Completed, Self::Cancelled];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Draft => "draft",
            Self::Scheduled => "scheduled",
            Self::Sending => "sending",
            Self::Paused => "paused",
            Self::Completed => "completed",
            Self::Cancelled => "cancelled",
        }
    }

    pub fn is_final(self) -> bool {
        matches!(self, Self::Completed | Self::Cancelled)
    }

    /// The states from which `Schedule` applies.
    pub fn can_schedule(self) -> bool {
        matches!(self, Self::Draft)
    }

    pub fn can_pause(self) -> bool {
        matches!(self, Self::Scheduled | Self::Sending)
    }

    pub fn can_resume(self) -> bool {
        matches!(self, Self::Paused)
    }

    pub fn can_cancel(self) -> bool {
        matches!(self, Self::Draft | Self::Scheduled | Self::Sending | Self::Paused)
    }
}

impl FromStr for MailingState {
    type Err = StateParseError;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|state| state.as_str() == value)
            .ok_or_else(|| StateParseError { kind: "mailing", value: value.to_owned() })
    }
}

impl fmt::Display for MailingState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The life of one recipient. `queued → sending → sent`, `sending → deferred → sending …`,
/// `→ failed | expired`, `sent → bounced | complained`, `→ suppressed | skipped | cancelled`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RecipientState {
    /// Waiting for its send time or for a sender.
    Queued,
    /// Claimed by a sender under a lease; an SMTP transaction may be under way.
    Sending,
    /// A temporary failure; retried at `next_attempt_at`.
    Deferred,
    /// Accepted by the receiving server.
    Sent,
    /// Rejected permanently by the receiving server.
    Failed,
    /// Still failing temporarily when the retry window closed.
    Expired,
    /// A non-delivery report arrived after it was sent.
    Bounced,
    /// The recipient complained through a feedback loop.
    Complained,
    /// On the suppression list when added or when claimed; never sent.
    Suppressed,
    /// Could not be sent at all (its merge variables do not render); never sent.
    Skipped,
    /// The mailing was cancelled before this recipient was sent.
    Cancelled,
}

impl RecipientState {
    pub const ALL: [Self; 11] = [
        Self::Queued,
        Self::Sending,
        Self::Deferred,
        Self::Sent,
        Self::Failed,
        Self::Expired,
        Self::Bounced,
        Self::Complained,
        Self::Suppressed,
        Self::Skipped,
        Self::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Sending => "sending",
            Self::Deferred => "deferred",
            Self::Sent => "sent",
            Self::Failed => "failed",
            Self::Expired => "expired",
            Self::Bounced => "bounced",
            Self::Complained => "complained",
            Self::Suppressed => "suppressed",
            Self::Skipped => "skipped",
            Self::Cancelled => "cancelled",
        }
    }

    /// Whether the recipient will never be sent again. `Sent` counts as final for the queue even
    /// though a later report may still move it to `Bounced` or `Complained`.
    pub fn is_final(self) -> bool {
        !matches!(self, Self::Queued | Self::Sending | Self::Deferred)
    }
}

impl FromStr for RecipientState {
    type Err = StateParseError;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|state| state.as_str() == value)
            .ok_or_else(|| StateParseError { kind: "recipient", value: value.to_owned() })
    }
}

impl fmt::Display for RecipientState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_round_trip_through_their_names() {
        for state in RecipientState::ALL {
            assert_eq!(state.as_str().parse::<RecipientState>(), Ok(state));
        }
        for state in MailingState::ALL {
            assert_eq!(state.as_str().parse::<MailingState>(), Ok(state));
        }
        assert!("nope".parse::<RecipientState>().is_err());
    }

    #[test]
    fn only_waiting_states_are_not_final() {
        let waiting: Vec<_> = RecipientState::ALL.into_iter().filter(|s| !s.is_final()).collect();
        assert_eq!(waiting, [RecipientState::Queued, RecipientState::Sending, RecipientState::Deferred]);
    }

    #[test]
    fn a_completed_mailing_cannot_be_resumed_or_paused() {
        assert!(!MailingState::Completed.can_resume());
        assert!(!MailingState::Completed.can_pause());
        assert!(!MailingState::Cancelled.can_cancel());
        assert!(MailingState::Scheduled.can_cancel());
    }
}
