use std::time::Duration;

/// When to try a temporarily failed recipient again, and when to give up.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Delay before the second attempt; each later delay doubles it.
    pub initial_delay: Duration,
    /// No single delay is longer than this.
    pub max_delay: Duration,
    /// After this long since the first attempt the recipient ends `expired`.
    pub retry_window: Duration,
    /// Each delay is spread by up to this fraction either way, so retries of one burst do not
    /// arrive together.
    pub jitter_fraction: f64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            initial_delay: Duration::from_secs(60),
            max_delay: Duration::from_secs(4 * 3600),
            retry_window: Duration::from_secs(3 * 24 * 3600),
            jitter_fraction: 0.2,
        }
    }
}

impl RetryPolicy {
    /// The delay before the next attempt after `attempts` failed ones (1 after the first
    /// failure), or `None` when the recipient has been failing for longer than the retry window
    /// (`since_first_attempt`). `jitter_unit` is a random number in `[0, 1)` supplied by the
    /// caller, so this stays pure.
    pub fn next_delay(&self, attempts: u32, since_first_attempt: Duration, jitter_unit: f64) -> Option<Duration> {
        if since_first_attempt >= self.retry_window {
            return None;
        }
        let doublings = attempts.saturating_sub(1).min(30);
        let base = self.initial_delay.saturating_mul(1u32 << doublings).min(self.max_delay);
        let spread = 1.0 + self.jitter_fraction * (2.0 * jitter_unit.clamp(0.0, 1.0) - 1.0);
        let delay = base.mul_f64(spread.max(0.0));
        let remaining = self.retry_window - since_first_attempt;
        Some(delay.min(remaining))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_up_to_the_cap() {
        let policy = RetryPolicy { jitter_fraction: 0.0, ..RetryPolicy::default() };
        let delays: Vec<u64> = (1..=10)
            .map(|attempts| policy.next_delay(attempts, Duration::ZERO, 0.5).map(|d| d.as_secs()))
            .map(|delay| delay.unwrap_or_default())
            .collect();
        assert_eq!(delays, [60, 120, 240, 480, 960, 1920, 3840, 7680, 14400, 14400]);
    }

    #[test]
    fn jitter_stays_within_its_fraction() {
        let policy = RetryPolicy::default();
        let low = policy.next_delay(1, Duration::ZERO, 0.0).unwrap_or_default();
        let high = policy.next_delay(1, Duration::ZERO, 0.999).unwrap_or_default();
        assert!(low >= Duration::from_secs(48) && high <= Duration::from_secs(72));
    }

    #[test]
    fn recipients_expire_after_the_retry_window() {
        let policy = RetryPolicy::default();
        assert_eq!(policy.next_delay(3, policy.retry_window, 0.5), None);
        let near_end = policy.retry_window - Duration::from_secs(10);
        assert_eq!(policy.next_delay(30, near_end, 0.5), Some(Duration::from_secs(10)));
    }
}

/// A server's own "try again in N minutes" from a reply text, if it gives one: `try again in 5
/// minutes`, `retry in 30s`, `please try again after 2 hours`. Bounded to one day.
pub fn retry_hint(text: &str) -> Option<Duration> {
    let lower = text.to_ascii_lowercase();
    for anchor in ["again in ", "retry in ", "again after ", "retry after ", "later in ", "wait "] {
        let mut search_from = 0;
        while let Some(position) = lower[search_from..].find(anchor) {
            let start = search_from + position + anchor.len();
            if let Some(delay) = number_with_unit(&lower[start..]) {
                return Some(delay.min(Duration::from_secs(24 * 3600)));
            }
            search_from = start;
        }
    }
    None
}

fn number_with_unit(text: &str) -> Option<Duration> {
    let digits: String = text.chars().take_while(char::is_ascii_digit).collect();
    let value: u64 = digits.parse().ok()?;
    let rest = text[digits.len()..].trim_start();
    let unit: String = rest.chars().take_while(char::is_ascii_alphabetic).collect();
    let seconds = match unit.as_str() {
        "s" | "sec" | "secs" | "second" | "seconds" => value,
        "m" | "min" | "mins" | "minute" | "minutes" => value * 60,
        "h" | "hr" | "hrs" | "hour" | "hours" => value * 3600,
        _ => return None,
    };
    (seconds > 0).then(|| Duration::from_secs(seconds))
}

#[cfg(test)]
mod hint_tests {
    use super::*;

    #[test]
    fn servers_try_again_hints_are_understood() {
        let cases = [
            ("4.7.0 Too many connections, try again in 5 minutes", Some(300)),
            ("Greylisted, please retry in 30s", Some(30)),
            ("try again after 2 hours", Some(7200)),
            ("Temporary failure, please try again later", None),
            ("retry in 90 secs (rate limit)", Some(90)),
            ("try again in 400 hours", Some(86_400)),
            ("mailbox full", None),
        ];
        for (text, expected) in cases {
            assert_eq!(retry_hint(text).map(|d| d.as_secs()), expected, "{text}");
        }
    }
}
