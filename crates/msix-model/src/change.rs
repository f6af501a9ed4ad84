//! What a guest access changed, and the order in which the changes are reported.

use crate::entry::MsiMessage;

/// One observable change caused by an access, reset or restore.
///
/// A returned `Vec<Change>` is ordered so that a binding can carry it out
/// front to back without a window in which an interrupt is delivered to a
/// stale or not-yet-valid message:
///
/// 1. [`Change::Disabled`]
/// 2. every [`Change::Masked`], ascending vector
/// 3. every [`Change::MessageChanged`], ascending vector
/// 4. [`Change::Enabled`]
/// 5. every [`Change::Unmasked`], ascending vector
///
/// Masks are applied before messages change and unmasks only after the new
/// messages are in place: a binding then detaches an irqfd before changing
/// its route, and commits a route before attaching its irqfd.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    /// MSI-X Enable went from 0 to 1.
    Enabled,
    /// MSI-X Enable went from 1 to 0.
    Disabled,
    /// The vector's *effective* mask (entry Mask || Function Mask || !Enable) went from 0 to 1.
    Masked {
        /// The vector.
        vector: u16,
    },
    /// The vector's effective mask went from 1 to 0. Its pending bit has been
    /// cleared: if it was set, the binding owes the guest that message.
    Unmasked {
        /// The vector.
        vector: u16,
    },
    /// The entry's address or data differs from before the access.
    MessageChanged {
        /// The vector.
        vector: u16,
        /// The entry's new message.
        message: MsiMessage,
    },
}

impl Change {
    /// The vector this change is about, or `None` for `Enabled`/`Disabled`.
    pub fn vector(&self) -> Option<u16> {
        match *self {
            Change::Enabled | Change::Disabled => None,
            Change::Masked { vector }
            | Change::Unmasked { vector }
            | Change::MessageChanged { vector, .. } => Some(vector),
        }
    }
}

/// What one vector looked like to the guest: effective mask and message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct VectorView {
    pub(crate) masked: bool,
    pub(crate) message: MsiMessage,
}

/// Collects per-vector differences (fed in ascending vector order) and
/// emits them in the documented order.
#[derive(Debug, Default)]
pub(crate) struct ChangeSet {
    masked: Vec<Change>,
    messages: Vec<Change>,
    unmasked: Vec<Change>,
}

impl ChangeSet {
    /// Records how `vector` went from `before` to `after`.
    pub(crate) fn vector(&mut self, vector: u16, before: VectorView, after: VectorView) {
        if !before.masked && after.masked {
            self.masked.push(Change::Masked { vector });
        }
        if before.message != after.message {
            self.messages.push(Change::MessageChanged {
                vector,
                message: after.message,
            });
        }
        if before.masked && !after.masked {
            self.unmasked.push(Change::Unmasked { vector });
        }
    }

    /// The vectors reported as unmasked so far.
    pub(crate) fn unmasked_vectors(&self) -> impl Iterator<Item = u16> + '_ {
        self.unmasked.iter().filter_map(Change::vector)
    }

    /// The ordered change list, given MSI-X Enable before and after.
    pub(crate) fn finish(self, was_enabled: bool, is_enabled: bool) -> Vec<Change> {
        let mut changes =
            Vec::with_capacity(self.masked.len() + self.messages.len() + self.unmasked.len() + 1);
        if was_enabled && !is_enabled {
            changes.push(Change::Disabled);
        }
        changes.extend(self.masked);
        changes.extend(self.messages);
        if !was_enabled && is_enabled {
            changes.push(Change::Enabled);
        }
        changes.extend(self.unmasked);
        changes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(masked: bool, data: u32) -> VectorView {
        VectorView {
            masked,
            message: MsiMessage { address: 0, data },
        }
    }

    #[test]
    fn change_set_orders_groups_then_vectors() {
        let mut set = ChangeSet::default();
        set.vector(0, view(true, 0), view(false, 1));
        set.vector(1, view(false, 0), view(true, 0));
        set.vector(2, view(false, 0), view(true, 2));
        set.vector(3, view(true, 0), view(false, 0));
        let message = |vector, data| Change::MessageChanged {
            vector,
            message: MsiMessage { address: 0, data },
        };
        assert_eq!(
            set.finish(false, true),
            vec![
                Change::Masked { vector: 1 },
                Change::Masked { vector: 2 },
                message(0, 1),
                message(2, 2),
                Change::Enabled,
                Change::Unmasked { vector: 0 },
                Change::Unmasked { vector: 3 },
            ]
        );
    }

    #[test]
    fn disabled_comes_first_and_nothing_is_reported_without_differences() {
        let mut set = ChangeSet::default();
        set.vector(0, view(false, 0), view(true, 0));
        assert_eq!(
            set.finish(true, false),
            vec![Change::Disabled, Change::Masked { vector: 0 }]
        );
        let mut unchanged = ChangeSet::default();
        unchanged.vector(0, view(true, 5), view(true, 5));
        assert_eq!(unchanged.finish(true, true), vec![]);
    }
}
