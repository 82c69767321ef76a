//! Per-destination-domain limits inside one sender: a governor rate limiter per domain (a
//! default plus run-time overrides from `domain_settings`), domain pauses, and automatic back-off
//! when a domain says "slow down" (421, or a 4xx about rates). Sharding by domain makes this
//! sender the only one sending to a domain, so its limits hold cluster-wide.

use std::collections::{HashMap, HashSet};
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use sendwerk_store::DomainSetting;
use tracing::{info, warn};

/// Whether to send a message to a domain now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Now,
    /// The domain is paused: hand the row back; claims skip the domain until it is resumed.
    Paused,
    /// Hand the row back to be tried at this time (rate limit or back-off), without counting an
    /// attempt.
    Later(Instant),
}

struct DomainLimiter {
    per_minute: u32,
    limiter: DefaultDirectRateLimiter,
    /// The next free slot for rows handed back because of the rate, so that they return spread
    /// out at the domain's rate instead of all at once.
    deferral_cursor: Instant,
}

#[derive(Default)]
struct State {
    overrides: HashMap<String, u32>,
    paused: HashSet<String>,
    limiters: HashMap<String, DomainLimiter>,
    backoff_until: HashMap<String, Instant>,
    backoff_level: HashMap<String, u32>,
}

pub struct DomainLimits {
    default_per_minute: Option<u32>,
    backoff: Duration,
    max_backoff: Duration,
    clock: DefaultClock,
    state: Mutex<State>,
}

/// Rows further than this ahead of their domain's rate are not claimed at all for now.
const CLAIM_HORIZON: Duration = Duration::from_secs(5);
/// Waits up to this long for a slot instead of handing the row back.
const MAX_INLINE_WAIT: Duration = Duration::from_millis(500);

fn quota(per_minute: u32) -> Quota {
    let per_minute = per_minute.max(1);
    let period = Duration::from_secs(60) / per_minute;
    // Evenly spaced, with at most one second's worth of burst.
    let burst = NonZeroU32::new((per_minute / 60).max(1)).unwrap_or(NonZeroU32::MIN);
    Quota::with_period(period).unwrap_or_else(|| Quota::per_minute(NonZeroU32::MIN)).allow_burst(burst)
}

impl DomainLimits {
    pub fn new(default_per_minute: Option<u32>, backoff: Duration) -> Arc<Self> {
        Arc::new(Self {
            default_per_minute,
            backoff,
            max_backoff: backoff * 16,
            clock: DefaultClock::default(),
            state: Mutex::new(State::default()),
        })
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Takes the current run-time settings (overrides and pauses).
    pub fn apply_settings(&self, settings: &[DomainSetting]) {
        let mut state = self.state();
        let overrides: HashMap<String, u32> = settings
            .iter()
            .filter_map(|s| s.max_per_minute.and_then(|n| u32::try_from(n).ok()).map(|n| (s.domain.clone(), n)))
            .collect();
        let paused: HashSet<String> = settings.iter().filter(|s| s.paused).map(|s| s.domain.clone()).collect();
        if overrides != state.overrides {
            // Limiters whose rate changed are rebuilt on their next use.
            let default = self.default_per_minute;
            state
                .limiters
                .retain(|domain, limiter| overrides.get(domain).copied().or(default) == Some(limiter.per_minute));
            info!(overrides = overrides.len(), "domain rate limits updated");
            state.overrides = overrides;
        }
        if paused != state.paused {
            info!(paused = ?paused, "paused domains updated");
            state.paused = paused;
        }
    }

    /// Domains not to claim now: paused, backing off, or with a rate backlog beyond the horizon.
    pub fn skip_domains(&self) -> Vec<String> {
        let now = Instant::now();
        let mut state = self.state();
        state.backoff_until.retain(|_, until| *until > now);
        let mut skip: Vec<String> = state.paused.iter().cloned().collect();
        skip.extend(state.backoff_until.keys().cloned());
        skip.extend(
            state
                .limiters
                .iter()
                .filter(|(_, limiter)| limiter.deferral_cursor > now + CLAIM_HORIZON)
                .map(|(domain, _)| domain.clone()),
        );
        skip.sort_unstable();
        skip.dedup();
        skip
    }

    /// Decides for one message to `domain`; may wait briefly for a rate slot.
    pub async fn admit(&self, domain: &str) -> Admission {
        loop {
            let wait = {
                let now = Instant::now();
                let mut state = self.state();
                if state.paused.contains(domain) {
                    return Admission::Paused;
                }
                if let Some(until) = state.backoff_until.get(domain).copied().filter(|until| *until > now) {
                    return Admission::Later(until);
                }
                let Some(per_minute) = state.overrides.get(domain).copied().or(self.default_per_minute) else {
                    return Admission::Now;
                };
                let limiter = state.limiters.entry(domain.to_owned()).or_insert_with(|| DomainLimiter {
                    per_minute,
                    limiter: RateLimiter::direct(quota(per_minute)),
                    deferral_cursor: now,
                });
                match limiter.limiter.check() {
                    Ok(()) => return Admission::Now,
                    Err(not_until) => {
                        let wait = not_until.wait_time_from(self.clock.now());
                        if wait > MAX_INLINE_WAIT {
                            let period = Duration::from_secs(60) / per_minute.max(1);
                            let slot = limiter.deferral_cursor.max(now + wait);
                            limiter.deferral_cursor = slot + period;
                            return Admission::Later(slot);
                        }
                        wait
                    }
                }
            };
            tokio::time::sleep(wait).await;
        }
    }

    /// The domain asked us to slow down: stop sending to it for a while, longer each time it
    /// asks again soon after; it recovers by itself when the back-off ends.
    pub fn slow_down(&self, domain: &str) -> Instant {
        let now = Instant::now();
        let mut state = self.state();
        let level = state.backoff_level.get(domain).copied().unwrap_or(0);
        let already = state.backoff_until.get(domain).is_some_and(|until| *until > now);
        if already {
            return state.backoff_until.get(domain).copied().unwrap_or(now);
        }
        let delay = (self.backoff * 2u32.saturating_pow(level)).min(self.max_backoff);
        let until = now + delay;
        state.backoff_until.insert(domain.to_owned(), until);
        state.backoff_level.insert(domain.to_owned(), (level + 1).min(8));
        warn!(domain, backoff_secs = delay.as_secs(), "destination asked to slow down; backing off");
        until
    }

    /// A message to the domain went through: the back-off level relaxes.
    pub fn delivered(&self, domain: &str) {
        let mut state = self.state();
        if let Some(level) = state.backoff_level.get_mut(domain) {
            *level = level.saturating_sub(1);
            if *level == 0 {
                state.backoff_level.remove(domain);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setting(domain: &str, max_per_minute: Option<i32>, paused: bool) -> DomainSetting {
        DomainSetting { domain: domain.into(), max_per_minute, paused }
    }

    #[tokio::test]
    async fn a_domain_without_a_limit_is_admitted_at_once() {
        let limits = DomainLimits::new(None, Duration::from_secs(60));
        for _ in 0..1000 {
            assert_eq!(limits.admit("free.example").await, Admission::Now);
        }
    }

    #[tokio::test]
    async fn rows_beyond_the_rate_are_handed_back_spread_at_the_rate() {
        let limits = DomainLimits::new(None, Duration::from_secs(60));
        limits.apply_settings(&[setting("slow.example", Some(6), false)]);
        assert_eq!(limits.admit("slow.example").await, Admission::Now);
        let mut slots = Vec::new();
        for _ in 0..3 {
            match limits.admit("slow.example").await {
                Admission::Later(at) => slots.push(at),
                other => panic!("expected a later slot, got {other:?}"),
            }
        }
        assert!(slots.windows(2).all(|pair| pair[1] >= pair[0] + Duration::from_secs(10) - Duration::from_millis(1)));
        assert!(
            limits.skip_domains().contains(&"slow.example".to_owned()),
            "a backlog beyond the horizon is not claimed"
        );
    }

    #[tokio::test]
    async fn paused_domains_are_skipped_and_resume_when_unpaused() {
        let limits = DomainLimits::new(None, Duration::from_secs(60));
        limits.apply_settings(&[setting("held.example", None, true)]);
        assert_eq!(limits.admit("held.example").await, Admission::Paused);
        assert_eq!(limits.skip_domains(), vec!["held.example".to_owned()]);
        limits.apply_settings(&[]);
        assert_eq!(limits.admit("held.example").await, Admission::Now);
    }

    #[tokio::test]
    async fn slow_down_backs_off_longer_each_time_then_recovers() {
        let limits = DomainLimits::new(None, Duration::from_millis(50));
        let first = limits.slow_down("busy.example");
        assert!(matches!(limits.admit("busy.example").await, Admission::Later(_)));
        assert!(limits.skip_domains().contains(&"busy.example".to_owned()));
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert_eq!(limits.admit("busy.example").await, Admission::Now, "recovers after the back-off");
        let second = limits.slow_down("busy.example");
        assert!(second.duration_since(first) >= Duration::from_millis(50), "the second back-off is longer");
    }
}
