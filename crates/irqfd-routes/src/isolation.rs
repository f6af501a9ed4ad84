//! Isolating the routes a hypervisor refuses, so that one bad route (a
//! guest's malformed message) never blocks the routes of the VM's other
//! vectors and devices.

use std::collections::BTreeMap;

use crate::{Error, Gsi, GsiRouting, MsiMessage, RejectedRoute, Result};

/// The routes committed, the calls made and the routes refused.
pub(crate) type Isolated = (BTreeMap<Gsi, MsiMessage>, u32, Vec<RejectedRoute>);

/// Called after the hypervisor refused `staged` as a whole with EINVAL (a
/// route it does not accept). The routes that differ from `committed`
/// (what the hypervisor held) are the suspects. First the table is sent
/// with every suspect left at its committed value (or absent): if that
/// fails too, the fault is not a new route and the error is returned with
/// the hypervisor unchanged. Then groups of suspects are tried on top of
/// everything accepted so far, starting with all of them: a group that goes
/// through stays, a group that fails is split in halves, down to single
/// routes, and a single route is refused only when a call holding just it
/// on top of the accepted ones failed with EINVAL. Every successful call
/// holds everything accepted so far, so the last one leaves the hypervisor
/// with all accepted routes. Calls, the refused whole table included:
/// about 3 + 2·r·log2(s) for r refused routes among s suspects.
pub(crate) fn isolate_rejected(
    routing: &GsiRouting,
    staged: &BTreeMap<Gsi, MsiMessage>,
    committed: &BTreeMap<Gsi, MsiMessage>,
) -> Result<Isolated> {
    let suspects: Vec<(Gsi, MsiMessage)> = staged
        .iter()
        .filter(|(gsi, message)| committed.get(gsi) != Some(message))
        .map(|(gsi, message)| (*gsi, *message))
        .collect();
    // The base: every staged GSI at its committed route; removals stay removed.
    let mut accepted: BTreeMap<Gsi, MsiMessage> = staged
        .keys()
        .filter_map(|gsi| committed.get(gsi).map(|m| (*gsi, *m)))
        .collect();
    routing.send(&accepted)?;
    // The refused whole table, then the base.
    let mut calls = 2;
    let mut rejected = Vec::new();
    let mut groups = vec![suspects];
    while let Some(group) = groups.pop() {
        if group.is_empty() {
            continue;
        }
        let mut trial = accepted.clone();
        trial.extend(group.iter().copied());
        calls += 1;
        match routing.send(&trial) {
            Ok(()) => accepted = trial,
            Err(Error::SetGsiRouting { errno, .. }) if errno == libc::EINVAL => {
                if let [(gsi, message)] = group[..] {
                    rejected.push(RejectedRoute {
                        gsi,
                        message,
                        errno,
                    });
                } else {
                    let (first, second) = group.split_at(group.len() / 2);
                    groups.push(second.to_vec());
                    groups.push(first.to_vec());
                }
            }
            Err(e) => return Err(e),
        }
    }
    Ok((accepted, calls, rejected))
}
