//! The plan: what to do, in which order, for the changes one access made.
//!
//! Pure: computed from the model's changes and a view of each vector, with
//! no system call, so it is fuzzed with the model (see `fuzz/`). The
//! executor carries it out. The order is the protocol's:
//!
//! 1. hold every vector that must stop delivering (mask before any route
//!    change);
//! 2. MSI-X disable: the source stops, what held vectors parked is dropped
//!    (a disabled function has no pending bits), GSIs go back;
//! 3. stage the routes of vectors that deliver after this access and whose
//!    route the hypervisor does not hold yet; one commit for all of them
//!    (routes of masked vectors wait for their unmask, so programming many
//!    vectors costs one commit);
//! 4. MSI-X enable at the source;
//! 5. let through every vector that may deliver now: its route is committed
//!    before its irqfd is attached.

use std::collections::BTreeSet;

use msix_model::Change;

/// What the planner needs to know of one vector.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct VectorView {
    /// The model masks it (entry, Function Mask or MSI-X disabled).
    pub(crate) masked: bool,
    /// It delivers now (irqfd attached, source unmasked).
    pub(crate) delivering: bool,
    /// The hypervisor holds a route with the entry's current message.
    pub(crate) route_current: bool,
}

/// One step of a plan.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Step {
    /// Stop the vector delivering: mask at the source, else detach its irqfd.
    Hold(u16),
    /// MSI-X disable at the source.
    DisableSource,
    /// Drop what vectors held by a detached irqfd parked in their eventfds.
    ForgetParked,
    /// Detach every irqfd and give every GSI back.
    ReleaseGsis,
    /// Allocate the vector's GSI if needed and stage its entry's message.
    Stage(u16),
    /// One routing commit.
    Commit,
    /// MSI-X enable at the source.
    EnableSource,
    /// Let the vector deliver if its route is committed; otherwise keep it
    /// held (and say why).
    Deliver(u16),
}

/// The steps for `changes`, considering the vectors they name and those in
/// `retry`. `view` describes a vector before any step runs.
pub(crate) fn plan(
    changes: &[Change],
    retry: &[u16],
    view: impl Fn(u16) -> VectorView,
) -> Vec<Step> {
    let vectors: BTreeSet<u16> = changes
        .iter()
        .filter_map(Change::vector)
        .chain(retry.iter().copied())
        .collect();
    let views: Vec<(u16, VectorView)> = vectors.iter().map(|&v| (v, view(v))).collect();
    let mut steps = Vec::new();
    for &(v, view) in &views {
        if view.masked && view.delivering {
            steps.push(Step::Hold(v));
        }
    }
    if changes.contains(&Change::Disabled) {
        steps.extend([Step::DisableSource, Step::ForgetParked, Step::ReleaseGsis]);
    }
    let mut staged = false;
    for &(v, view) in &views {
        if !view.masked && !view.route_current {
            steps.push(Step::Stage(v));
            staged = true;
        }
    }
    if staged {
        steps.push(Step::Commit);
    }
    if changes.contains(&Change::Enabled) {
        steps.push(Step::EnableSource);
    }
    for &(v, view) in &views {
        let delivers_as_wanted = view.delivering && view.route_current;
        if !view.masked && !delivers_as_wanted {
            steps.push(Step::Deliver(v));
        }
    }
    steps
}

#[cfg(test)]
mod tests {
    use super::*;
    use msix_model::MsiMessage;

    fn view(masked: bool, delivering: bool, route_current: bool) -> VectorView {
        VectorView {
            masked,
            delivering,
            route_current,
        }
    }

    #[test]
    fn a_mask_holds_and_touches_no_route() {
        let steps = plan(&[Change::Masked { vector: 3 }], &[], |_| {
            view(true, true, true)
        });
        assert_eq!(steps, vec![Step::Hold(3)]);
    }

    #[test]
    fn an_unmask_commits_a_new_route_before_delivering() {
        let steps = plan(&[Change::Unmasked { vector: 1 }], &[], |_| {
            view(false, false, false)
        });
        assert_eq!(steps, vec![Step::Stage(1), Step::Commit, Step::Deliver(1)]);
        let steps = plan(&[Change::Unmasked { vector: 1 }], &[], |_| {
            view(false, false, true)
        });
        assert_eq!(
            steps,
            vec![Step::Deliver(1)],
            "route already held: no commit"
        );
    }

    #[test]
    fn message_changes_of_masked_vectors_cost_nothing_until_their_unmask() {
        let message = MsiMessage {
            address: 0xfee0_0000,
            data: 0x40,
        };
        let changes: Vec<Change> = (0..8)
            .map(|vector| Change::MessageChanged { vector, message })
            .collect();
        assert!(plan(&changes, &[], |_| view(true, false, false)).is_empty());
    }

    #[test]
    fn many_unmasks_share_one_commit_and_masks_come_first() {
        let changes = [
            Change::Unmasked { vector: 0 },
            Change::Masked { vector: 1 },
            Change::Unmasked { vector: 2 },
        ];
        let steps = plan(&changes, &[], |v| view(v == 1, v == 1, false));
        assert_eq!(
            steps,
            vec![
                Step::Hold(1),
                Step::Stage(0),
                Step::Stage(2),
                Step::Commit,
                Step::Deliver(0),
                Step::Deliver(2)
            ]
        );
    }

    #[test]
    fn disable_stops_the_source_forgets_parked_interrupts_and_frees_gsis() {
        let steps = plan(
            &[Change::Disabled, Change::Masked { vector: 0 }],
            &[],
            |_| view(true, true, true),
        );
        assert_eq!(
            steps,
            vec![
                Step::Hold(0),
                Step::DisableSource,
                Step::ForgetParked,
                Step::ReleaseGsis
            ]
        );
    }

    #[test]
    fn a_vector_to_retry_is_planned_without_any_change() {
        let steps = plan(&[], &[5], |_| view(false, false, true));
        assert_eq!(steps, vec![Step::Deliver(5)]);
        let steps = plan(&[], &[5], |_| view(true, true, true));
        assert_eq!(steps, vec![Step::Hold(5)]);
    }

    #[test]
    fn enable_comes_after_the_commit_and_before_deliveries() {
        let steps = plan(
            &[Change::Enabled, Change::Unmasked { vector: 0 }],
            &[],
            |_| view(false, false, false),
        );
        assert_eq!(
            steps,
            vec![
                Step::Stage(0),
                Step::Commit,
                Step::EnableSource,
                Step::Deliver(0)
            ]
        );
    }
}
