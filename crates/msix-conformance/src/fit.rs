//! Whether a scenario fits a real assigned device (`msix-bench scenario
//! --vfio`): the reason it is skipped there, or none. Decided from the
//! parsed file and what the device offers, before any guest is built.

use super::step::{MsixAction, Scenario, Step};

/// What a real device offers scenarios.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceOffer {
    /// The device, as reasons name it (`igb 0000:00:03.0`).
    pub name: String,
    /// Its MSI-X table size.
    pub table_size: u16,
    /// How many vectors, from 0, its registers can raise; or why it cannot
    /// be made to raise any (no trigger known for its family).
    pub raisable: Result<u16, String>,
    /// Why its vectors cannot be masked at the source (its MSI-X table
    /// cannot be mapped); None when they can.
    pub unmaskable: Option<String>,
    /// Why it cannot run a `device storm`; None when it can.
    pub no_storm: Option<String>,
}

/// Why a file that raises a vector while MSI-X is disabled is not run on a
/// real device.
pub const RAISED_WHILE_DISABLED: &str = "a real function with MSI-X disabled signals INTx, which \
     vfio-pci leaves unhandled, or keeps the cause and sends it once MSI-X is enabled again; the \
     file expects the software source's behaviour (the raise is dropped)";

/// The first line that raises a vector (`device fire` or `device storm
/// start`), with the entries it raises.
fn raises(scenario: &Scenario) -> impl Iterator<Item = (u32, &Step, Vec<u16>)> {
    scenario.steps.iter().filter_map(|(line, step)| match step {
        Step::Fire { entry, .. } => Some((*line, step, vec![*entry])),
        Step::StormStart { entries, .. } => Some((*line, step, entries.clone())),
        _ => None,
    })
}

/// The first line that raises a vector while MSI-X is disabled (it starts
/// disabled; only `msix enable|disable` change it in a file).
fn raised_while_disabled(scenario: &Scenario) -> Option<u32> {
    let mut enabled = false;
    for (line, step) in &scenario.steps {
        match step {
            Step::Msix {
                action: MsixAction::Enable,
                ..
            } => enabled = true,
            Step::Msix {
                action: MsixAction::Disable,
                ..
            } => enabled = false,
            Step::Fire { .. } | Step::StormStart { .. } if !enabled => return Some(*line),
            _ => {}
        }
    }
    None
}

/// Why `scenario` cannot run on `device`, or None when it fits: one device,
/// no more vectors than its table has, source masking only when its table
/// can be mapped, raises only of vectors its trigger can raise, storms only
/// where it can storm, and no raise while MSI-X is disabled.
pub fn skip_reason(scenario: &Scenario, device: &DeviceOffer) -> Option<String> {
    let name = &device.name;
    if scenario.devices > 1 {
        return Some(format!(
            "needs {} devices: --vfio drives one real device",
            scenario.devices
        ));
    }
    if scenario.vectors > device.table_size {
        return Some(format!(
            "needs {} vectors: {name} has {}",
            scenario.vectors, device.table_size
        ));
    }
    if let (true, Some(why)) = (scenario.maskable, &device.unmaskable) {
        return Some(format!(
            "source maskable: {name} cannot mask at the source: {why}"
        ));
    }
    for (line, step, entries) in raises(scenario) {
        let raisable = match &device.raisable {
            Ok(n) => *n,
            Err(why) => return Some(format!("line {line} raises a vector: {why}")),
        };
        if let Some(e) = entries.iter().find(|&&e| e >= raisable) {
            return Some(format!(
                "line {line} raises entry {e}: {name} can raise entries 0..{raisable}"
            ));
        }
        if let (Step::StormStart { .. }, Some(why)) = (step, &device.no_storm) {
            return Some(format!("line {line}: device storm: {why}"));
        }
    }
    raised_while_disabled(scenario).map(|line| {
        format!("line {line} raises a vector while MSI-X is disabled: {RAISED_WHILE_DISABLED}")
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse;

    fn offer(table_size: u16) -> DeviceOffer {
        DeviceOffer {
            name: "igb 0000:00:03.0".into(),
            table_size,
            raisable: Ok(table_size),
            unmaskable: None,
            no_storm: Some("no storms here".into()),
        }
    }

    fn reason(text: &str, device: &DeviceOffer) -> Option<String> {
        skip_reason(&parse("t.scn", text).unwrap(), device)
    }

    const FITS: &str = "vectors 4\nmsix enable\nguest msg 0 vector=0x40 cpu=0\n\
                        guest write32 table+0x0c 0\ndevice fire 3 count=2\nexpect irq 0x40 = 1\n";

    #[test]
    fn a_file_within_the_devices_vectors_and_features_runs() {
        assert_eq!(reason(FITS, &offer(4)), None);
        assert_eq!(reason(FITS, &offer(10)), None);
        let maskable = format!("source maskable\n{FITS}");
        assert_eq!(reason(&maskable, &offer(5)), None);
    }

    #[test]
    fn more_vectors_than_the_table_has_is_skipped() {
        let r = reason(FITS, &offer(3)).unwrap();
        assert_eq!(r, "needs 4 vectors: igb 0000:00:03.0 has 3");
    }

    #[test]
    fn several_devices_are_skipped_first() {
        let r = reason("devices 2\nvectors 16\nmsix enable\n", &offer(4)).unwrap();
        assert!(r.starts_with("needs 2 devices"), "{r}");
    }

    #[test]
    fn source_maskable_needs_a_mappable_table_and_plain_does_not() {
        let mut d = offer(8);
        d.unmaskable = Some("no MSIX_MAPPABLE capability".into());
        let r = reason(&format!("source maskable\n{FITS}"), &d).unwrap();
        assert!(
            r.starts_with(
                "source maskable: igb 0000:00:03.0 cannot mask at the source: no MSIX_MAPPABLE"
            ),
            "{r}"
        );
        assert_eq!(reason(&format!("source plain\n{FITS}"), &d), None);
    }

    #[test]
    fn without_a_trigger_only_files_that_raise_nothing_run() {
        let mut d = offer(8);
        d.raisable = Err("no known trigger for this device family".into());
        let r = reason(FITS, &d).unwrap();
        assert!(
            r.starts_with("line 5 raises a vector: no known trigger"),
            "{r}"
        );
        let quiet = "vectors 4\nmsix enable\nguest write32 table+0x0c 0\nexpect exits <= 10\n";
        assert_eq!(reason(quiet, &d), None);
    }

    #[test]
    fn an_entry_past_what_the_trigger_raises_is_skipped() {
        let mut d = offer(8);
        d.raisable = Ok(3);
        let r = reason(FITS, &d).unwrap();
        assert_eq!(
            r,
            "line 5 raises entry 3: igb 0000:00:03.0 can raise entries 0..3"
        );
    }

    #[test]
    fn a_storm_is_skipped_where_the_device_cannot_storm() {
        let storm = "vectors 2\nmsix enable\ndevice storm start 0,1\ndevice storm stop\n";
        let r = reason(storm, &offer(2)).unwrap();
        assert_eq!(r, "line 3: device storm: no storms here");
        let mut d = offer(2);
        d.no_storm = None;
        assert_eq!(reason(storm, &d), None);
    }

    #[test]
    fn a_raise_while_msix_is_disabled_is_skipped_with_its_line() {
        let before_enable = "vectors 2\ndevice fire 0\nmsix enable\ndevice fire 0\n";
        let r = reason(before_enable, &offer(2)).unwrap();
        assert!(
            r.starts_with("line 2 raises a vector while MSI-X is disabled"),
            "{r}"
        );
        let after_disable = "vectors 2\nmsix enable\ndevice fire 1\nmsix disable\n\
                             msix enable\ndevice fire 1\nmsix disable\ndevice fire 1\n";
        let r = reason(after_disable, &offer(2)).unwrap();
        assert!(r.starts_with("line 8 raises"), "{r}");
        // Function mask is not disable: the function holds the message.
        let masked = "vectors 2\nmsix enable\nmsix mask-all\ndevice fire 1\nmsix unmask-all\n";
        assert_eq!(reason(masked, &offer(2)), None);
    }

    /// The checked-in scenarios on a 5- and a 10-vector NIC that can mask
    /// at the source and raise every vector, but not storm.
    #[test]
    fn checked_in_scenarios_skip_for_the_documented_reasons() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/scenarios");
        let read = |name: &str| {
            let path = format!("{dir}/{name}");
            parse(&path, &std::fs::read_to_string(&path).unwrap()).unwrap()
        };
        let (e1000e, igb) = (offer(5), offer(10));
        for runs_on_both in [
            "contract-example.scn",
            "contract-example-maskable.scn",
            "message-change-while-masked.scn",
            "odd-accesses-maskable.scn",
            "upper-address-without-x2apic-api.scn",
            "linux-cycle-trap.scn",
            "two-vcpus-toggle-maskable.scn",
        ] {
            let s = read(runs_on_both);
            assert_eq!(skip_reason(&s, &e1000e), None, "{runs_on_both}");
            assert_eq!(skip_reason(&s, &igb), None, "{runs_on_both}");
        }
        for igb_only in ["layout-shared-page.scn", "layout-small-bars-maskable.scn"] {
            let s = read(igb_only);
            assert_eq!(skip_reason(&s, &igb), None, "{igb_only}");
            let r = skip_reason(&s, &e1000e).unwrap();
            assert!(r.starts_with("needs 8 vectors"), "{igb_only}: {r}");
        }
        let r = skip_reason(&read("mask-stops-delivery.scn"), &igb).unwrap();
        assert!(r.starts_with("needs 16 vectors"), "{r}");
        let r = skip_reason(&read("two-devices-independent.scn"), &igb).unwrap();
        assert!(r.starts_with("needs 2 devices"), "{r}");
        let r = skip_reason(&read("storm-during-toggling.scn"), &igb).unwrap();
        assert!(r.contains("device storm"), "{r}");
        let r = skip_reason(&read("first-unmask-and-reenable.scn"), &igb).unwrap();
        assert!(r.contains("while MSI-X is disabled"), "{r}");
    }
}
