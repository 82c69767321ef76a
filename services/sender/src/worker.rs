//! A connection worker: one SMTP connection to the relay, one transaction at a time. For each
//! job it checks the lease and the domain's limits, renders, builds and signs the message,
//! delivers it and turns the reply into an outcome for the writer.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use chrono::Utc;
use governor::DefaultDirectRateLimiter;
use sendwerk_core::{DeliveryOutcome, EmailAddress, SmtpReply, is_slow_down, retry_hint};
use sendwerk_mail::dkim::DkimSigners;
use sendwerk_mail::smtp::{self, SmtpSession};
use sendwerk_store::{ClaimedRecipient, OutcomeKind, RecipientOutcome};
use tokio::sync::{Mutex, mpsc, watch};
use tracing::{debug, warn};

use crate::SenderConfig;
use crate::claimer::{Job, released};
use crate::direct::DirectDelivery;
use crate::leases::Ownership;
use crate::limits::{Admission, DomainLimits};
use crate::parking::ParkingLot;
use crate::prepared::PreparedMailing;
use crate::runner::SenderStats;

pub(crate) struct ConnectionWorker {
    pub config: Arc<SenderConfig>,
    pub signers: Arc<DkimSigners>,
    pub stats: Arc<SenderStats>,
    pub process_limiter: Option<Arc<DefaultDirectRateLimiter>>,
    pub limits: Arc<DomainLimits>,
    pub ownership_rx: watch::Receiver<Arc<Ownership>>,
    pub outcome_tx: mpsc::Sender<RecipientOutcome>,
    /// This worker's connection to the relay (relay mode).
    pub session: Option<SmtpSession>,
    /// Direct-to-MX delivery with its shared per-host pool, instead of the relay.
    pub direct: Option<Arc<DirectDelivery>>,
    /// Rows whose domain makes them wait a short while, held here rather than handed back.
    pub parking: Arc<ParkingLot>,
}

pub(crate) fn to_chrono(at: Instant) -> chrono::DateTime<Utc> {
    Utc::now() + chrono::Duration::from_std(at.saturating_duration_since(Instant::now())).unwrap_or_default()
}

impl ConnectionWorker {
    pub async fn run(mut self, job_rx: Arc<Mutex<mpsc::Receiver<Job>>>, mut stop_rx: watch::Receiver<bool>) {
        loop {
            let job = {
                let mut receiver = job_rx.lock().await;
                tokio::select! {
                    biased;
                    _ = stop_rx.changed() => None,
                    job = receiver.recv() => job,
                }
            };
            let Some(job) = job else { break };
            // A parked row has no outcome yet: it comes back through the pipeline.
            let Some(outcome) = self.process(job).await else { continue };
            if self.outcome_tx.send(outcome).await.is_err() || *stop_rx.borrow() {
                break;
            }
        }
        if let Some(session) = self.session.take() {
            session.quit().await;
        }
    }

    fn release(&self, recipient: &ClaimedRecipient, at: Option<chrono::DateTime<Utc>>) -> RecipientOutcome {
        self.stats.released.fetch_add(1, Ordering::Relaxed);
        released(recipient, at)
    }

    /// The outcome of one job, or `None` when it was parked until its domain may be sent to.
    async fn process(&mut self, job: Job) -> Option<RecipientOutcome> {
        let base = RecipientOutcome::new(&job.recipient, OutcomeKind::Skipped);
        if job.recipient.suppressed {
            return Some(RecipientOutcome {
                kind: OutcomeKind::Suppressed,
                reason: Some("suppressed: on the suppression list at send time".into()),
                ..base
            });
        }
        let Some(mailing) = job.mailing.clone() else {
            self.stats.skipped.fetch_add(1, Ordering::Relaxed);
            return Some(RecipientOutcome {
                reason: Some("skipped: the mailing cannot be prepared for sending".into()),
                ..base
            });
        };
        match self.limits.admit(&job.recipient.domain).await {
            Admission::Now => Some(self.send(&job.recipient, &mailing, base).await),
            Admission::Paused => Some(self.release(&job.recipient, None)),
            Admission::Later(at) => match self.parking.park(job, at) {
                None => {
                    self.stats.parked.fetch_add(1, Ordering::Relaxed);
                    None
                }
                Some(job) => Some(self.release(&job.recipient, Some(to_chrono(at)))),
            },
        }
    }

    /// Sends one admitted recipient of `mailing` (or skips it) and turns the result into its
    /// outcome.
    async fn send(
        &mut self,
        recipient: &ClaimedRecipient,
        mailing: &PreparedMailing,
        base: RecipientOutcome,
    ) -> RecipientOutcome {
        let to = match EmailAddress::parse(&recipient.email) {
            Ok(to) => to,
            Err(error) => {
                self.stats.skipped.fetch_add(1, Ordering::Relaxed);
                return RecipientOutcome { reason: Some(format!("skipped: invalid address: {error}")), ..base };
            }
        };
        if let Some(limiter) = &self.process_limiter {
            limiter.until_ready().await;
        }
        // A sender that lost its lease (stalled, partitioned) must not send what it claimed.
        if !self.ownership_rx.borrow().may_send(recipient.shard, recipient.lease_token) {
            return self.release(recipient, None);
        }
        let (return_path, reference) = match &self.config.verp {
            Some(verp) => {
                let token = verp.token(recipient.mailing_id, recipient.id);
                (verp.return_path_of(&token), token)
            }
            None => (mailing.return_path.clone(), format!("{}.{}", mailing.id, recipient.id.get())),
        };
        let built =
            mailing.build(&to, &recipient.external_id, &recipient.variables, &reference, false).and_then(|built| {
                let signed = self.signers.sign(&mailing.from_domain, &built.bytes)?;
                Ok(crate::BuiltMessage { bytes: signed.unwrap_or(built.bytes), message_id: built.message_id })
            });
        let built = match built {
            Ok(built) => built,
            Err(error) => {
                self.stats.skipped.fetch_add(1, Ordering::Relaxed);
                return RecipientOutcome { reason: Some(format!("skipped: {error}")), ..base };
            }
        };
        let outcome = self.deliver(&return_path, &to, &built.bytes).await;
        self.outcome_for(base, recipient, outcome, built.message_id)
    }

    async fn deliver(&mut self, return_path: &str, to: &EmailAddress, message: &[u8]) -> DeliveryOutcome {
        if let Some(direct) = &self.direct {
            return direct.deliver(to.domain(), return_path, to.as_str(), message).await;
        }
        // Relay: this worker's own connection, reconnected when it cannot carry more, and once
        // more when a reused connection turns out to have been closed by the relay meanwhile.
        for _ in 0..2 {
            let reused = self.session.as_ref().is_some_and(SmtpSession::is_reusable);
            if !reused {
                if let Some(old) = self.session.take() {
                    old.quit().await;
                }
                match smtp::connect(&self.config.relay).await {
                    Ok(session) => self.session = Some(session),
                    Err(error) => {
                        warn!(error = %error, "cannot connect to the relay");
                        return DeliveryOutcome::TemporaryFailure { reply: None, detail: error.to_string() };
                    }
                }
            }
            let Some(session) = self.session.as_mut() else { break };
            let outcome = session.deliver(return_path, to.as_str(), message).await;
            if !(reused && session.died_before_transaction()) {
                return outcome;
            }
            debug!("the relay had closed the reused connection; reconnecting");
        }
        DeliveryOutcome::TemporaryFailure { reply: None, detail: "no smtp session".into() }
    }

    /// Deferred with backoff (the server's own hint wins, a domain back-off holds the row until
    /// it ends), or expired when the retry window is over.
    fn retry_outcome(
        &self,
        base: RecipientOutcome,
        recipient: &ClaimedRecipient,
        server_hint: Option<std::time::Duration>,
        detail: String,
        backoff_until: Option<chrono::DateTime<Utc>>,
    ) -> RecipientOutcome {
        let attempts = u32::try_from(recipient.attempts).unwrap_or(u32::MAX);
        match self.config.retry.next_delay(attempts, recipient.since_first_attempt, rand::random::<f64>()) {
            Some(delay) => {
                self.stats.deferred.fetch_add(1, Ordering::Relaxed);
                let delay = server_hint.unwrap_or(delay);
                let mut next = Utc::now() + chrono::Duration::from_std(delay).unwrap_or_default();
                if let Some(until) = backoff_until {
                    next = next.max(until);
                }
                RecipientOutcome {
                    kind: OutcomeKind::Deferred,
                    next_attempt_at: Some(next),
                    reason: Some(format!("temporary failure: {detail}")),
                    ..base
                }
            }
            None => {
                self.stats.failed.fetch_add(1, Ordering::Relaxed);
                RecipientOutcome {
                    kind: OutcomeKind::Expired,
                    reason: Some(format!("retry window ended; last error: {detail}")),
                    ..base
                }
            }
        }
    }

    fn outcome_for(
        &self,
        base: RecipientOutcome,
        recipient: &ClaimedRecipient,
        outcome: DeliveryOutcome,
        message_id: String,
    ) -> RecipientOutcome {
        let with_reply = |base: RecipientOutcome, reply: &SmtpReply| RecipientOutcome {
            code: Some(i32::from(reply.code)),
            enhanced: reply.enhanced.map(|status| status.to_string()),
            reply: Some(reply.text.clone()),
            ..base
        };
        match outcome {
            DeliveryOutcome::Delivered(reply) => {
                self.stats.sent.fetch_add(1, Ordering::Relaxed);
                self.limits.delivered(&recipient.domain);
                RecipientOutcome { kind: OutcomeKind::Sent, message_id: Some(message_id), ..with_reply(base, &reply) }
            }
            DeliveryOutcome::PermanentFailure(reply) => {
                self.stats.failed.fetch_add(1, Ordering::Relaxed);
                // The same classifier as for bounce reports, so a 550 at RCPT and a DSN a day
                // later land in one model; a hard failure suppresses the address.
                let status = reply.enhanced.map(|status| status.to_string());
                let (reason, hard) = sendwerk_dsn::classify(Some(reply.code), status.as_deref(), &reply.text);
                debug!(recipient_id = %recipient.id.get(), code = reply.code, reason = reason.as_str(), "smtp rejected permanently");
                RecipientOutcome {
                    kind: OutcomeKind::Failed,
                    reason: Some(reason.as_str().to_owned()),
                    suppress: hard,
                    ..with_reply(base, &reply)
                }
            }
            DeliveryOutcome::Unknown { detail } => {
                let base = RecipientOutcome { reply: Some(detail.clone()), ..base };
                let retried = self.retry_outcome(base, recipient, None, detail, None);
                match retried.kind {
                    OutcomeKind::Deferred => RecipientOutcome { kind: OutcomeKind::DeferredOutcomeUnknown, ..retried },
                    _ => retried,
                }
            }
            DeliveryOutcome::TemporaryFailure { reply, detail } => {
                let backoff_until = reply
                    .as_ref()
                    .filter(|reply| is_slow_down(reply))
                    .map(|_| to_chrono(self.limits.slow_down(&recipient.domain)));
                let base = match &reply {
                    Some(reply) => with_reply(base, reply),
                    None => RecipientOutcome { reply: Some(detail.clone()), ..base },
                };
                let server_hint = reply.as_ref().and_then(|reply| retry_hint(&reply.text));
                self.retry_outcome(base, recipient, server_hint, detail, backoff_until)
            }
        }
    }
}
