//! Direct-to-MX routing (RFC 5321 §5.1): for a destination domain, the hosts to connect to and
//! the order to try them in.
//!
//! MX records are sorted by preference, hosts of equal preference are shuffled on every call
//! (load spreading), and each exchange's A then AAAA addresses are resolved. A domain without MX
//! records falls back to its own addresses as an implicit MX of preference 0; a null MX
//! (RFC 7505, `MX 0 .`) means the domain accepts no mail. Answers are cached per domain, with
//! record TTLs clamped to a configured range; temporary failures are never cached. Concurrent
//! lookups of the same domain need no coordination here: hickory's name-server pool already
//! shares one in-flight query among identical requests.
//!
//! This module only answers "where"; it never connects to a mail host and never decides retry
//! policy: [`MxError::is_permanent`] tells the caller which failures are for good.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolveHosts, ResolverConfig};
use hickory_resolver::lookup::Lookup;
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError, NetError, NoRecords};
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::rr::{Name, RData, RecordType};
use rand::seq::SliceRandom as _;
use sendwerk_core::Domain;
use tracing::{Instrument as _, debug, warn};

/// How often hickory re-sends a query after a failed try (so a query is tried up to three times).
const RETRY_ATTEMPTS: usize = 2;
/// At most this many MX hosts per domain are resolved and returned (the rest are ignored), so a
/// hostile zone with hundreds of MX records cannot make us send hundreds of queries.
const MAX_EXCHANGES: usize = 16;

/// How to find mail hosts. Durations are configured in seconds.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(default)]
pub struct MxResolverConfig {
    /// Name servers to ask (UDP, and TCP for truncated answers); empty = the system's
    /// `/etc/resolv.conf`.
    pub nameservers: Vec<SocketAddr>,
    /// Per DNS request; a request is retried twice, so one query may take up to three times this.
    #[serde(deserialize_with = "seconds")]
    pub timeout: Duration,
    /// Domains kept in the answer cache; 0 disables the cache.
    pub cache_capacity: usize,
    /// Record TTLs are clamped to `[min_ttl, max_ttl]` for the cache.
    #[serde(deserialize_with = "seconds")]
    pub min_ttl: Duration,
    #[serde(deserialize_with = "seconds")]
    pub max_ttl: Duration,
    /// The SMTP port put into every target: 25 in production, a test sink's port in tests.
    pub smtp_port: u16,
}

fn seconds<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    let seconds: f64 = serde::Deserialize::deserialize(deserializer)?;
    Duration::try_from_secs_f64(seconds).map_err(serde::de::Error::custom)
}

impl Default for MxResolverConfig {
    fn default() -> Self {
        Self {
            nameservers: Vec::new(),
            timeout: Duration::from_secs(5),
            cache_capacity: 10_000,
            min_ttl: Duration::from_secs(30),
            max_ttl: Duration::from_secs(3600),
            smtp_port: 25,
        }
    }
}

/// One host to deliver to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MxTarget {
    /// The MX exchange (or, for an implicit MX, the domain itself): lowercase, no trailing dot.
    pub host: String,
    /// 0 for an implicit MX.
    pub preference: u16,
    /// IPv4 addresses first, then IPv6; never empty.
    pub addresses: Vec<IpAddr>,
    pub port: u16,
}

/// Why a domain has no delivery targets.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MxError {
    /// The domain does not exist (NXDOMAIN): permanent (the recipient's host is unknown).
    #[error("domain {domain} does not exist")]
    DomainNotFound { domain: String },
    /// RFC 7505 null MX (`MX 0 .`): permanent, the domain accepts no mail.
    #[error("domain {domain} accepts no mail (null mx)")]
    NullMx { domain: String },
    /// No MX records and no A/AAAA records: permanent.
    #[error("domain {domain} has no mail host (no mx and no address records)")]
    NoMailHost { domain: String },
    /// Timeouts, SERVFAIL, network trouble, or no MX host that resolves: try again later.
    #[error("dns lookup for {domain} failed temporarily: {detail}")]
    Temporary { domain: String, detail: String },
}

impl MxError {
    /// Whether the recipient should fail for good rather than be deferred.
    pub fn is_permanent(&self) -> bool {
        match self {
            Self::DomainNotFound { .. } | Self::NullMx { .. } | Self::NoMailHost { .. } => true,
            Self::Temporary { .. } => false,
        }
    }
}

/// Why an [`MxResolver`] could not be built.
#[derive(Debug, thiserror::Error)]
pub enum MxConfigError {
    #[error("reading the system dns configuration failed: {0}")]
    SystemConfig(String),
    #[error("invalid mx resolver configuration: {0}")]
    Invalid(String),
}

/// Resolves domains to delivery targets. Cheap to clone (the cache is shared); build it once.
#[derive(Clone)]
pub struct MxResolver {
    inner: Arc<Inner>,
}

type Answer = Result<Vec<MxTarget>, MxError>;

struct Inner {
    dns: Dns,
    config: MxResolverConfig,
    cache: Mutex<HashMap<Domain, CachedAnswer>>,
}

struct CachedAnswer {
    answer: Answer,
    expires_at: Instant,
}

/// An answer and how long it may be cached (`None`: never).
struct Resolved {
    answer: Answer,
    ttl_opt: Option<Duration>,
}

impl fmt::Debug for MxResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MxResolver").field("config", &self.inner.config).finish_non_exhaustive()
    }
}

impl MxResolver {
    /// Builds the resolver: the given name servers, or the system's when none are given.
    pub fn new(config: MxResolverConfig) -> Result<Self, MxConfigError> {
        if config.min_ttl > config.max_ttl {
            return Err(MxConfigError::Invalid(format!(
                "min_ttl {:?} is larger than max_ttl {:?}",
                config.min_ttl, config.max_ttl
            )));
        }
        if config.timeout.is_zero() {
            return Err(MxConfigError::Invalid("timeout must be positive".into()));
        }
        let mut builder = if config.nameservers.is_empty() {
            TokioResolver::builder_tokio().map_err(|error| MxConfigError::SystemConfig(error.to_string()))?
        } else {
            let name_servers = config.nameservers.iter().map(|address| name_server(*address)).collect();
            let mut builder = TokioResolver::builder_with_config(
                ResolverConfig::from_name_servers(name_servers),
                TokioRuntimeProvider::default(),
            );
            builder.options_mut().use_hosts_file = ResolveHosts::Never;
            builder
        };
        let options = builder.options_mut();
        options.timeout = config.timeout;
        options.attempts = RETRY_ATTEMPTS;
        // hickory keeps its own per-query cache under ours (useful for exchanges shared by many
        // domains). It honours record TTLs as they are; only the maximum is ours.
        options.positive_max_ttl = Some(config.max_ttl);
        options.negative_max_ttl = Some(config.max_ttl);
        let resolver = builder.build().map_err(|error| MxConfigError::Invalid(error.to_string()))?;
        let query_deadline = config.timeout * (RETRY_ATTEMPTS as u32 + 1) + Duration::from_secs(1);
        Ok(Self {
            inner: Arc::new(Inner { dns: Dns { resolver, query_deadline }, config, cache: Mutex::new(HashMap::new()) }),
        })
    }

    /// The delivery targets for a domain, in the order to try them: by preference, hosts of
    /// equal preference in random order.
    pub async fn targets(&self, domain: &Domain) -> Result<Vec<MxTarget>, MxError> {
        let span = tracing::debug_span!("mx_targets", domain = %domain);
        let answer = match self.inner.cached(domain) {
            Some(answer) => {
                span.in_scope(|| debug!(ok = answer.is_ok(), "mx answer from cache"));
                answer
            }
            None => self.inner.resolve_and_cache(domain).instrument(span).await,
        };
        answer.map(shuffle_equal_preferences)
    }
}

fn name_server(address: SocketAddr) -> NameServerConfig {
    let mut udp = ConnectionConfig::udp();
    udp.port = address.port();
    let mut tcp = ConnectionConfig::tcp();
    tcp.port = address.port();
    NameServerConfig::new(address.ip(), true, vec![udp, tcp])
}

fn shuffle_equal_preferences(mut targets: Vec<MxTarget>) -> Vec<MxTarget> {
    let mut rng = rand::rng();
    for group in targets.chunk_by_mut(|a, b| a.preference == b.preference) {
        group.shuffle(&mut rng);
    }
    targets
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What one DNS query said, reduced to what routing needs.
enum QueryFailure {
    /// NXDOMAIN; the TTL of the negative answer when the server sent an SOA.
    NoSuchName { negative_ttl_opt: Option<u32> },
    /// The name exists without records of the asked type (NOERROR/NODATA).
    NoData { negative_ttl_opt: Option<u32> },
    /// Anything else: timeout, SERVFAIL, refused, network error.
    Temporary { detail: String },
}

impl QueryFailure {
    fn of(error: NetError) -> Self {
        match error {
            NetError::Dns(DnsError::NoRecordsFound(NoRecords { response_code, negative_ttl, .. })) => {
                if response_code == ResponseCode::NXDomain {
                    Self::NoSuchName { negative_ttl_opt: negative_ttl }
                } else {
                    Self::NoData { negative_ttl_opt: negative_ttl }
                }
            }
            other => Self::Temporary { detail: other.to_string() },
        }
    }
}

/// The addresses of one host name.
enum HostAddresses {
    /// At least one address; `ttl` is the shortest record TTL (0 when one family failed
    /// temporarily, so that the answer is cached only briefly).
    Found { addresses: Vec<IpAddr>, ttl: u32 },
    /// Neither A nor AAAA records (or the name does not exist).
    Missing { negative_ttl_opt: Option<u32> },
    /// No address, and at least one of the two lookups failed temporarily.
    Failed { detail: String },
}

impl Inner {
    fn cached(&self, domain: &Domain) -> Option<Answer> {
        let cache = lock(&self.cache);
        let entry = cache.get(domain)?;
        (entry.expires_at > Instant::now()).then(|| entry.answer.clone())
    }

    fn store(&self, domain: &Domain, answer: &Answer, ttl: Duration) {
        let capacity = self.config.cache_capacity;
        if capacity == 0 {
            return;
        }
        let now = Instant::now();
        let ttl = ttl.max(self.config.min_ttl).min(self.config.max_ttl);
        let mut cache = lock(&self.cache);
        if cache.len() >= capacity && !cache.contains_key(domain) {
            cache.retain(|_, entry| entry.expires_at > now);
            if cache.len() >= capacity {
                let soonest_opt = cache.iter().min_by_key(|(_, entry)| entry.expires_at).map(|(key, _)| key.clone());
                if let Some(soonest) = soonest_opt {
                    cache.remove(&soonest);
                }
            }
        }
        cache.insert(domain.clone(), CachedAnswer { answer: answer.clone(), expires_at: now + ttl });
    }

    async fn resolve_and_cache(&self, domain: &Domain) -> Answer {
        let Resolved { answer, ttl_opt } = self.resolve(domain).await;
        match &answer {
            Ok(targets) => debug!(num_targets = targets.len(), ?ttl_opt, "mx targets resolved"),
            Err(error) => debug!(error = %error, ?ttl_opt, "mx lookup failed"),
        }
        if let Some(ttl) = ttl_opt {
            self.store(domain, &answer, ttl);
        }
        answer
    }

    async fn resolve(&self, domain: &Domain) -> Resolved {
        let temporary = |detail: String| Resolved {
            answer: Err(MxError::Temporary { domain: domain.to_string(), detail }),
            ttl_opt: None,
        };
        // Always absolute: the search list and ndots must never apply.
        let fqdn = match Name::from_ascii(format!("{}.", domain.as_str())) {
            Ok(name) => name,
            Err(error) => return temporary(format!("not a dns name: {error}")),
        };
        match self.dns.query(fqdn.clone(), RecordType::MX).await {
            Ok(lookup) => self.resolve_exchanges(domain, fqdn, &lookup).await,
            Err(error) => match QueryFailure::of(error) {
                QueryFailure::NoSuchName { negative_ttl_opt } => Resolved {
                    answer: Err(MxError::DomainNotFound { domain: domain.to_string() }),
                    ttl_opt: Some(self.negative_ttl(negative_ttl_opt)),
                },
                QueryFailure::NoData { negative_ttl_opt } => {
                    debug!("no mx records, trying the domain's own addresses");
                    self.resolve_implicit_mx(domain, fqdn, negative_ttl_opt).await
                }
                QueryFailure::Temporary { detail } => temporary(format!("mx query: {detail}")),
            },
        }
    }

    async fn resolve_exchanges(&self, domain: &Domain, fqdn: Name, lookup: &Lookup) -> Resolved {
        let mut mx_ttl = u32::MAX;
        let mut exchanges: Vec<(u16, Name)> = Vec::new();
        for record in lookup.answers() {
            if let RData::MX(mx) = &record.data {
                mx_ttl = mx_ttl.min(record.ttl);
                exchanges.push((mx.preference, mx.exchange.clone()));
            }
        }
        if exchanges.is_empty() {
            // Only a CNAME chain without MX at its end: no MX records.
            return self.resolve_implicit_mx(domain, fqdn, None).await;
        }
        if exchanges.iter().all(|(_, exchange)| exchange.is_root()) {
            return Resolved {
                answer: Err(MxError::NullMx { domain: domain.to_string() }),
                ttl_opt: Some(Duration::from_secs(u64::from(mx_ttl))),
            };
        }
        // RFC 7505 forbids mixing a null MX with others; if a zone does, use the real ones.
        exchanges.retain(|(_, exchange)| !exchange.is_root());
        exchanges.shuffle(&mut rand::rng());
        exchanges.sort_by_key(|(preference, _)| *preference);
        let mut seen = HashSet::new();
        exchanges.retain(|(_, exchange)| seen.insert(exchange.to_lowercase()));
        exchanges.truncate(MAX_EXCHANGES);

        let mut lookups = tokio::task::JoinSet::new();
        for (index, (_, exchange)) in exchanges.iter().enumerate() {
            let dns = self.dns.clone();
            let exchange = exchange.clone();
            lookups.spawn(async move { (index, dns.addresses_of(exchange).await) }.in_current_span());
        }
        let mut addresses_by_index: Vec<Option<HostAddresses>> = exchanges.iter().map(|_| None).collect();
        while let Some(joined) = lookups.join_next().await {
            match joined {
                Ok((index, addresses)) => {
                    if let Some(slot) = addresses_by_index.get_mut(index) {
                        *slot = Some(addresses);
                    }
                }
                Err(error) => warn!(error = %error, "mx host address lookup task failed"),
            }
        }

        let mut targets = Vec::new();
        let mut ttl = mx_ttl;
        let mut skipped = Vec::new();
        for ((preference, exchange), addresses_opt) in exchanges.into_iter().zip(addresses_by_index) {
            let host = host_name(&exchange);
            match addresses_opt {
                Some(HostAddresses::Found { addresses, ttl: address_ttl }) => {
                    ttl = ttl.min(address_ttl);
                    targets.push(MxTarget { host, preference, addresses, port: self.config.smtp_port });
                }
                Some(HostAddresses::Missing { .. }) => {
                    debug!(exchange = %host, preference, "mx host has no address records, skipped");
                    skipped.push(format!("{host}: no address records"));
                }
                Some(HostAddresses::Failed { detail }) => {
                    warn!(exchange = %host, preference, error = %detail, "mx host address lookup failed, skipped");
                    // A preferred host may be back soon: do not route around it for long.
                    ttl = 0;
                    skipped.push(format!("{host}: {detail}"));
                }
                None => {
                    ttl = 0;
                    skipped.push(format!("{host}: address lookup did not finish"));
                }
            }
        }
        if targets.is_empty() {
            return Resolved {
                answer: Err(MxError::Temporary {
                    domain: domain.to_string(),
                    detail: format!("no mx host resolved to an address ({})", skipped.join("; ")),
                }),
                ttl_opt: None,
            };
        }
        Resolved { answer: Ok(targets), ttl_opt: Some(Duration::from_secs(u64::from(ttl))) }
    }

    /// RFC 5321 §5.1: without MX records the domain itself is the mail host, preference 0.
    async fn resolve_implicit_mx(&self, domain: &Domain, fqdn: Name, mx_negative_ttl_opt: Option<u32>) -> Resolved {
        match self.dns.addresses_of(fqdn).await {
            HostAddresses::Found { addresses, ttl } => {
                let ttl = mx_negative_ttl_opt.map_or(ttl, |mx_ttl| ttl.min(mx_ttl));
                let target =
                    MxTarget { host: domain.to_string(), preference: 0, addresses, port: self.config.smtp_port };
                Resolved { answer: Ok(vec![target]), ttl_opt: Some(Duration::from_secs(u64::from(ttl))) }
            }
            HostAddresses::Missing { negative_ttl_opt } => Resolved {
                answer: Err(MxError::NoMailHost { domain: domain.to_string() }),
                ttl_opt: Some(self.negative_ttl(shorter(negative_ttl_opt, mx_negative_ttl_opt))),
            },
            HostAddresses::Failed { detail } => Resolved {
                answer: Err(MxError::Temporary {
                    domain: domain.to_string(),
                    detail: format!("address query: {detail}"),
                }),
                ttl_opt: None,
            },
        }
    }

    /// A negative answer without SOA is cached for the shortest allowed time.
    fn negative_ttl(&self, negative_ttl_opt: Option<u32>) -> Duration {
        negative_ttl_opt.map_or(self.config.min_ttl, |ttl| Duration::from_secs(u64::from(ttl)))
    }
}

/// hickory's resolver and the bound on one query; cheap to clone into lookup tasks.
#[derive(Clone)]
struct Dns {
    resolver: TokioResolver,
    /// Upper bound for one query including hickory's retries, in case its own deadlines fail.
    query_deadline: Duration,
}

impl Dns {
    #[tracing::instrument(level = "debug", name = "dns_query", skip(self), fields(name = %name, record_type = %record_type))]
    async fn query(&self, name: Name, record_type: RecordType) -> Result<Lookup, NetError> {
        let lookup = self.resolver.lookup(name, record_type);
        tokio::time::timeout(self.query_deadline, lookup).await.unwrap_or(Err(NetError::Timeout))
    }

    /// A and AAAA of one host, looked up together; IPv4 addresses first.
    async fn addresses_of(&self, name: Name) -> HostAddresses {
        let (ipv4, ipv6) = tokio::join!(self.query(name.clone(), RecordType::A), self.query(name, RecordType::AAAA));
        let mut addresses = Vec::new();
        let mut ttl = u32::MAX;
        let mut negative_ttl_opt: Option<u32> = None;
        let mut failure_opt: Option<String> = None;
        for result in [ipv4, ipv6] {
            match result {
                Ok(lookup) => {
                    for record in lookup.answers() {
                        let address = match &record.data {
                            RData::A(a) => IpAddr::V4(a.0),
                            RData::AAAA(aaaa) => IpAddr::V6(aaaa.0),
                            _ => continue,
                        };
                        ttl = ttl.min(record.ttl);
                        if !addresses.contains(&address) {
                            addresses.push(address);
                        }
                    }
                }
                Err(error) => match QueryFailure::of(error) {
                    QueryFailure::NoSuchName { negative_ttl_opt: ttl_opt }
                    | QueryFailure::NoData { negative_ttl_opt: ttl_opt } => {
                        negative_ttl_opt = shorter(negative_ttl_opt, ttl_opt);
                    }
                    QueryFailure::Temporary { detail } => failure_opt = Some(detail),
                },
            }
        }
        match (addresses.is_empty(), failure_opt) {
            (false, None) => HostAddresses::Found { addresses, ttl },
            (false, Some(_)) => HostAddresses::Found { addresses, ttl: 0 },
            (true, Some(detail)) => HostAddresses::Failed { detail },
            (true, None) => HostAddresses::Missing { negative_ttl_opt },
        }
    }
}

/// The shorter of two optional TTLs.
fn shorter(a_opt: Option<u32>, b_opt: Option<u32>) -> Option<u32> {
    match (a_opt, b_opt) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a_opt, b_opt) => a_opt.or(b_opt),
    }
}

/// An exchange name as a connectable host: lowercase, without the trailing dot.
fn host_name(name: &Name) -> String {
    let ascii = name.to_ascii().to_ascii_lowercase();
    match ascii.strip_suffix('.') {
        Some(host) => host.to_owned(),
        None => ascii,
    }
}
