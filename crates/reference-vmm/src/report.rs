//! What the VMM prints (on stderr: stdout is the guest console) about the accelerators: a `VMM-STATS` line per
//! function on demand (a byte written to the statistics port) and at exit,
//! and a `VMM-EVENT` line per accelerator event as it arrives.
//!
//! A line holds the accelerator's counters since it was created (exits by
//! kind, fast-path unmasks, mask paths, events) and the host IRQs vfio-pci
//! holds for the function, counted in this host's /proc/interrupts.

use std::fmt::Write as _;
use std::sync::mpsc::Receiver;

use msix_accel::{AccelEvent, AccelStats};

use crate::pci::PciBus;

/// Userspace exits the accelerator handled: table and PBA accesses.
pub fn exits(s: &AccelStats) -> u64 {
    s.table_read_exits
        + s.mask_write_exits
        + s.unmask_write_exits
        + s.message_write_exits
        + s.other_table_write_exits
        + s.pba_read_exits
        + s.pba_write_exits
}

/// vfio-pci's MSI-X interrupts of `bdf` in /proc/interrupts
/// (`vfio-msix[N](BDF)`); None when the file cannot be read.
pub fn host_irqs(bdf: &str) -> Option<usize> {
    let text = std::fs::read_to_string("/proc/interrupts").ok()?;
    let suffix = format!("]({bdf})");
    Some(
        text.lines()
            .filter(|l| l.contains("vfio-msix[") && l.trim_end().ends_with(&suffix))
            .count(),
    )
}

/// One function's statistics line.
pub fn stats_line(label: &str, dev: usize, pci: &PciBus) -> String {
    let Some(f) = pci.functions().get(dev) else {
        return String::new();
    };
    let a = f.accelerator();
    let s = a.stats();
    let mut line = format!(
        "VMM-STATS {label} dev={dev} bdf={} policy={} source_masking={} exits={} \
         table_read={} mask_write={} unmask_write={} message_write={} other_write={} \
         pba_read={} fast_path_unmasks={} masks_at_source={} masks_by_irqfd={} unmasks={} \
         pending_deliveries={} relocation_lock_max_us={} relocation_slot_max_us={} events={}",
        f.name(),
        a.policy(),
        a.debug().source_masking(),
        exits(&s),
        s.table_read_exits,
        s.mask_write_exits,
        s.unmask_write_exits,
        s.message_write_exits,
        s.other_table_write_exits,
        s.pba_read_exits,
        s.fast_path_unmasks,
        s.masks_at_source,
        s.masks_by_irqfd_detach,
        s.unmasks,
        s.pending_deliveries,
        s.relocation_lock_max_ns / 1000,
        s.relocation_slot_max_ns / 1000,
        s.total_events(),
    );
    match host_irqs(f.name()) {
        Some(n) => {
            let _ = write!(line, " host_irqs={n}/{}", a.config().table_size);
        }
        None => line.push_str(" host_irqs=unknown"),
    }
    line
}

/// The statistics port: one line per function, labelled with the byte the
/// guest wrote.
pub fn print_marks(pci: &PciBus, mark: u8) {
    for dev in 0..pci.functions().len() {
        eprintln!("{}", stats_line(&format!("mark={mark}"), dev, pci));
    }
}

/// Prints every event as it arrives; returns when every accelerator (and
/// so every sender) is gone.
pub fn print_events(events: Receiver<AccelEvent>) {
    for e in events {
        eprintln!("VMM-EVENT {e}");
    }
}
