//! Configuration: defaults, then an optional TOML file, then environment variables
//! (`SENDWERK_` prefix, `__` between levels: `SENDWERK_RELAY__HOST`, `SENDWERK_SENDER__CONNECTIONS`),
//! then `DATABASE_URL`. Every key can therefore be set from `env:` in Kubernetes.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use figment::Figment;
use figment::providers::{Env, Format, Toml};
use sendwerk_control::ControlConfig;
use sendwerk_core::RetryPolicy;
use sendwerk_mail::dkim::{DkimAlgorithm, DkimKeyConfig};
use sendwerk_mail::mx::MxResolverConfig;
use sendwerk_mail::smtp::RelayConfig;
use sendwerk_sender::SenderConfig;
use serde::Deserialize;

#[derive(Clone, Deserialize)]
#[serde(default)]
pub struct Settings {
    /// `postgres://…`; when unset, `dev` and `demo` start an embedded PostgreSQL. Never logged.
    #[serde(deserialize_with = "sendwerk_core::lenient::option_string")]
    pub database_url: Option<String>,
    pub database_max_connections: usize,
    /// Where the gRPC control plane listens.
    pub grpc_listen: SocketAddr,
    /// Bearer token required on every gRPC call when set. Never logged.
    #[serde(deserialize_with = "sendwerk_core::lenient::option_string")]
    pub api_token: Option<String>,
    pub max_message_bytes: usize,
    /// `relay` (the smarthost below) or `mx` (directly to each recipient domain's MX hosts).
    pub delivery: DeliveryMode,
    /// The smarthost senders deliver to; in `mx` mode its hello name and timeouts apply.
    pub relay: RelayConfig,
    /// Direct-to-MX resolver settings (`mx` mode).
    pub mx: MxResolverConfig,
    pub sender: SenderSettings,
    /// DKIM keys, one entry per (domain, selector); two for one domain sign twice.
    pub dkim: Vec<DkimSettings>,
    /// Bounce handling: VERP return paths and the inbound report listener.
    pub bounce: BounceSettings,
}

#[derive(Clone, Deserialize)]
#[serde(default)]
pub struct BounceSettings {
    /// The domain of VERP return paths (`b-<mailing>-<id>-<mac>@<domain>`), whose MX must point at
    /// `sendwerk bounce`; unset sends with the mailing's from address as return path.
    pub domain: Option<String>,
    /// HMAC key for VERP addresses (at least 16 bytes). Never logged.
    #[serde(deserialize_with = "sendwerk_core::lenient::option_string")]
    pub secret: Option<String>,
    /// Keys of earlier rotations that still verify. Never logged.
    pub previous_secrets: Vec<String>,
    /// Where the inbound SMTP listener of `sendwerk bounce` listens.
    pub listen: SocketAddr,
    /// Largest report accepted, in bytes.
    pub max_report_bytes: usize,
    /// Soft bounces (mailbox full, …) suppress an address after this many within the window.
    pub soft_bounce_limit: u32,
    pub soft_bounce_window_days: u32,
}

impl Default for BounceSettings {
    fn default() -> Self {
        Self {
            domain: None,
            secret: None,
            previous_secrets: Vec::new(),
            listen: SocketAddr::from(([127, 0, 0, 1], 2525)),
            max_report_bytes: 10 * 1024 * 1024,
            soft_bounce_limit: 3,
            soft_bounce_window_days: 30,
        }
    }
}

impl BounceSettings {
    /// The VERP signer, when a bounce domain is configured.
    pub fn verp(&self) -> anyhow::Result<Option<sendwerk_core::Verp>> {
        let Some(domain) = &self.domain else { return Ok(None) };
        let domain = sendwerk_core::Domain::parse(domain).map_err(|error| anyhow::anyhow!("bounce.domain: {error}"))?;
        let secret = self.secret.as_deref().context("bounce.secret is required when bounce.domain is set")?;
        let previous: Vec<&[u8]> = self.previous_secrets.iter().map(String::as_bytes).collect();
        Ok(Some(sendwerk_core::Verp::new(domain, secret.as_bytes(), &previous).context("bounce.secret")?))
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryMode {
    #[default]
    Relay,
    Mx,
}

#[derive(Clone, Deserialize)]
#[serde(default)]
pub struct SenderSettings {
    pub connections: usize,
    pub claim_batch_size: i64,
    pub lease_secs: f64,
    pub poll_interval_ms: u64,
    pub max_messages_per_second: Option<u32>,
    pub shutdown_grace_secs: f64,
    pub retry_initial_secs: f64,
    pub retry_max_secs: f64,
    pub retry_window_secs: f64,
    /// Messages per minute to one destination domain (cluster-wide) unless set per domain
    /// through the AdminService; unset for no default limit.
    pub default_domain_max_per_minute: Option<u32>,
    /// First back-off when a domain says "slow down".
    pub domain_backoff_secs: f64,
    /// `mx` mode: connections per MX address.
    pub max_connections_per_host: usize,
    /// `mx` mode: allow MX hosts in private/loopback ranges.
    pub allow_private_mx_addresses: bool,
}

#[derive(Clone, Deserialize)]
pub struct DkimSettings {
    pub domain: String,
    pub selector: String,
    pub algorithm: DkimAlgorithm,
    /// Path of a PEM private key file.
    pub key_file: Option<PathBuf>,
    /// The PEM itself (e.g. from a Kubernetes secret in an env var). Never logged.
    pub key_pem: Option<String>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            database_url: None,
            database_max_connections: 16,
            grpc_listen: SocketAddr::from(([127, 0, 0, 1], 50051)),
            api_token: None,
            max_message_bytes: 10 * 1024 * 1024,
            delivery: DeliveryMode::Relay,
            relay: RelayConfig::default(),
            mx: MxResolverConfig::default(),
            sender: SenderSettings::default(),
            dkim: Vec::new(),
            bounce: BounceSettings::default(),
        }
    }
}

impl Default for SenderSettings {
    fn default() -> Self {
        let defaults = SenderConfig::default();
        Self {
            connections: defaults.num_connections,
            claim_batch_size: defaults.claim_batch_size,
            lease_secs: defaults.lease.as_secs_f64(),
            poll_interval_ms: defaults.poll_interval.as_millis() as u64,
            max_messages_per_second: None,
            shutdown_grace_secs: defaults.shutdown_grace.as_secs_f64(),
            retry_initial_secs: defaults.retry.initial_delay.as_secs_f64(),
            retry_max_secs: defaults.retry.max_delay.as_secs_f64(),
            retry_window_secs: defaults.retry.retry_window.as_secs_f64(),
            default_domain_max_per_minute: defaults.default_domain_max_per_minute,
            domain_backoff_secs: defaults.domain_backoff.as_secs_f64(),
            max_connections_per_host: defaults.max_connections_per_host,
            allow_private_mx_addresses: defaults.allow_private_mx_addresses,
        }
    }
}

fn seconds(field: &str, value: f64) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(value)
        .with_context(|| format!("{field} must be a non-negative number of seconds, got {value}"))
}

impl Settings {
    /// Loads settings from the optional file and the environment.
    pub fn load(config_file: Option<&Path>) -> anyhow::Result<Self> {
        let mut figment = Figment::new();
        if let Some(path) = config_file {
            anyhow::ensure!(path.exists(), "config file {} does not exist", path.display());
            figment = figment.merge(Toml::file(path));
        }
        figment = figment.merge(Env::prefixed("SENDWERK_").split("__").ignore(&["config", "server", "log_format"]));
        let mut settings = Self::from_figment(&figment)?;
        if let Ok(url) = std::env::var("DATABASE_URL")
            && !url.is_empty()
        {
            settings.database_url = Some(url);
        }
        Ok(settings)
    }

    /// Settings from an assembled figment (file and environment providers).
    pub fn from_figment(figment: &Figment) -> anyhow::Result<Self> {
        figment.extract().context("invalid configuration")
    }

    pub fn sender_config(&self) -> anyhow::Result<SenderConfig> {
        let sender = &self.sender;
        Ok(SenderConfig {
            relay: self.relay.clone(),
            num_connections: sender.connections.max(1),
            claim_batch_size: sender.claim_batch_size.max(1),
            lease: seconds("sender.lease_secs", sender.lease_secs)?,
            poll_interval: Duration::from_millis(sender.poll_interval_ms.max(10)),
            max_messages_per_second: sender.max_messages_per_second,
            shutdown_grace: seconds("sender.shutdown_grace_secs", sender.shutdown_grace_secs)?,
            retry: RetryPolicy {
                initial_delay: seconds("sender.retry_initial_secs", sender.retry_initial_secs)?,
                max_delay: seconds("sender.retry_max_secs", sender.retry_max_secs)?,
                retry_window: seconds("sender.retry_window_secs", sender.retry_window_secs)?,
                ..RetryPolicy::default()
            },
            max_message_bytes: self.max_message_bytes,
            dkim_keys: self.dkim_keys()?,
            mx: (self.delivery == DeliveryMode::Mx).then(|| self.mx.clone()),
            max_connections_per_host: sender.max_connections_per_host,
            allow_private_mx_addresses: sender.allow_private_mx_addresses,
            default_domain_max_per_minute: sender.default_domain_max_per_minute,
            domain_backoff: seconds("sender.domain_backoff_secs", sender.domain_backoff_secs)?,
            verp: self.bounce.verp()?,
            ..SenderConfig::default()
        })
    }

    pub fn control_config(&self) -> ControlConfig {
        ControlConfig {
            api_token: self.api_token.clone(),
            max_message_bytes: self.max_message_bytes,
            relay: self.relay.clone(),
            ..ControlConfig::default()
        }
    }

    pub fn dkim_keys(&self) -> anyhow::Result<Vec<DkimKeyConfig>> {
        self.dkim
            .iter()
            .map(|entry| {
                let private_key_pem = match (&entry.key_pem, &entry.key_file) {
                    (Some(pem), _) => pem.clone(),
                    (None, Some(path)) => std::fs::read_to_string(path).with_context(|| {
                        format!(
                            "reading the DKIM key for {} (selector {}) from {}",
                            entry.domain,
                            entry.selector,
                            path.display()
                        )
                    })?,
                    (None, None) => anyhow::bail!(
                        "dkim entry for {} (selector {}) needs key_file or key_pem",
                        entry.domain,
                        entry.selector
                    ),
                };
                Ok(DkimKeyConfig {
                    domain: entry.domain.clone(),
                    selector: entry.selector.clone(),
                    algorithm: entry.algorithm,
                    private_key_pem,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use figment::Figment;
    use figment::providers::{Format, Toml};

    use super::Settings;

    #[test]
    fn nested_keys_numeric_secrets_and_dkim_entries_load() {
        // Environment providers parse `12345` into a number; secrets must still be text.
        let figment = Figment::new().merge(Toml::string(
            r#"
            api_token = 987654
            grpc_listen = "0.0.0.0:6000"
            [relay]
            host = "smtp.internal"
            port = 587
            tls = "required"
            username = "sendwerk"
            password = 12345
            [sender]
            connections = 3
            lease_secs = 30
            [[dkim]]
            domain = "example.com"
            selector = "s1"
            algorithm = "ed25519"
            key_pem = "-----BEGIN PRIVATE KEY-----"
            "#,
        ));
        let settings = Settings::from_figment(&figment).expect("valid settings");
        assert_eq!(settings.api_token.as_deref(), Some("987654"));
        assert_eq!(settings.relay.password.as_deref(), Some("12345"));
        assert_eq!((settings.relay.host.as_str(), settings.relay.port), ("smtp.internal", 587));
        assert_eq!(settings.grpc_listen.port(), 6000);
        let sender = settings.sender_config().expect("sender config");
        assert_eq!(sender.num_connections, 3);
        assert_eq!(sender.lease.as_secs(), 30);
        assert_eq!(sender.dkim_keys.len(), 1);
        assert!(!format!("{:?}", settings.relay).contains("12345"), "the password is never printed");
    }

    #[test]
    fn a_dkim_entry_without_a_key_is_an_error_naming_it() {
        let figment = Figment::new()
            .merge(Toml::string("[[dkim]]\ndomain = \"example.com\"\nselector = \"s1\"\nalgorithm = \"rsa\"\n"));
        let settings = Settings::from_figment(&figment).expect("valid settings");
        let error = settings.dkim_keys().expect_err("no key given");
        assert!(error.to_string().contains("example.com"), "{error}");
    }
}
