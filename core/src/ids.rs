//! Typed identifiers, so a tenant id can never be passed where an agent id is expected.
//!
//! All ids are UUIDs (v7 where we mint them, so they sort by creation time in indexes) and
//! render in the hyphenated form everywhere: JSON, SQL `TEXT` columns and audit records.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

macro_rules! typed_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub Uuid);

        impl $name {
            /// A fresh, time-ordered id.
            pub fn new() -> Self {
                Self(Uuid::now_v7())
            }

            pub fn as_uuid(&self) -> Uuid {
                self.0
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0.hyphenated(), f)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.0.hyphenated())
            }
        }

        impl FromStr for $name {
            type Err = uuid::Error;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(s).map(Self)
            }
        }

        impl From<Uuid> for $name {
            fn from(id: Uuid) -> Self {
                Self(id)
            }
        }
    };
}

typed_id!(
    /// A tenant: the unit of isolation (own KEK, own audit chain, own RLS partition).
    TenantId
);
typed_id!(
    /// An agent identity, holder of an agent key.
    AgentId
);
typed_id!(
    /// A scoped token; also the id embedded in the token string.
    TokenId
);
typed_id!(
    /// A registered sidecar, holder of a sidecar key.
    SidecarId
);
typed_id!(
    /// A human operator (or an operator API token).
    OperatorId
);
typed_id!(
    /// A secret (all versions of one path share it).
    SecretId
);
typed_id!(
    /// One audit event.
    AuditEventId
);
typed_id!(
    /// An approval request (one per token waiting on humans).
    ApprovalId
);

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn ids_round_trip_through_their_string_form() {
        let id = TenantId::new();
        let parsed: TenantId = id.to_string().parse().unwrap();
        assert_eq!(parsed, id);
    }
}
