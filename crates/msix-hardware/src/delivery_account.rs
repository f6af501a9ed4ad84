//! The account of a scenario run on a real device: raises asked of the
//! device, messages it sent (its host IRQs' counts), interrupts the
//! accelerator delivered itself, and deliveries the guest took.
//!
//! Raises made while an entry is masked may legitimately end as one
//! pending message, so fewer messages and deliveries than raises are not
//! news. Two things are: the device sending more messages than it was
//! asked for, and the guest taking more interrupts than the device sent
//! plus the accelerator delivered itself (what lies below the accelerator,
//! the hypervisor or the platform it runs on, delivered one twice). Either
//! is printed as an `INFO` line next to the run's verdict, saying whose
//! count is off; it changes no verdict.

use std::sync::Mutex;

use msix_accel::MsixAccelerator;
use testvm::TestVm;

use crate::host_irqs::host_msix_counts;

/// Raises per entry, and the device they went to.
#[derive(Debug)]
pub struct DeliveryAccount {
    bdf: String,
    raises: Mutex<Vec<u64>>,
}

impl DeliveryAccount {
    /// An empty account for device `bdf`, entries below `vectors`.
    pub fn new(bdf: String, vectors: u16) -> DeliveryAccount {
        DeliveryAccount {
            bdf,
            raises: Mutex::new(vec![0; usize::from(vectors)]),
        }
    }

    /// One raise of `entry` was asked of the device.
    pub fn raised(&self, entry: u16) {
        let mut raises = self
            .raises
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(r) = raises.get_mut(usize::from(entry)) {
            *r += 1;
        }
    }

    /// A line per entry whose device sent more messages than it was
    /// raised, or whose guest deliveries exceed its device messages plus
    /// every delivery the accelerator made itself (none when the counts
    /// add up). Guest deliveries are counted on the IDT vector of the
    /// entry's current message.
    pub fn mismatches(&self, accel: &MsixAccelerator, vm: &TestVm) -> Vec<String> {
        let counts = match host_msix_counts(&self.bdf) {
            Ok(counts) => counts,
            Err(e) => return vec![format!("delivery account of {}: {e}", self.bdf)],
        };
        let raises = self
            .raises
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let software = accel.stats().pending_deliveries;
        let debug = accel.debug();
        counts
            .into_iter()
            .filter_map(|(entry, messages)| {
                let raised = *raises.get(usize::from(entry))?;
                let idt = (debug.entry(entry).ok()?.data & 0xff) as u8;
                let taken = vm.irq_count(idt);
                (messages > raised || taken > messages + software).then(|| {
                    format!(
                        "delivery account of {} entry {entry}: {raised} raises, {messages} \
                         device messages (host IRQs), {software} deliveries by the accelerator \
                         itself (all entries), IDT vector {idt:#x} taken {taken} times",
                        self.bdf
                    )
                })
            })
            .collect()
    }
}
