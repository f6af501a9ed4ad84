//! The fast-path policies a table binding can run under.

use std::fmt;
use std::str::FromStr;

/// How much of the guest's table traffic stays in the kernel.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Policy {
    /// Read-only memslot (reads never exit) and an ioeventfd per entry
    /// (unmasks never exit): a Linux mask + flush-read + unmask cycle costs 1
    /// exit. Deviation: a read of Vector Control between an absorbed unmask
    /// and its service (microseconds) still shows the mask bit set.
    #[default]
    Fast,
    /// Read-only memslot, no ioeventfds: unmasks exit too, 2 exits per Linux
    /// cycle, no deviation.
    Strict,
    /// Everything exits (3 per Linux cycle): for tables that cannot be
    /// isolated on their own pages, and for SEV-ES/SNP/TDX guests where KVM
    /// refuses read-only memslots.
    Trap,
}

impl Policy {
    /// Every policy, fastest first.
    pub const ALL: [Policy; 3] = [Policy::Fast, Policy::Strict, Policy::Trap];

    /// Whether the table is mapped read-only into the guest.
    pub fn maps_table(self) -> bool {
        matches!(self, Policy::Fast | Policy::Strict)
    }

    /// Whether unmask writes are absorbed by ioeventfds.
    pub fn absorbs_unmask(self) -> bool {
        self == Policy::Fast
    }

    /// The lower of two policies (`trap` < `strict` < `fast`): what runs when
    /// `self` is asked for and at most `limit` is possible.
    pub fn at_most(self, limit: Policy) -> Policy {
        let rank = |p: Policy| match p {
            Policy::Trap => 0,
            Policy::Strict => 1,
            Policy::Fast => 2,
        };
        if rank(limit) < rank(self) {
            limit
        } else {
            self
        }
    }

    /// The policy's name as used on command lines and in scenario files.
    pub fn name(self) -> &'static str {
        match self {
            Policy::Fast => "fast",
            Policy::Strict => "strict",
            Policy::Trap => "trap",
        }
    }
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A policy name that is not `fast`, `strict` or `trap`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown policy {0:?}: expected fast, strict or trap")]
pub struct UnknownPolicy(pub String);

impl FromStr for Policy {
    type Err = UnknownPolicy;
    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        Policy::ALL
            .into_iter()
            .find(|p| p.name() == s)
            .ok_or_else(|| UnknownPolicy(s.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_names_are_refused() {
        for p in Policy::ALL {
            assert_eq!(p.name().parse::<Policy>(), Ok(p));
        }
        assert!("fastest".parse::<Policy>().is_err());
        assert_eq!(Policy::Fast.at_most(Policy::Strict), Policy::Strict);
        assert_eq!(Policy::Trap.at_most(Policy::Fast), Policy::Trap);
        assert_eq!(Policy::Strict.at_most(Policy::Strict), Policy::Strict);
        assert_eq!(Policy::default(), Policy::Fast);
    }
}
