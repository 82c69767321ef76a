use std::fmt;

/// The number of virtual shards recipients are spread over, by hash of their domain.
pub const NUM_SHARDS: u16 = 256;

macro_rules! id_newtype {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(i64);

        impl $name {
            pub fn new(raw: i64) -> Self {
                Self(raw)
            }

            pub fn get(self) -> i64 {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}", self.0)
            }
        }
    };
}

id_newtype!(
    /// A mailing's primary key.
    MailingId
);
id_newtype!(
    /// A recipient row's primary key (one row per mailing and address).
    RecipientId
);

/// A virtual shard, `0..NUM_SHARDS`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ShardId(u16);

impl ShardId {
    /// The shard of a destination domain: FNV-1a of the lowercase ASCII domain, modulo
    /// [`NUM_SHARDS`]. Stable across processes and releases: it is stored with every recipient.
    pub fn for_domain(domain: &crate::Domain) -> Self {
        let mut hash: u32 = 0x811c_9dc5;
        for byte in domain.as_str().bytes() {
            hash ^= u32::from(byte);
            hash = hash.wrapping_mul(0x0100_0193);
        }
        Self((hash % u32::from(NUM_SHARDS)) as u16)
    }

    pub fn get(self) -> u16 {
        self.0
    }
}

/// The tenant that owns mailings, recipients and suppressions.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TenantId(String);

impl TenantId {
    pub fn new(raw: impl Into<String>) -> Self {
        Self(raw.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for TenantId {
    fn default() -> Self {
        Self("default".to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::EmailAddress;

    #[test]
    fn shard_of_a_domain_is_stable_and_in_range() {
        let address = EmailAddress::parse("a@Example.COM").expect("valid");
        let shard = ShardId::for_domain(address.domain());
        assert!(shard.get() < NUM_SHARDS);
        let again = EmailAddress::parse("b@example.com").expect("valid");
        assert_eq!(shard, ShardId::for_domain(again.domain()));
    }
}
