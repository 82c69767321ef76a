use std::time::Duration;

use sendwerk_core::RetryPolicy;
use sendwerk_mail::dkim::DkimKeyConfig;
use sendwerk_mail::mx::MxResolverConfig;
use sendwerk_mail::smtp::RelayConfig;

/// Everything the sender role needs besides the store.
#[derive(Debug, Clone)]
pub struct SenderConfig {
    /// The smarthost to deliver to; in direct-to-MX mode, its hello name, timeouts and
    /// messages-per-connection apply to every MX connection.
    pub relay: RelayConfig,
    /// When set, deliver directly to each recipient domain's MX hosts instead of the relay.
    pub mx: Option<MxResolverConfig>,
    /// Direct-to-MX: at most this many connections to one MX address at a time.
    pub max_connections_per_host: usize,
    /// Direct-to-MX: allow MX hosts in loopback/private/link-local address ranges (tests, or an
    /// internal mail network). Off by default so a recipient domain cannot point us inwards.
    pub allow_private_mx_addresses: bool,
    /// SMTP connections kept open to the relay, each carrying one transaction at a time.
    pub num_connections: usize,
    /// Recipients claimed per statement.
    pub claim_batch_size: i64,
    /// How long a shard lease lasts without renewal (renewed every third of it). A sender that
    /// dies or stalls loses its shards after this; another sender takes them over and retries
    /// what was in flight (recording a possible duplicate).
    pub lease: Duration,
    /// How often an idle sender looks for due work.
    pub poll_interval: Duration,
    /// Outcomes are written back when this many are waiting or `flush_interval` has passed.
    pub flush_batch_size: usize,
    pub flush_interval: Duration,
    pub retry: RetryPolicy,
    pub max_message_bytes: usize,
    /// Cap on messages per second for this process; `None` for no cap.
    pub max_messages_per_second: Option<u32>,
    /// How long in-flight SMTP transactions may take to finish on shutdown.
    pub shutdown_grace: Duration,
    pub dkim_keys: Vec<DkimKeyConfig>,
    /// Messages per minute to one destination domain unless `domain_settings` says otherwise;
    /// `None` for no default limit.
    pub default_domain_max_per_minute: Option<u32>,
    /// First back-off after a domain says "slow down"; doubles while it keeps saying so.
    pub domain_backoff: Duration,
    /// How often run-time domain settings (limits, pauses) are reloaded.
    pub settings_refresh: Duration,
    /// This sender's name in the `workers` table.
    pub hostname: String,
    /// VERP return paths (`b-<mailing>-<id>-<mac>@<bounce domain>`) and signed `X-Sendwerk-Ref` headers,
    /// so that bounces can be matched to recipients; `None` sends with the mailing's from address
    /// as the return path.
    pub verp: Option<sendwerk_core::Verp>,
}

impl Default for SenderConfig {
    fn default() -> Self {
        Self {
            relay: RelayConfig::default(),
            mx: None,
            max_connections_per_host: 4,
            allow_private_mx_addresses: false,
            num_connections: 8,
            claim_batch_size: 1024,
            lease: Duration::from_secs(15),
            poll_interval: Duration::from_millis(500),
            flush_batch_size: 1024,
            flush_interval: Duration::from_millis(20),
            retry: RetryPolicy::default(),
            max_message_bytes: 10 * 1024 * 1024,
            max_messages_per_second: None,
            shutdown_grace: Duration::from_secs(20),
            dkim_keys: Vec::new(),
            default_domain_max_per_minute: None,
            domain_backoff: Duration::from_secs(60),
            settings_refresh: Duration::from_secs(2),
            hostname: std::env::var("HOSTNAME").unwrap_or_default(),
            verp: None,
        }
    }
}
