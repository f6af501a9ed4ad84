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
    ///
    /// The default of a table binding on its own; `msix-accel`'s
    /// `AccelConfig` defaults to [`Policy::Auto`].
    #[default]
    Fast,
    /// Read-only memslot, no ioeventfds: unmasks exit too, 2 exits per Linux
    /// cycle, no deviation.
    Strict,
    /// Everything exits (3 per Linux cycle): for tables that cannot be
    /// isolated on their own pages, and for SEV-ES/SNP/TDX guests where KVM
    /// refuses read-only memslots.
    Trap,
    /// Chosen by the accelerator (`msix-accel`) at placement time: `fast`
    /// or `strict`, whichever a short measurement on this host finds
    /// cheaper. A table binding alone treats it as `fast` (the highest it
    /// may choose); the policy in force is never `auto`.
    Auto,
}

impl Policy {
    /// Every mechanism (a policy that can be in force), fastest first.
    pub const ALL: [Policy; 3] = [Policy::Fast, Policy::Strict, Policy::Trap];

    /// Every policy that can be asked for: the mechanisms and `auto`.
    pub const CHOICES: [Policy; 4] = [Policy::Fast, Policy::Strict, Policy::Trap, Policy::Auto];

    /// Whether the table is mapped read-only into the guest.
    pub fn maps_table(self) -> bool {
        matches!(self.mechanism(), Policy::Fast | Policy::Strict)
    }

    /// Whether unmask writes are absorbed by ioeventfds (for `auto`: may be).
    pub fn absorbs_unmask(self) -> bool {
        self.mechanism() == Policy::Fast
    }

    /// The highest mechanism the policy may run: itself, `fast` for `auto`.
    pub fn mechanism(self) -> Policy {
        match self {
            Policy::Auto => Policy::Fast,
            p => p,
        }
    }

    /// The lower of two policies (`trap` < `strict` < `fast`): what runs when
    /// `self` is asked for and at most `limit` is possible. Always a
    /// mechanism (`auto` ranks as `fast`).
    pub fn at_most(self, limit: Policy) -> Policy {
        let rank = |p: Policy| match p.mechanism() {
            Policy::Trap => 0,
            Policy::Strict => 1,
            _ => 2,
        };
        if rank(limit) < rank(self) {
            limit.mechanism()
        } else {
            self.mechanism()
        }
    }

    /// Exits to userspace of one Linux mask cycle (mask write, flush read,
    /// unmask write) under the mechanism: 1 (`fast`: the read hits the
    /// read-only shadow, the unmask an ioeventfd), 2 (`strict`: the unmask
    /// exits), 3 (`trap`). `auto` counts as the mechanism it ranks as
    /// (`fast`): pass the policy in force, which is never `auto`.
    pub fn linux_cycle_exits(self) -> u64 {
        match self.mechanism() {
            Policy::Strict => 2,
            Policy::Trap => 3,
            _ => 1,
        }
    }

    /// The policy's name as used on command lines and in scenario files.
    pub fn name(self) -> &'static str {
        match self {
            Policy::Fast => "fast",
            Policy::Strict => "strict",
            Policy::Trap => "trap",
            Policy::Auto => "auto",
        }
    }
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A policy name that is not `fast`, `strict`, `trap` or `auto`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown policy {0:?}: expected fast, strict, trap or auto")]
pub struct UnknownPolicy(pub String);

impl FromStr for Policy {
    type Err = UnknownPolicy;
    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        Policy::CHOICES
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
        for p in Policy::CHOICES {
            assert_eq!(p.name().parse::<Policy>(), Ok(p));
        }
        assert_eq!(Policy::Auto.at_most(Policy::Fast), Policy::Fast);
        assert_eq!(Policy::Auto.at_most(Policy::Strict), Policy::Strict);
        assert_eq!(Policy::Fast.at_most(Policy::Auto), Policy::Fast);
        assert!(Policy::Auto.maps_table() && Policy::Auto.absorbs_unmask());
        assert!("fastest".parse::<Policy>().is_err());
        assert_eq!(Policy::Fast.at_most(Policy::Strict), Policy::Strict);
        assert_eq!(Policy::Trap.at_most(Policy::Fast), Policy::Trap);
        assert_eq!(Policy::Strict.at_most(Policy::Strict), Policy::Strict);
        assert_eq!(Policy::default(), Policy::Fast);
    }
}
