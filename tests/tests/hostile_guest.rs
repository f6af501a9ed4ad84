//! A hostile guest against the accelerator: thousands of random table and
//! PBA accesses of every width, at any offset (and just past the windows),
//! with masks toggling, messages rewritten, qword writes, Message Control
//! flipped by the host and the device storming all along. The host never
//! panics and records no error, the guest never faults, memory stays flat,
//! and the accelerator ends in exactly the state the pure `msix-model`
//! reaches from the same accesses.
//!
//! Deterministic: a seeded xorshift drives every choice; a failure names the
//! policy, source masking, vCPU count and seed.

use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use msix_accel::{AccelConfig, EventKind, MaskPath, Policy, RouteState};
use msix_model::{MsixModel, MsixState};
use msix_rig::rig::{Rig, RigConfig, TABLE_MEMSLOT};
use msix_rig::storm::storm;
use testvm::{Program, ResultSlot, TestVm, Width};

const VECTORS: u16 = 8;
const PAGE: u64 = 4096;
const ACCESSES_PER_PROGRAM: usize = 2000;
/// Rounds of each soak (one policy, one source-masking setting, one vCPU
/// count): each round runs one random program of [`ACCESSES_PER_PROGRAM`]
/// accesses on every vCPU. Bounded by rounds, never by time, so a loaded
/// machine makes a soak slower, not shorter.
const ROUNDS: u32 = 12;
/// The device fires this often during a soak.
const STORM_RATE: u64 = 20_000;
/// Host memory may grow this much over a soak.
const RSS_SLACK: u64 = 64 << 20;

/// The soaks measure process RSS and share 2 cores: one at a time.
fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// xorshift64*: tiny, seeded, good enough to pick accesses.
struct XorShift(u64);

impl XorShift {
    fn new(seed: u64) -> Self {
        XorShift(seed.max(1))
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in 0..n (n > 0).
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn percent(&mut self, p: u64) -> bool {
        self.below(100) < p
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize]
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Region {
    Table,
    Pba,
}

/// One guest access, by offset from the start of its region.
#[derive(Clone, Copy, Debug)]
struct Access {
    region: Region,
    offset: u64,
    width: Width,
    /// The value written; `None` for a read.
    write: Option<u64>,
}

fn rig(policy: Policy, maskable: bool, vcpus: u8) -> Rig {
    Rig::new(RigConfig {
        vectors: VECTORS,
        vcpus,
        policy,
        maskable,
        watchdog: Duration::from_secs(10),
        ..RigConfig::default()
    })
    .expect("rig boots")
}

/// The pure model of the rig's function, in its reset state.
fn reference_model() -> MsixModel {
    let config = AccelConfig::new(VECTORS, 0, TABLE_MEMSLOT);
    MsixModel::new(VECTORS, config.table, config.pba).expect("reference model")
}

/// A Message Address dword a driver could write: the MSI window, a
/// destination among the guest's vCPUs or one past them (dropped by KVM),
/// random destination-mode and redirection-hint bits and reserved bits 1:0.
fn address_lo(rng: &mut XorShift, vcpus: u8) -> u64 {
    let cpu = rng.below(u64::from(vcpus) + 1) as u8;
    TestVm::msi_address(cpu) | rng.below(16)
}

/// A Message Data dword: fixed or lowest-priority delivery, edge, on an IDT
/// vector the guest counts (0x30..=0xEF), random upper bits.
///
/// The guest's own delivery targets are the one thing kept sane: a guest
/// that sends itself INIT, NMI, SMI or an exception vector stops itself,
/// which hurts nobody but that guest and is not what this test is about.
fn message_data(rng: &mut XorShift) -> u64 {
    let vector = 0x30 + rng.below(0xF0 - 0x30);
    let delivery_mode = rng.below(2) << 8;
    (rng.below(1 << 16) << 16) | delivery_mode | vector
}

fn address_hi(rng: &mut XorShift) -> u64 {
    if rng.percent(70) {
        0
    } else {
        rng.below(1 << 32)
    }
}

fn vector_control(rng: &mut XorShift) -> u64 {
    match rng.below(10) {
        // 0 is the unmask the fast path absorbs, 1 the mask that exits.
        0..=4 => 0,
        5..=8 => 1,
        // Reserved bits set: an unmask or a mask that no ioeventfd matches.
        _ => rng.below(1 << 32),
    }
}

/// What a write of `width` at table `offset` carries: a well-formed access
/// to a field gets a value for that field, anything else random bytes.
fn table_value(rng: &mut XorShift, offset: u64, width: Width, vcpus: u8) -> u64 {
    let field = offset % 16;
    match width {
        Width::W32 if offset % 4 == 0 => match field {
            0 => address_lo(rng, vcpus),
            4 => address_hi(rng),
            8 => message_data(rng),
            _ => vector_control(rng),
        },
        Width::W64 if offset % 8 == 0 => {
            if field == 0 {
                address_lo(rng, vcpus) | (address_hi(rng) << 32)
            } else {
                message_data(rng) | (vector_control(rng) << 32)
            }
        }
        _ => rng.next(),
    }
}

/// A random access in the table window (page-aligned table size), mostly
/// on the entries, or in the PBA and just past it. Never crosses a page:
/// KVM splits a page-crossing access into fragments, and the reference must
/// see what the accelerator sees.
fn random_access(rng: &mut XorShift, vcpus: u8, writes_only: bool) -> Access {
    let table_len = u64::from(VECTORS) * 16;
    let pba_len = u64::from(VECTORS).div_ceil(64) * 8;
    let width = rng.pick(&[Width::W8, Width::W16, Width::W32, Width::W32, Width::W64]);
    let bytes = width.bytes() as u64;
    let region = if rng.percent(80) {
        Region::Table
    } else {
        Region::Pba
    };
    let span = match region {
        Region::Table if rng.percent(90) => table_len + 64,
        Region::Table => PAGE,
        Region::Pba => pba_len + 64,
    };
    let mut offset = rng.below(span);
    if rng.percent(75) {
        offset -= offset % bytes;
    }
    if offset % PAGE + bytes > PAGE {
        offset -= offset % bytes;
    }
    let write = if writes_only || rng.percent(65) {
        Some(match region {
            Region::Table => table_value(rng, offset, width, vcpus),
            Region::Pba => rng.next(),
        })
    } else {
        None
    };
    Access {
        region,
        offset,
        width,
        write,
    }
}

fn random_accesses(rng: &mut XorShift, vcpus: u8, count: usize, writes_only: bool) -> Vec<Access> {
    (0..count)
        .map(|_| random_access(rng, vcpus, writes_only))
        .collect()
}

fn guest_program(r: &Rig, accesses: &[Access]) -> Program {
    let mut p = Program::new();
    for a in accesses {
        let base = match a.region {
            Region::Table => r.table_gpa,
            Region::Pba => r.pba_gpa,
        };
        match a.write {
            Some(value) => {
                p.write(a.width, base + a.offset, value);
            }
            None => {
                p.read(a.width, base + a.offset);
            }
        }
    }
    p
}

/// Feeds the guest's writes to the reference, in program order. Reads and
/// PBA writes change nothing a guest can observe besides pending bits.
fn feed(reference: &mut MsixModel, accesses: &[Access]) {
    for a in accesses {
        if let (Region::Table, Some(value)) = (a.region, a.write) {
            reference.write_table(a.offset, &value.to_le_bytes()[..a.width.bytes()]);
        }
    }
}

/// Current resident set size of this process, in bytes.
fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("statm");
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("statm resident");
    pages * PAGE
}

fn without_pending(mut state: MsixState) -> MsixState {
    state.pending.clear();
    state
}

/// The accelerator's bookkeeping agrees with its model for every vector: a
/// masked vector is held; an unmasked one delivers through its irqfd with a
/// committed route carrying its entry's message, unless KVM refused that
/// message (a hostile guest's address), in which case it is held too, its
/// interrupts pending until the guest writes a message KVM accepts.
fn assert_consistent(r: &Rig, what: &str) {
    let debug = r.accel.debug();
    for v in 0..VECTORS {
        let masked = debug.is_masked(v).unwrap();
        let path = debug.mask_path(v).unwrap();
        let route = debug.route(v).unwrap();
        let message = debug.entry(v).unwrap().message();
        let wanted = irqfd_routes::MsiMessage::new(message.address, message.data);
        if masked {
            assert_ne!(
                path,
                MaskPath::Unmasked,
                "{what}: masked vector {v} delivers"
            );
        } else if let RouteState::Rejected { message, .. } = route {
            assert_eq!(message, wanted, "{what}: vector {v} refused route");
            assert_ne!(
                path,
                MaskPath::Unmasked,
                "{what}: vector {v} delivers to a refused route"
            );
        } else {
            assert_eq!(path, MaskPath::Unmasked, "{what}: unmasked vector {v} held");
            assert!(debug.irqfd_attached(v).unwrap(), "{what}: vector {v} irqfd");
            assert_eq!(
                route,
                RouteState::Committed(wanted),
                "{what}: vector {v} route"
            );
        }
        if debug.source_masking() {
            assert_eq!(
                r.source.is_masked(v).unwrap(),
                path == MaskPath::Source,
                "{what}: vector {v} source mask"
            );
        }
    }
}

/// The only trouble a hostile guest may cause is its own: messages KVM
/// refuses (with the x2APIC API, an address with bits 39:32 set), each
/// reported as such for the vector concerned.
fn assert_only_refused_routes(r: &Rig, what: &str) {
    for e in r.take_events() {
        assert_eq!(e.kind, EventKind::RouteRejected, "{what}: {e}");
        assert!(e.vector.is_some_and(|v| v < VECTORS), "{what}: {e}");
        assert_eq!(e.errno, Some(libc::EINVAL), "{what}: {e}");
    }
}

/// The paths a soak must take, counted over its rounds.
#[derive(Clone, Copy, Debug, Default)]
struct Coverage {
    /// Vectors masked at the source (irqfd left attached).
    source_masks: u64,
    /// Vectors masked by detaching their irqfd.
    irqfd_detaches: u64,
    /// Unmasks of either path.
    unmasks: u64,
    /// Unmasks absorbed by an ioeventfd (the fast path).
    fast_path_unmasks: u64,
    /// Message Control writes that turned Function Mask on with MSI-X enabled.
    function_masks: u64,
    /// Message Control writes that turned MSI-X off.
    disables: u64,
}

impl Coverage {
    /// Every path this setup must have taken but did not, named.
    fn missing(&self, policy: Policy, maskable: bool) -> Vec<&'static str> {
        let mut missing = Vec::new();
        if maskable && self.source_masks == 0 {
            missing.push("no mask at the source");
        }
        if !maskable && self.irqfd_detaches == 0 {
            missing.push("no mask by irqfd detach");
        }
        if self.unmasks == 0 {
            missing.push("no unmask");
        }
        if policy == Policy::Fast && self.fast_path_unmasks == 0 {
            missing.push("no unmask on the fast path");
        }
        if self.function_masks == 0 {
            missing.push("no function mask");
        }
        if self.disables == 0 {
            missing.push("no MSI-X disable");
        }
        missing
    }
}

/// MSI-X Enable and Function Mask in Message Control.
const MSIX_ENABLE: u16 = 0x8000;
const FUNCTION_MASK: u16 = 0x4000;

/// Writes Message Control as the host and counts what it turned on or off.
fn flip_message_control(r: &Rig, control: u16, coverage: &mut Coverage) {
    let before = r.accel.message_control();
    r.accel.write_message_control(control).unwrap();
    let after = r.accel.message_control();
    let masked_all = |mc: u16| mc & (MSIX_ENABLE | FUNCTION_MASK) == MSIX_ENABLE | FUNCTION_MASK;
    if masked_all(after) && !masked_all(before) {
        coverage.function_masks += 1;
    }
    if before & MSIX_ENABLE != 0 && after & MSIX_ENABLE == 0 {
        coverage.disables += 1;
    }
}

/// Runs [`ROUNDS`] rounds of random programs on every vCPU, seeded, while
/// the device storms and the host flips Message Control. With one vCPU the
/// final state must equal the reference model's; with more, the accesses of
/// the vCPUs interleave unpredictably and the accelerator must stay
/// consistent. Every soak must have taken every path its setup has (see
/// [`Coverage::missing`]); its seed is chosen so that it does.
fn soak(policy: Policy, maskable: bool, vcpus: u8) {
    let _serial = serial();
    let seed = seed(policy, maskable, vcpus);
    let what = format!("{policy} maskable={maskable} vcpus={vcpus} seed={seed:#x}");
    let mut rng = XorShift::new(seed);
    let r = rig(policy, maskable, vcpus);
    let mut reference = reference_model();
    let mut coverage = Coverage::default();
    let rss_before = rss_bytes();
    let storm = storm(&r.source, (0..VECTORS).collect(), Some(STORM_RATE)).unwrap();

    for round in 0..ROUNDS {
        let programs: Vec<Vec<Access>> = (0..vcpus)
            .map(|_| random_accesses(&mut rng, vcpus, ACCESSES_PER_PROGRAM, false))
            .collect();
        for (cpu, accesses) in programs.iter().enumerate() {
            r.vm.start(cpu as u8, &guest_program(&r, accesses)).unwrap();
        }
        if vcpus > 1 {
            // Several vCPUs: the host flips Message Control while they run
            // (spaced a little so the flips land among their accesses; no
            // check depends on where they land).
            for _ in 0..3 {
                flip_message_control(&r, rng.next() as u16, &mut coverage);
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        for cpu in 0..vcpus {
            if let Err(e) = r.vm.wait(cpu) {
                panic!("{what}: round {round}: guest on vCPU {cpu}: {e}");
            }
        }
        if vcpus == 1 {
            feed(&mut reference, &programs[0]);
            if rng.percent(60) {
                let control = rng.next() as u16;
                flip_message_control(&r, control, &mut coverage);
                reference.write_message_control(control);
            }
        }
        assert_only_refused_routes(&r, &format!("{what}: round {round}"));
    }
    let report = storm.stop();
    assert!(
        report.error.is_none() && !report.panicked,
        "{what}: {report:?}"
    );
    r.accel.service_fast_path();

    // The soak did what it claims: every path of this setup was taken.
    let stats = r.accel.stats();
    coverage.source_masks = stats.masks_at_source;
    coverage.irqfd_detaches = stats.masks_by_irqfd_detach;
    coverage.unmasks = stats.unmasks;
    coverage.fast_path_unmasks = stats.fast_path_unmasks;
    if std::env::var_os("HOSTILE_VERBOSE").is_some() {
        eprintln!("{what}: {coverage:?}, {stats:?}, {} fires", report.total);
    }
    let missing = coverage.missing(policy, maskable);
    assert!(
        missing.is_empty(),
        "{what}: {} in {ROUNDS} rounds ({coverage:?})",
        missing.join(", ")
    );
    assert_only_refused_routes(&r, &what);
    assert_consistent(&r, &what);
    if vcpus == 1 {
        assert_eq!(
            without_pending(r.accel.debug().model_state()),
            without_pending(reference.snapshot()),
            "{what}: after {ROUNDS} rounds the accelerator's table and Message \
             Control differ from the reference model's"
        );
    }
    let rss_after = rss_bytes();
    assert!(
        rss_after <= rss_before + RSS_SLACK,
        "{what}: RSS grew from {rss_before} to {rss_after} bytes"
    );
}

/// The seed of each soak. Every soak must take every path of its setup in
/// [`ROUNDS`] rounds (see [`Coverage::missing`]), and whether it does
/// depends on the seed: some seeds leave MSI-X disabled nearly throughout
/// (no mask at all), others never set Function Mask. These were searched:
/// starting at `0x5EED_0000 + policy * 16 + maskable * 4 + vcpus` and stepping
/// by 0x100, the first seed whose soak took every path at least twice (one
/// vCPU: the run is deterministic, so the counts are the same on every
/// run) or at least three times (two vCPUs: the mask and unmask counts vary
/// with how the vCPUs interleave; Message Control flips do not, they come
/// from the seed). Change the generator or [`ROUNDS`] and search again.
fn seed(policy: Policy, maskable: bool, vcpus: u8) -> u64 {
    match (policy, maskable, vcpus) {
        (Policy::Fast, false, 1) => 0x5EED_0001,
        (Policy::Fast, true, 1) => 0x5EED_0105,
        (Policy::Strict, false, 1) => 0x5EED_1211,
        (Policy::Strict, true, 1) => 0x5EED_0015,
        (Policy::Trap, false, 1) => 0x5EED_0B21,
        (Policy::Trap, true, 1) => 0x5EED_0225,
        (Policy::Fast, false, _) => 0x5EED_0002,
        (Policy::Fast, true, _) => 0x5EED_0006,
        (Policy::Strict, false, _) => 0x5EED_0012,
        (Policy::Strict, true, _) => 0x5EED_0016,
        (Policy::Trap, false, _) => 0x5EED_0022,
        (Policy::Trap, true, _) => 0x5EED_0026,
        // The soak runs the mechanisms only (Policy::ALL): auto is one of
        // them once placed.
        (Policy::Auto, _, _) => 0x5EED_0030,
    }
}

#[test]
fn one_vcpu_hostile_soak_under_fast_ends_in_the_reference_models_state() {
    soak(Policy::Fast, false, 1);
    soak(Policy::Fast, true, 1);
}

#[test]
fn one_vcpu_hostile_soak_under_strict_ends_in_the_reference_models_state() {
    soak(Policy::Strict, false, 1);
    soak(Policy::Strict, true, 1);
}

#[test]
fn one_vcpu_hostile_soak_under_trap_ends_in_the_reference_models_state() {
    soak(Policy::Trap, false, 1);
    soak(Policy::Trap, true, 1);
}

#[test]
fn two_vcpu_hostile_soak_under_fast_keeps_masks_irqfds_and_routes_consistent() {
    soak(Policy::Fast, false, 2);
    soak(Policy::Fast, true, 2);
}

#[test]
fn two_vcpu_hostile_soak_under_strict_keeps_masks_irqfds_and_routes_consistent() {
    soak(Policy::Strict, false, 2);
    soak(Policy::Strict, true, 2);
}

#[test]
fn two_vcpu_hostile_soak_under_trap_keeps_masks_irqfds_and_routes_consistent() {
    soak(Policy::Trap, false, 2);
    soak(Policy::Trap, true, 2);
}

#[test]
fn guest_reads_see_exactly_what_the_model_says() {
    let _serial = serial();
    let table_len = u64::from(VECTORS) * 16;
    let pba_len = u64::from(VECTORS).div_ceil(64) * 8;
    for policy in Policy::ALL {
        for maskable in [false, true] {
            let what = format!("{policy} maskable={maskable}");
            let mut rng = XorShift::new(0xEAD5 + policy as u64 * 2 + u64::from(maskable));
            let r = rig(policy, maskable, 1);
            let mut reference = reference_model();

            // The driver scribbles over the table, then MSI-X is enabled (the
            // function mask at random) and every vector fires once: the masked
            // ones become pending.
            let writes = random_accesses(&mut rng, 1, ACCESSES_PER_PROGRAM, true);
            r.vm.run(0, &guest_program(&r, &writes)).unwrap();
            feed(&mut reference, &writes);
            let control = 0x8000 | (rng.next() as u16 & 0x4000);
            r.accel.write_message_control(control).unwrap();
            reference.write_message_control(control);
            r.accel.service_fast_path();
            let mut masked = 0u64;
            for v in 0..VECTORS {
                r.source.fire(v).unwrap();
                if r.accel.debug().is_masked(v).unwrap() {
                    masked |= 1 << v;
                }
            }

            let mut p = Program::new();
            let table: Vec<(u64, ResultSlot)> = (0..table_len)
                .step_by(4)
                .map(|offset| (offset, p.read(Width::W32, r.table_gpa + offset)))
                .collect();
            let pba: Vec<(u64, ResultSlot)> = (0..pba_len)
                .step_by(4)
                .map(|offset| (offset, p.read(Width::W32, r.pba_gpa + offset)))
                .collect();
            let out = r.vm.run(0, &p).unwrap();

            let state = r.accel.debug().model_state();
            for (offset, slot) in table {
                let entry = state.entries[(offset / 16) as usize];
                let held = [
                    entry.address_lo,
                    entry.address_hi,
                    entry.data,
                    entry.vector_control,
                ][(offset % 16 / 4) as usize];
                let mut expected = [0u8; 4];
                reference.read_table(offset, &mut expected);
                let read = out.get(slot);
                assert_eq!(
                    read,
                    u64::from(held),
                    "{what}: table offset {offset:#x} vs accelerator model"
                );
                assert_eq!(
                    read,
                    u64::from(u32::from_le_bytes(expected)),
                    "{what}: table offset {offset:#x} vs reference"
                );
            }
            for (offset, slot) in pba {
                let read = out.get(slot);
                let held = state.pending[(offset / 8) as usize] >> (8 * (offset % 8)) & 0xFFFF_FFFF;
                assert_eq!(
                    read, held,
                    "{what}: PBA offset {offset:#x} vs accelerator model"
                );
                let expected = masked >> (8 * offset) & 0xFFFF_FFFF;
                assert_eq!(
                    read, expected,
                    "{what}: PBA offset {offset:#x}: the masked vectors fired"
                );
            }
            assert_eq!(
                without_pending(state),
                without_pending(reference.snapshot()),
                "{what}"
            );
            assert_only_refused_routes(&r, &what);
        }
    }
}

/// Brings entry 0 up for IDT 0x40 on vCPU 0, MSI-X enabled, unmasked.
fn bring_up_vector_0(r: &Rig) {
    r.accel.write_message_control(0x8000).unwrap();
    let mut p = Program::new();
    p.write(Width::W32, r.entry(0, 0), TestVm::msi_address(0));
    p.write(Width::W32, r.entry(0, 4), 0);
    p.write(Width::W32, r.entry(0, 8), 0x40);
    p.write(Width::W32, r.entry(0, 12), 0);
    r.vm.run(0, &p).unwrap();
    r.accel.service_fast_path();
}

/// A guest masks a vector, the device fires it, then the driver turns MSI-X
/// off and on again (driver reload, suspend/resume). Pending bits exist
/// only while MSI-X is enabled (the software source models a function that
/// clears them on disable, as a fresh VFIO SET_IRQS does), so the interrupt
/// from before the disable is gone: not in the PBA while disabled, not after
/// re-enable, and not delivered on the unmask. The guest must see the same
/// whichever way the VMM masks the vector (irqfd detach or source mask).
#[test]
fn msix_disable_clears_what_was_pending_on_every_mask_path() {
    let _serial = serial();
    for maskable in [false, true] {
        let what = format!("maskable={maskable}");
        let r = rig(Policy::Fast, maskable, 1);
        bring_up_vector_0(&r);
        let mut mask = Program::new();
        mask.write(Width::W32, r.entry(0, 12), 1);
        mask.read(Width::W32, r.entry(0, 0));
        r.vm.run(0, &mask).unwrap();
        r.source.fire(0).unwrap();
        assert!(r.accel.pending(0).unwrap(), "{what}: masked and fired");

        r.accel.write_message_control(0).unwrap();
        assert!(
            !r.accel.pending(0).unwrap(),
            "{what}: pending survived MSI-X disable"
        );
        r.accel.write_message_control(0x8000).unwrap();
        assert!(
            !r.accel.pending(0).unwrap(),
            "{what}: pending survived MSI-X re-enable"
        );

        let mut unmask = Program::new();
        unmask.write(Width::W32, r.entry(0, 12), 0);
        r.vm.run(0, &unmask).unwrap();
        r.accel.service_fast_path();
        // A delivery owed by the unmask would be taken before the sentinel.
        r.vm.sentinel_all().unwrap();
        assert_eq!(
            r.vm.irq_count(0x40),
            0,
            "{what}: an interrupt from before MSI-X was disabled was delivered"
        );

        // The vector itself works: the next fire is delivered once.
        r.source.fire(0).unwrap();
        assert_eq!(r.vm.wait_irq_count(0x40, 1).unwrap(), 1, "{what}");
        assert_eq!(r.take_events(), vec![], "{what}");
    }
}
