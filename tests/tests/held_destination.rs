//! Where a held interrupt goes (docs/semantics.md, "Held interrupts"): to
//! the message the entry has when the vector is unmasked, on both mask
//! paths. The guest unmasks an entry holding an interrupt and rewrites its
//! data right after; the held interrupt must land on the old data's IDT
//! vector every time. Without source masking the irqfd path used to leave
//! it to KVM's assign-time injection, which runs later from a workqueue
//! with whatever route is current then (the newer message, most of the
//! time), while source masking delivered it at the unmask.

#[allow(dead_code)] // each test file uses its own part of the shared waits
#[path = "support/settle.rs"]
mod settle;

#[path = "support/masked_entry.rs"]
mod masked_entry;

use msix_accel::Policy;
use testvm::{Program, Width};

const TRIALS: usize = 40;
const OLD_IDT: u8 = 0x50;
const NEW_IDT: u8 = 0x51;

fn trial(policy: Policy, maskable: bool) -> (u64, u64) {
    let r = masked_entry::masked_entry_rig(policy, maskable, OLD_IDT);
    // Held while masked.
    r.source.fire(0).unwrap();
    assert!(r.accel.pending(0).unwrap());
    // Unmask, then at once a new message for the now-unmasked entry.
    let mut p = Program::new();
    p.write(Width::W32, r.entry(0, 12), 0);
    p.write(Width::W32, r.entry(0, 8), u64::from(NEW_IDT));
    r.vm.run(0, &p).unwrap();
    // Whichever vector it went to, it went once: wait for one, then a
    // sentinel proves nothing more is on its way.
    settle::wait_for(
        "the held interrupt to be delivered",
        r.vm.watchdog(),
        || settle::calls(&r),
        || r.vm.irq_count(OLD_IDT) + r.vm.irq_count(NEW_IDT) > 0,
    );
    r.vm.sentinel(0).unwrap();
    (r.vm.irq_count(OLD_IDT), r.vm.irq_count(NEW_IDT))
}

fn the_held_interrupt_goes_to_the_message_at_the_unmask(maskable: bool) {
    for policy in Policy::ALL {
        let mut to_new = 0;
        for _ in 0..TRIALS {
            let (old, new) = trial(policy, maskable);
            assert_eq!(old + new, 1, "{policy} maskable={maskable}: delivered once");
            to_new += new;
        }
        assert_eq!(
            to_new, 0,
            "{policy} maskable={maskable}: {to_new} of {TRIALS} held interrupts went to the \
             message written after the unmask"
        );
    }
}

#[test]
fn on_the_irqfd_path_the_held_interrupt_goes_to_the_message_at_the_unmask() {
    the_held_interrupt_goes_to_the_message_at_the_unmask(false);
}

#[test]
fn with_source_masking_the_held_interrupt_goes_to_the_message_at_the_unmask() {
    the_held_interrupt_goes_to_the_message_at_the_unmask(true);
}
