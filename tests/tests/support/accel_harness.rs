//! A harness that drives a real `MsixAccelerator` (plan, executor, routing
//! table, placement) against `msix_hypervisor::fake::FakeVm` wrapped in a
//! `FaultyVm`, with a software source, and checks it against the pure
//! `msix-model` fed the same guest accesses. The harness plays KVM's part:
//! a guest write that matches an unmask ioeventfd is absorbed (and the
//! servicer services it later), an irqfd consumes its eventfd and injects
//! its GSI's route. Shared by `tests/tests/plan_executor.rs` (seeded runs
//! in `cargo test`) and the `accel_faults` fuzz target.
//!
//! After every step: the table the guest reads is the reference model's;
//! a delivery carries the vector's current message and happens only while
//! the vector is unmasked (or after the host refused every way to mask it,
//! reported as MaskFailed); events are those the step could cause. After a
//! quiesce (faults healed, one exit to retry): every vector converged; no
//! interrupt fired on a vector was lost (delivered, or pending while held);
//! nothing leaked (irqfds, GSIs, ioeventfds, memslots).

use std::collections::BTreeSet;
use std::os::unix::io::AsRawFd;
use std::sync::Arc;

use irqfd_routes::{GsiRouting, IrqchipRoutes, RouteState};
use msix_accel::{AccelConfig, EventKind, EventLog, MaskPath, MsixAccelerator, MsixSource, Policy};
use msix_hypervisor::fake::FakeVm;
use msix_hypervisor::{FaultyVm, Op, Trigger};
use msix_model::{MsixModel, MsixState};
use vfio_vectors::software::{FireOutcome, SoftwareSource};

/// Where the harness places the table.
pub const TABLE_GPA: u64 = 0x1000_0000;
const PAGE: u64 = 4096;

/// One step of a run.
#[derive(Clone, Debug)]
pub enum Step {
    /// A guest write in the table window (any width and offset).
    TableWrite { offset: u64, bytes: Vec<u8> },
    /// A well-formed guest write of one dword of one entry.
    TableField { vector: u16, dword: u8, value: u32 },
    /// A guest read in the table window or the PBA.
    Read { pba: bool, offset: u64, len: u8 },
    /// Message Control written through config space.
    MessageControl(u16),
    /// The device raises a vector.
    Fire(u16),
    /// The servicer services absorbed unmasks.
    Service,
    /// The `nth` next call of `op` fails with `errno`.
    Fault { op: Op, nth: u64, errno: i32 },
    /// Every armed fault is disarmed.
    Heal,
    /// Memory decode off (source masking suspended first).
    DecodeOff,
    /// Memory decode on at `TABLE_GPA + bar * 16 MiB`.
    DecodeOn { bar: u8 },
    /// Function reset.
    Reset,
    /// Faults healed, one exit to retry, everything checked.
    Quiesce,
}

/// The harness.
pub struct Harness {
    accel: Arc<MsixAccelerator>,
    faulty: Arc<FaultyVm<FakeVm>>,
    table: Arc<GsiRouting>,
    events: Arc<EventLog>,
    source: SoftwareSource,
    reference: MsixModel,
    vectors: u16,
    /// Where the table is placed now, if it is.
    placed: Option<u64>,
    /// A fire on the vector has not been delivered yet.
    outstanding: Vec<bool>,
    mask_failed: BTreeSet<u16>,
    faulted: bool,
    /// Entries whose unmask write an ioeventfd absorbed since the last
    /// quiesce: the accelerator may not have applied it yet (the `fast`
    /// policy's deviation: Vector Control still reads 1 until then, up to
    /// the coalescing window for an unmask that needs a route commit).
    absorbed: BTreeSet<u16>,
    /// Each vector's effective mask and message before the current step: a
    /// delivery made while a step runs may come from either side of it (an
    /// exit first applies what was left to retry, then the access).
    before: Vec<(bool, (u64, u32))>,
}

fn without_pending(mut s: MsixState) -> MsixState {
    s.pending.clear();
    s
}

impl Harness {
    /// A device of `vectors` entries under `policy`, placed at `TABLE_GPA`.
    pub fn new(vectors: u16, policy: Policy, maskable: bool, max_routes: u32) -> Harness {
        let fake = FakeVm::new(max_routes).with_x2apic_format();
        let faulty = Arc::new(FaultyVm::new(fake));
        let table = Arc::new(
            GsiRouting::new(faulty.clone(), IrqchipRoutes::X86KernelIrqchip)
                .expect("routing table"),
        );
        let source = if maskable {
            SoftwareSource::maskable(vectors)
        } else {
            SoftwareSource::new(vectors)
        }
        .expect("source");
        let config = AccelConfig::new(vectors, 0, 1)
            .with_policy(policy)
            .with_source_masking(maskable)
            // The harness is the servicer and never lets the window end on
            // its own (a Quiesce ends it); a small batch exercises the
            // count that applies waiting unmasks at an exit.
            .with_unmask_coalescing(std::time::Duration::from_secs(3600), 3)
            // Entries past the second unmask with an exit under fast.
            .with_fast_entries(2);
        let events = Arc::new(EventLog::new());
        let accel = Arc::new(
            MsixAccelerator::new(
                faulty.clone(),
                table.clone(),
                Box::new(source.clone()),
                config,
                events.clone(),
            )
            .expect("accelerator"),
        );
        // The harness is the servicer.
        accel.register_servicer();
        accel
            .place(TABLE_GPA, TABLE_GPA + u64::from(config.pba.offset))
            .expect("place");
        let reference = MsixModel::new(vectors, config.table, config.pba).expect("reference model");
        Harness {
            accel,
            faulty,
            table,
            events,
            source,
            reference,
            vectors,
            placed: Some(TABLE_GPA),
            outstanding: vec![false; usize::from(vectors)],
            mask_failed: BTreeSet::new(),
            faulted: false,
            absorbed: BTreeSet::new(),
            before: Vec::new(),
        }
    }

    fn fake(&self) -> &FakeVm {
        self.faulty.inner()
    }

    fn pba_offset(&self) -> u64 {
        u64::from(self.accel.config().pba.offset)
    }

    /// What KVM's irqfds do: delivers what the eventfds hold, and checks
    /// each delivery against the reference.
    fn inject(&mut self) -> Result<(), String> {
        for delivery in self.fake().inject() {
            let got = (delivery.message.address, delivery.message.data);
            let vector = match delivery.gsi {
                // The eventfd identifies the vector (its GSI may already be
                // given back when the harness looks).
                Some(gsi) => (0..self.vectors)
                    .find(|&v| {
                        self.source.trigger(v).map(|t| t.as_raw_fd()).ok() == delivery.eventfd
                    })
                    .ok_or_else(|| format!("delivery on GSI {gsi} through a foreign eventfd"))?,
                // A held interrupt the accelerator delivered itself at an
                // unmask (KVM_SIGNAL_MSI): a vector that held one, with that
                // message now or before the step (the step may have
                // rewritten it right after the unmask).
                // (A step that forgets pending bits, a reset or a disable,
                // may have applied such an unmask first.)
                None => {
                    let fits = |v: u16| {
                        let before = self.before.get(usize::from(v)).copied();
                        self.view(v).is_ok_and(|(masked, wanted)| {
                            let (masked_before, wanted_before) = before.unwrap_or((masked, wanted));
                            !(masked && masked_before) && (wanted == got || wanted_before == got)
                        })
                    };
                    (0..self.vectors)
                        .find(|&v| self.outstanding[usize::from(v)] && fits(v))
                        .or_else(|| (0..self.vectors).find(|&v| fits(v)))
                }
                .ok_or_else(|| {
                    format!("an MSI {got:x?} signalled directly for no unmasked vector holding one")
                })?,
            };
            let (masked, wanted) = self.view(vector)?;
            let (masked_before, wanted_before) = self
                .before
                .get(usize::from(vector))
                .copied()
                .unwrap_or((masked, wanted));
            let excused = self.mask_failed.contains(&vector);
            if masked && masked_before && !excused {
                return Err(format!("vector {vector} delivered while masked"));
            }
            if !excused && got != wanted && got != wanted_before {
                return Err(format!(
                    "vector {vector} delivered {got:x?}, its entry says {wanted:x?} (before the step {wanted_before:x?})"
                ));
            }
            self.outstanding[usize::from(vector)] = false;
        }
        Ok(())
    }

    /// The reference's effective mask and message of `vector`.
    fn view(&self, vector: u16) -> Result<(bool, (u64, u32)), String> {
        let masked = self
            .reference
            .is_masked(vector)
            .map_err(|e| e.to_string())?;
        let m = self
            .reference
            .entry(vector)
            .map_err(|e| e.to_string())?
            .message();
        Ok((masked, (m.address, m.data)))
    }

    fn take_events(&mut self) -> Result<(), String> {
        for e in self.events.take() {
            if std::env::var_os("HARNESS_TRACE").is_some() {
                eprintln!("  event {e}");
            }
            if e.kind == EventKind::MaskFailed {
                if let Some(v) = e.vector {
                    self.mask_failed.insert(v);
                }
            }
            let guest_caused = matches!(e.kind, EventKind::RouteRejected | EventKind::GsiExhausted);
            if !guest_caused && !self.faulted {
                return Err(format!("event without any fault: {e}"));
            }
        }
        Ok(())
    }

    fn forget_pending(&mut self) {
        self.outstanding.fill(false);
    }

    /// Runs one step and checks what must hold after it.
    pub fn step(&mut self, step: &Step) -> Result<(), String> {
        self.before = (0..self.vectors)
            .map(|v| self.view(v))
            .collect::<Result<_, _>>()?;

        match step {
            Step::TableWrite { offset, bytes } => {
                let offset = offset % PAGE;
                let bytes = &bytes[..bytes.len().min(8)];
                let width = [1usize, 2, 4, 8]
                    .into_iter()
                    .rev()
                    .find(|w| *w <= bytes.len().max(1))
                    .unwrap_or(1);
                if !bytes.is_empty() && offset % PAGE + width as u64 <= PAGE {
                    self.guest_write(offset, &bytes[..width]);
                }
            }
            Step::TableField {
                vector,
                dword,
                value,
            } => {
                let offset = u64::from(vector % self.vectors) * 16 + u64::from(dword % 4) * 4;
                self.guest_write(offset, &value.to_le_bytes());
            }
            Step::Read { pba, offset, len } => {
                if let Some(table) = self.placed {
                    let len = [1usize, 2, 4, 8][usize::from(*len % 4)];
                    let mut data = vec![0u8; len];
                    if *pba {
                        let offset = offset % 16;
                        self.accel
                            .mmio_read(table + self.pba_offset() + offset, &mut data);
                    } else {
                        let offset = offset % (PAGE - 8);
                        self.accel.mmio_read(table + offset, &mut data);
                        let mut expected = vec![0u8; len];
                        self.reference.read_table(offset, &mut expected);
                        // A read exits only where the table traps; where it is
                        // mapped the guest reads the shadow, checked at quiesce.
                        if data != expected {
                            return Err(format!(
                                "table read at {offset:#x}: {data:?}, reference {expected:?}"
                            ));
                        }
                    }
                }
            }
            Step::MessageControl(value) => {
                let was_enabled = self.reference.is_enabled();
                let _ = self.accel.write_message_control(*value);
                self.reference.write_message_control(*value);
                if was_enabled && !self.reference.is_enabled() {
                    self.forget_pending();
                }
            }
            Step::Fire(vector) => {
                let v = vector % self.vectors;
                match self.source.fire(v).map_err(|e| e.to_string())? {
                    FireOutcome::Signalled | FireOutcome::Latched => {
                        self.outstanding[usize::from(v)] = true
                    }
                    FireOutcome::Dropped => {}
                }
            }
            Step::Service => {
                // A servicer's wake-up; the coalescing window is a Quiesce.
                self.accel.service_fast_path_cheap();
            }
            Step::Fault { op, nth, errno } => {
                self.faulty.fail(*op, Trigger::Nth(*nth), *errno);
                self.faulted = true;
            }
            Step::Heal => self.faulty.heal(),
            Step::DecodeOff => {
                if self.placed.is_some() {
                    let _ = self.accel.suspend_source_masking();
                    let _ = self.accel.remove();
                    self.placed = None;
                }
            }
            Step::DecodeOn { bar } => {
                let table = TABLE_GPA + u64::from(bar % 4) * 0x100_0000;
                let result = match self.placed {
                    Some(_) => self.accel.move_bar(table, table + self.pba_offset()),
                    None => self.accel.place(table, table + self.pba_offset()),
                };
                if result.is_ok() {
                    self.placed = Some(table);
                    self.accel.resume_source_masking();
                }
            }
            Step::Reset => {
                let _ = self.accel.reset();
                self.reference.reset();
                self.forget_pending();
            }
            Step::Quiesce => return self.quiesce(),
        }
        self.take_events()?;
        self.inject()?;
        let model = without_pending(self.accel.debug().model_state());
        let mut reference = without_pending(self.reference.snapshot());
        for v in &self.absorbed {
            // Not applied yet: the accelerator's model may still have the
            // vector masked.
            let i = usize::from(*v);
            if model.entries[i].vector_control & 1 == 1 {
                reference.entries[i].vector_control = model.entries[i].vector_control;
            }
        }
        if model != reference {
            return Err(format!(
                "model {model:?} differs from the reference {reference:?} (absorbed, unserviced: {:?})",
                self.absorbed
            ));
        }
        Ok(())
    }

    fn guest_write(&mut self, offset: u64, bytes: &[u8]) {
        let Some(table) = self.placed else {
            return;
        };
        let gpa = table + offset;
        // KVM first: an ioeventfd absorbs a matching write without an exit.
        if self.fake().guest_write(gpa, bytes) {
            self.absorbed.insert((offset / 16) as u16);
        } else {
            // Under fast, an unmask that exits (its entry has no ioeventfd)
            // may wait the same way as an absorbed one.
            let unmask = offset % 16 == 12 && bytes == [0, 0, 0, 0];
            if unmask && self.accel.policy() == Policy::Fast {
                self.absorbed.insert((offset / 16) as u16);
            }
            self.accel.mmio_write(gpa, bytes);
        }
        self.reference.write_table(offset, bytes);
    }

    /// A one-line view of `vector` inside the accelerator, for failures.
    pub fn describe(&self, vector: u16) -> String {
        let d = self.accel.debug();
        let vc = self.placed.map(|t| t + u64::from(vector) * 16 + 12);
        format!(
            "vector {vector}: placed {:x?} fd {:?} fake {:?} retired {} stuck {} policy {} fast {} | masked {:?} path {:?} gsi {:?} route {:?} retry {:?} irqfd {:?}",
            self.placed,
            d.unmask_fd(vector),
            vc.and_then(|g| self.fake().ioeventfd_at(g, 0)),
            d.retired_pending(),
            d.retired_stuck(),
            self.accel.policy(),
            self.accel.fast_entries(),
            d.is_masked(vector),
            d.mask_path(vector),
            d.gsi(vector),
            d.route(vector),
            d.retrying(vector),
            d.irqfd_attached(vector)
        )
    }

    /// Heals the faults, lets the accelerator retry (one exit, one
    /// service, the retired ioeventfds undone), and checks convergence.
    pub fn quiesce(&mut self) -> Result<(), String> {
        self.faulty.heal();
        self.accel.service_fast_path();
        self.absorbed.clear();
        if let Some(table) = self.placed {
            let mut data = [0u8; 4];
            self.accel.mmio_read(table + self.pba_offset(), &mut data);
        }
        self.accel.undo_retired();
        self.take_events()?;
        self.inject()?;
        let debug = self.accel.debug();
        let mut attached = 0;
        let mut gsis = 0;
        for v in 0..self.vectors {
            let masked = self.reference.is_masked(v).map_err(|e| e.to_string())?;
            let path = debug.mask_path(v).map_err(|e| e.to_string())?;
            let route = debug.route(v).map_err(|e| e.to_string())?;
            let held = path != MaskPath::Unmasked;
            let outstanding = self.outstanding[usize::from(v)];
            let pending = self.accel.pending(v).map_err(|e| e.to_string())?;
            if masked {
                if !held {
                    return Err(format!("masked vector {v} still delivers after quiesce"));
                }
            } else if held {
                let refused = matches!(route, RouteState::Rejected { .. });
                let no_gsi = debug.gsi(v).map_err(|e| e.to_string())?.is_none();
                if !(refused || no_gsi) {
                    return Err(format!(
                        "unmasked vector {v} held after quiesce ({route:?})"
                    ));
                }
            } else if !matches!(route, RouteState::Committed(_)) {
                return Err(format!(
                    "vector {v} delivers without a committed route: {route:?}"
                ));
            }
            if outstanding && !(held && pending) {
                return Err(format!(
                    "vector {v} fired and was neither delivered nor pending (masked {masked}, path {path:?})"
                ));
            }
            attached += usize::from(debug.irqfd_attached(v).map_err(|e| e.to_string())?);
            gsis += usize::from(debug.gsi(v).map_err(|e| e.to_string())?.is_some());
        }
        if self.fake().irqfd_count() != attached {
            return Err(format!(
                "{} irqfds registered, {attached} attached",
                self.fake().irqfd_count()
            ));
        }
        if self.table.allocated_count() != gsis {
            return Err(format!(
                "{} GSIs allocated, {gsis} held by vectors",
                self.table.allocated_count()
            ));
        }
        let stuck = debug.retired_stuck();
        let ioeventfds = usize::from(self.accel.fast_entries()) + stuck;
        if self.fake().ioeventfd_count() != ioeventfds {
            return Err(format!(
                "{} ioeventfds registered, {} in use and {stuck} whose undo failed",
                self.fake().ioeventfd_count(),
                self.accel.fast_entries()
            ));
        }
        let mapped = self.placed.is_some() && self.accel.policy().maps_table();
        let slot_faults = self
            .faulty
            .injected()
            .iter()
            .any(|f| f.op == Op::SetMemoryRegion);
        if !slot_faults && self.fake().memory_slots().len() != usize::from(mapped) {
            return Err(format!(
                "{} memslots, placed and mapped: {mapped}",
                self.fake().memory_slots().len()
            ));
        }
        let _ = self.source.enabled_count();
        Ok(())
    }
}

/// Decodes a fault's operation from a byte.
pub fn op_of(byte: u8) -> Op {
    Op::ALL[usize::from(byte) % Op::ALL.len()]
}

/// Decodes a fault's errno from a byte.
pub fn errno_of(byte: u8) -> i32 {
    [libc::EIO, libc::ENOMEM, libc::EINVAL, libc::EBUSY][usize::from(byte % 4)]
}
