//! The accelerator's events in scenarios: the kebab-case names of their
//! kinds (`route-rejected` for [`EventKind::RouteRejected`]), and the
//! ledger of events reported but not yet consumed by an `expect event`.

use msix_accel::{AccelEvent, EventKind};

use super::target::Target;

/// The scenario name of `kind`: its Rust name in kebab case.
pub fn kind_name(kind: EventKind) -> String {
    let mut name = String::new();
    for c in format!("{kind:?}").chars() {
        if c.is_ascii_uppercase() {
            if !name.is_empty() {
                name.push('-');
            }
            name.push(c.to_ascii_lowercase());
        } else {
            name.push(c);
        }
    }
    name
}

/// Every kind's scenario name, in declaration order.
pub fn kind_names() -> Vec<String> {
    EventKind::ALL.into_iter().map(kind_name).collect()
}

/// The kind a scenario names `name`.
pub fn kind_named(name: &str) -> Option<EventKind> {
    EventKind::ALL.into_iter().find(|&k| kind_name(k) == name)
}

/// Events every device reported that no `expect event` has consumed yet.
#[derive(Debug, Default)]
pub(super) struct Ledger {
    unconsumed: Vec<AccelEvent>,
}

impl Ledger {
    /// Takes what the target's devices reported since the last call;
    /// false when the target reports no events.
    pub fn collect(&mut self, target: &dyn Target) -> bool {
        match target.take_events() {
            Some(events) => {
                self.unconsumed.extend(events);
                true
            }
            None => false,
        }
    }

    /// Removes every collected event of `kind` from `device` (about
    /// `entry`, when given); returns how many.
    pub fn consume(&mut self, device: u8, kind: EventKind, entry: Option<u16>) -> usize {
        let before = self.unconsumed.len();
        self.unconsumed.retain(|e| {
            !(e.device == u32::from(device)
                && e.kind == kind
                && entry.is_none_or(|v| e.vector == Some(v)))
        });
        before - self.unconsumed.len()
    }

    /// The oldest event not consumed, if any.
    pub fn first(&self) -> Option<&AccelEvent> {
        self.unconsumed.first()
    }

    /// The unconsumed events, for a failure message.
    pub fn describe(&self) -> String {
        if self.unconsumed.is_empty() {
            return "none".into();
        }
        self.unconsumed
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_a_distinct_kebab_name_that_reads_back() {
        assert_eq!(kind_name(EventKind::RouteRejected), "route-rejected");
        assert_eq!(
            kind_name(EventKind::FastPathUnserviced),
            "fast-path-unserviced"
        );
        let names = kind_names();
        for (k, name) in EventKind::ALL.into_iter().zip(&names) {
            assert_eq!(kind_named(name), Some(k));
            assert!(name.chars().all(|c| c.is_ascii_lowercase() || c == '-'));
        }
        let mut unique = names.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), names.len());
        assert_eq!(kind_named("RouteRejected"), None);
    }

    fn event(device: u32, vector: Option<u16>, kind: EventKind) -> AccelEvent {
        AccelEvent {
            device,
            vector,
            kind,
            errno: None,
            detail: String::new(),
        }
    }

    #[test]
    fn consuming_removes_only_the_matching_events() {
        let mut l = Ledger {
            unconsumed: vec![
                event(0, Some(0), EventKind::RouteRejected),
                event(1, Some(0), EventKind::RouteRejected),
                event(0, Some(3), EventKind::RouteRejected),
                event(0, Some(0), EventKind::GsiExhausted),
            ],
        };
        assert_eq!(l.consume(0, EventKind::RouteRejected, Some(0)), 1);
        assert_eq!(l.consume(0, EventKind::RouteRejected, Some(0)), 0);
        assert_eq!(l.consume(2, EventKind::RouteRejected, None), 0);
        assert_eq!(l.consume(1, EventKind::RouteRejected, None), 1);
        assert_eq!(
            l.first(),
            Some(&event(0, Some(3), EventKind::RouteRejected))
        );
        assert_eq!(l.consume(0, EventKind::RouteRejected, None), 1);
        assert_eq!(
            l.unconsumed,
            vec![event(0, Some(0), EventKind::GsiExhausted)]
        );
        assert!(l.describe().contains("GsiExhausted"), "{}", l.describe());
    }
}
