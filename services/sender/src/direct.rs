//! Direct-to-MX delivery: resolve the recipient's domain, try its MX hosts in preference order
//! (and each host's addresses), over pooled connections per host with a cap on connections per
//! host. Addresses in loopback, private, link-local and other non-public ranges are refused
//! unless allowed, so that a recipient domain cannot make the sender connect into our own
//! network.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};

use sendwerk_core::{DeliveryOutcome, Domain, EnhancedStatus, SmtpReply};
use sendwerk_mail::mx::{MxError, MxResolver};
use sendwerk_mail::smtp::{self, RelayConfig, RelayTls, SmtpSession};
use tokio::sync::Semaphore;
use tracing::debug;

/// Whether an address is one a public MX may point at.
pub fn is_public_address(address: IpAddr) -> bool {
    match address {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || a == 0
                || (a == 100 && (64..128).contains(&b))
                || (a == 198 && (b == 18 || b == 19))
                || a >= 240)
        }
        IpAddr::V6(v6) => {
            let first = v6.segments()[0];
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
                || v6.to_ipv4_mapped().is_some_and(|v4| !is_public_address(IpAddr::V4(v4))))
        }
    }
}

pub(crate) struct DirectDelivery {
    resolver: MxResolver,
    /// Hello name, timeouts, messages per connection; host and port come from the MX.
    template: RelayConfig,
    max_connections_per_host: usize,
    allow_private_addresses: bool,
    idle: Mutex<HashMap<SocketAddr, Vec<SmtpSession>>>,
    permits: Mutex<HashMap<SocketAddr, Arc<Semaphore>>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn permanent(code: u16, enhanced: &str, text: String) -> DeliveryOutcome {
    DeliveryOutcome::PermanentFailure(SmtpReply { code, enhanced: EnhancedStatus::parse(enhanced), text })
}

fn temporary(detail: String) -> DeliveryOutcome {
    DeliveryOutcome::TemporaryFailure { reply: None, detail }
}

impl DirectDelivery {
    pub fn new(
        resolver: MxResolver,
        template: RelayConfig,
        max_connections_per_host: usize,
        allow_private_addresses: bool,
    ) -> Self {
        Self {
            resolver,
            template,
            max_connections_per_host: max_connections_per_host.max(1),
            allow_private_addresses,
            idle: Mutex::new(HashMap::new()),
            permits: Mutex::new(HashMap::new()),
        }
    }

    /// Connection settings for one mail exchanger address: opportunistic TLS, no credentials.
    fn connection_config(&self, address: IpAddr, port: u16) -> RelayConfig {
        RelayConfig {
            host: address.to_string(),
            port,
            tls: RelayTls::Opportunistic,
            username: None,
            password: None,
            ..self.template.clone()
        }
    }

    fn permits_for(&self, address: SocketAddr) -> Arc<Semaphore> {
        Arc::clone(
            lock(&self.permits)
                .entry(address)
                .or_insert_with(|| Arc::new(Semaphore::new(self.max_connections_per_host))),
        )
    }

    /// Delivers one message to `domain`'s mail exchangers. Connection-level failures move on to
    /// the next address or host; a reply from a server is final for this attempt.
    pub async fn deliver(&self, domain: &Domain, return_path: &str, to: &str, message: &[u8]) -> DeliveryOutcome {
        let targets = match self.resolver.targets(domain).await {
            Ok(targets) => targets,
            Err(error @ MxError::DomainNotFound { .. }) => return permanent(550, "5.1.2", error.to_string()),
            Err(error @ MxError::NullMx { .. }) => return permanent(556, "5.1.10", error.to_string()),
            Err(error @ MxError::NoMailHost { .. }) => return permanent(550, "5.1.2", error.to_string()),
            Err(error @ MxError::Temporary { .. }) => return temporary(error.to_string()),
        };
        let mut last_failure = temporary(format!("no usable mail exchanger address for {domain}"));
        for target in &targets {
            for address in &target.addresses {
                if !self.allow_private_addresses && !is_public_address(*address) {
                    last_failure = temporary(format!(
                        "mail exchanger {} of {domain} resolves to the non-public address {address}, which is refused",
                        target.host
                    ));
                    continue;
                }
                let socket = SocketAddr::new(*address, target.port);
                let Ok(_permit) = self.permits_for(socket).acquire_owned().await else {
                    continue;
                };
                let pooled = lock(&self.idle).get_mut(&socket).and_then(Vec::pop);
                let was_pooled = pooled.is_some();
                let mut session = match pooled {
                    Some(session) => session,
                    None => match smtp::connect(&self.connection_config(*address, target.port)).await {
                        Ok(session) => session,
                        Err(error) => {
                            debug!(host = %target.host, address = %socket, error = %error, "mail exchanger not reachable; trying the next");
                            last_failure = temporary(format!("{} ({socket}): {error}", target.host));
                            continue;
                        }
                    },
                };
                let mut outcome = session.deliver(return_path, to, message).await;
                if was_pooled && session.died_before_transaction() {
                    // The server closed the idle pooled connection; nothing was sent: once more
                    // on a fresh one.
                    match smtp::connect(&self.connection_config(*address, target.port)).await {
                        Ok(fresh) => {
                            session = fresh;
                            outcome = session.deliver(return_path, to, message).await;
                        }
                        Err(error) => {
                            last_failure = temporary(format!("{} ({socket}): {error}", target.host));
                            continue;
                        }
                    }
                }
                if session.is_reusable() {
                    lock(&self.idle).entry(socket).or_default().push(session);
                } else {
                    session.quit().await;
                }
                return outcome;
            }
        }
        last_failure
    }
}

#[cfg(test)]
mod tests {
    use super::is_public_address;

    #[test]
    fn internal_addresses_are_not_public() {
        for internal in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.1.1",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:10.0.0.1",
        ] {
            assert!(!is_public_address(internal.parse().expect("ip")), "{internal}");
        }
        for public in ["8.8.8.8", "193.99.144.80", "2a00:1450:4001:80b::201b"] {
            assert!(is_public_address(public.parse().expect("ip")), "{public}");
        }
    }
}
