//! Route commits that do not grow with the vector count at bring-up. Linux
//! reserves x86 vectors one after another: each vector's message is
//! rewritten under mask, then the vector unmasked, so each unmask needs a
//! commit of a new route, and each KVM_SET_GSI_ROUTING costs time in
//! proportion to the whole table. Under `fast`, unmasks that need a commit
//! wait to share one (up to `unmask_batch` of them, within the coalescing
//! window); an unmask whose route KVM already holds, and any unmask an
//! access depends on, take effect at once. Counts are exact; the window is
//! made long where a test must not depend on it.

#[allow(dead_code)] // each test file uses its own part of the shared waits
#[path = "support/settle.rs"]
mod settle;

use std::time::Duration;

use msix_accel::Policy;
use msix_rig::rig::{Rig, RigConfig};
use testvm::{Program, TestVm, Width};

const NEVER: Duration = Duration::from_secs(600);

fn rig(vectors: u16, policy: Policy, window: Duration) -> Rig {
    Rig::new(RigConfig {
        vectors,
        policy,
        unmask_coalescing: window,
        unmask_batch: 64,
        watchdog: Duration::from_secs(120),
        ..RigConfig::default()
    })
    .expect("rig boots")
}

fn message(p: &mut Program, r: &Rig, e: u16) {
    p.write(Width::W32, r.entry(e, 0), TestVm::msi_address(0));
    p.write(Width::W32, r.entry(e, 4), 0);
    p.write(Width::W32, r.entry(e, 8), 0x40 + u64::from(e % 64));
}

/// Brings `vectors` up in Linux's reservation order (message under mask,
/// then unmask, vector after vector) or in early-activation order (every
/// message, then every unmask); a PBA read at the end depends on every
/// entry. Returns the route commits it cost.
fn bring_up(r: &Rig, vectors: u16, reservation: bool) -> u64 {
    r.accel.write_message_control(0x8000).unwrap();
    let before = r.ioctls();
    let mut p = Program::new();
    if reservation {
        for e in 0..vectors {
            message(&mut p, r, e);
            p.write(Width::W32, r.entry(e, 12), 0);
        }
    } else {
        for e in 0..vectors {
            message(&mut p, r, e);
        }
        for e in 0..vectors {
            p.write(Width::W32, r.entry(e, 12), 0);
        }
    }
    p.read(Width::W64, r.pba_gpa);
    r.vm.run(0, &p).unwrap();
    let commits = r.ioctls().since(&before).set_gsi_routing;
    for e in 0..vectors {
        assert!(
            !r.accel.debug().is_masked(e).unwrap(),
            "entry {e} still masked"
        );
    }
    for e in [0, vectors / 2, vectors - 1] {
        let idt = 0x40 + (e % 64) as u8;
        let seen = r.vm.irq_count(idt);
        r.source.fire(e).unwrap();
        r.vm.wait_irq_count(idt, seen + 1).unwrap();
    }
    assert_eq!(r.take_events(), vec![]);
    commits
}

#[test]
fn bringing_up_2048_vectors_in_reservation_order_costs_at_most_64_commits() {
    let r = rig(2048, Policy::Fast, NEVER);
    let commits = bring_up(&r, 2048, true);
    eprintln!("reservation order, 2048 vectors, fast: {commits} KVM_SET_GSI_ROUTING");
    // 2048 unmasks in batches of at least 64 (256 absorbed by ioeventfds,
    // the rest exiting past the fast budget and waiting the same way; a
    // servicer that looks late takes more at once).
    assert!((1..=32).contains(&commits), "{commits} commits");
}

#[test]
fn bringing_up_2048_vectors_in_early_activation_order_costs_at_most_64_commits() {
    let r = rig(2048, Policy::Fast, NEVER);
    let commits = bring_up(&r, 2048, false);
    eprintln!("early activation, 2048 vectors, fast: {commits} KVM_SET_GSI_ROUTING");
    assert!((1..=32).contains(&commits), "{commits} commits");
}

#[test]
fn under_strict_every_unmask_takes_effect_at_its_exit() {
    let r = rig(64, Policy::Strict, NEVER);
    let commits = bring_up(&r, 64, true);
    assert_eq!(commits, 64, "one commit per unmask, none deferred");
}

fn wait_unmasked(r: &Rig, e: u16) {
    settle::wait_for(
        &format!("entry {e} to be unmasked by the service thread"),
        r.vm.watchdog(),
        || settle::calls(r),
        || !r.accel.debug().is_masked(e).unwrap_or(true),
    );
}

/// Whether `fd` is readable now (poll, zero timeout).
fn readable(fd: std::os::unix::io::RawFd) -> bool {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd that outlives the call; zero timeout.
    unsafe { libc::poll(&mut p, 1, 0) > 0 }
}

#[test]
fn a_first_unmask_waits_at_most_the_window_and_a_repeat_unmask_not_at_all() {
    // The servicer here is the test itself, making the calls a servicer
    // makes (`ServiceThread` arms its window timer when
    // `service_fast_path_cheap` says some wait, and calls
    // `service_fast_path` when it fires): the checks are on the
    // mechanism's state at each step, never on how long anything took.
    let mut r = rig(8, Policy::Fast, NEVER);
    r.stop_service();
    r.accel.register_servicer();
    r.accel.move_bar(r.table_gpa, r.pba_gpa).unwrap();
    assert_eq!(r.accel.fast_entries(), 8);
    r.accel.write_message_control(0x8000).unwrap();
    let mut p = Program::new();
    message(&mut p, &r, 0);
    p.write(Width::W32, r.entry(0, 12), 0);
    let exits = r.vm.exits();
    let commits = r.ioctls().set_gsi_routing;
    r.vm.run(0, &p).unwrap();
    assert_eq!(
        r.vm.exits().since(&exits).mmio(),
        3,
        "the message exited, the unmask itself did not"
    );
    // The first unmask wakes the servicer; it needs a commit, so it waits:
    // the servicer is told to end a window, nothing is committed yet.
    assert!(readable(r.accel.fast_path_fd()), "the servicer is woken");
    assert!(
        r.accel.service_fast_path_cheap(),
        "a first unmask waits for the window"
    );
    assert_eq!(r.accel.debug().unmasks_waiting(), 1);
    assert!(r.accel.debug().is_masked(0).unwrap());
    assert_eq!(r.ioctls().set_gsi_routing, commits, "no commit yet");
    assert!(!readable(r.accel.fast_path_fd()), "seen: no second wake-up");
    // The window ends: applied with one commit, and nothing waits any more.
    assert_eq!(r.accel.service_fast_path(), 1);
    assert_eq!(r.accel.debug().unmasks_waiting(), 0);
    assert!(!r.accel.debug().is_masked(0).unwrap());
    assert_eq!(r.ioctls().set_gsi_routing, commits + 1);
    r.source.fire(0).unwrap();
    r.vm.wait_irq_count(0x40, 1).unwrap();

    // Mask and unmask again: the route is held, so the servicer's first
    // look applies the unmask, with no commit and no window.
    let mut p = Program::new();
    p.write(Width::W32, r.entry(0, 12), 1);
    p.write(Width::W32, r.entry(0, 12), 0);
    r.vm.run(0, &p).unwrap();
    assert!(readable(r.accel.fast_path_fd()), "the servicer is woken");
    assert!(
        !r.accel.service_fast_path_cheap(),
        "a repeat unmask does not wait"
    );
    assert_eq!(r.accel.debug().unmasks_waiting(), 0);
    assert!(!r.accel.debug().is_masked(0).unwrap());
    assert_eq!(r.ioctls().set_gsi_routing, commits + 1, "no commit");
    r.source.fire(0).unwrap();
    r.vm.wait_irq_count(0x40, 2).unwrap();
    r.accel.unregister_servicer();

    // And the service thread does the same on its own: the waiting
    // unmask is applied when its window ends (bounded by the watchdog
    // only; how soon is the bench's to measure).
    let r = rig(8, Policy::Fast, Duration::from_millis(50));
    r.accel.write_message_control(0x8000).unwrap();
    let mut p = Program::new();
    message(&mut p, &r, 0);
    p.write(Width::W32, r.entry(0, 12), 0);
    r.vm.run(0, &p).unwrap();
    wait_unmasked(&r, 0);
    r.source.fire(0).unwrap();
    r.vm.wait_irq_count(0x40, 1).unwrap();
}

#[test]
fn an_access_that_depends_on_a_waiting_unmask_applies_it_first() {
    let r = rig(8, Policy::Fast, NEVER);
    r.accel.write_message_control(0x8000).unwrap();
    let mut p = Program::new();
    message(&mut p, &r, 3);
    p.write(Width::W32, r.entry(3, 12), 0); // waits: needs a commit
    message(&mut p, &r, 4); // another entry: no reason to apply it
    r.vm.run(0, &p).unwrap();
    assert!(r.accel.debug().is_masked(3).unwrap(), "waiting for company");
    // A mask of entry 3 depends on its unmask: unmask first, then mask.
    let before = r.accel.stats();
    let mut p = Program::new();
    p.write(Width::W32, r.entry(3, 12), 1);
    r.vm.run(0, &p).unwrap();
    let stats = r.accel.stats().since(&before);
    assert_eq!((stats.unmasks, stats.masks_by_irqfd_detach), (1, 1));
    assert!(r.accel.debug().is_masked(3).unwrap());
    // An interrupt in between waits as pending, and is delivered at the
    // next unmask: later, never lost.
    r.source.fire(3).unwrap();
    assert!(r.accel.pending(3).unwrap());
    let mut p = Program::new();
    p.write(Width::W32, r.entry(3, 12), 0);
    p.read(Width::W64, r.pba_gpa);
    r.vm.run(0, &p).unwrap();
    assert_eq!(r.vm.wait_irq_count(0x43, 1).unwrap(), 1);
}

/// A rig whose servicer is the test itself (as in the test above), entry
/// 0 given its first message (IDT 0x40) and unmasked by the guest, and the
/// servicer's first look taken: the unmask needs a commit, so it waits.
/// `message_control` is set before (0x8000: enabled; 0xC000: and
/// Function Mask). Returns the rig and the route commits before the look.
fn unmask_waiting_for_its_commit(message_control: u16) -> (Rig, u64) {
    let mut r = rig(8, Policy::Fast, NEVER);
    r.stop_service();
    r.accel.register_servicer();
    // Stopping the service thread is reported; that event is this setup's.
    let stopped = r.take_events();
    assert!(stopped
        .iter()
        .all(|e| e.kind == msix_accel::EventKind::FastPathUnserviced));
    r.accel.move_bar(r.table_gpa, r.pba_gpa).unwrap();
    r.accel.write_message_control(message_control).unwrap();
    let mut p = Program::new();
    message(&mut p, &r, 0);
    p.write(Width::W32, r.entry(0, 12), 0);
    r.vm.run(0, &p).unwrap();
    let commits = r.ioctls().set_gsi_routing;
    assert!(
        r.accel.service_fast_path_cheap(),
        "a first unmask waits for the window"
    );
    assert_eq!(r.accel.debug().unmasks_waiting(), 1);
    assert_eq!(r.ioctls().set_gsi_routing, commits, "no commit yet");
    (r, commits)
}

/// Entry 0's Vector Control as the guest reads it, proven not to exit
/// (the shadow answers: an exit would apply the waiting unmask first).
fn guest_reads_vector_control(r: &Rig) -> u64 {
    let exits = r.vm.exits();
    let mut p = Program::new();
    let slot = p.read(Width::W32, r.entry(0, 12));
    let out = r.vm.run(0, &p).unwrap();
    assert_eq!(r.vm.exits().since(&exits).mmio(), 0, "read from the shadow");
    out.get(slot)
}

/// Whether entry 0 holds an interrupt while it cannot deliver (the PBA
/// bit: with a plain source, the irqfd's eventfd count; read without an
/// exit, which would apply the waiting unmask).
fn held(r: &Rig) -> bool {
    use std::os::unix::io::AsRawFd;
    use vfio_vectors::MsixSource;
    readable(r.source.trigger(0).unwrap().as_raw_fd())
}

/// How many interrupts IDT `idt` took, once a sentinel proved everything
/// sent before it arrived.
fn settled_count(r: &Rig, idt: u8) -> u64 {
    r.vm.sentinel_all().unwrap();
    r.vm.irq_count(idt)
}

#[test]
fn a_waiting_unmask_reads_back_at_once_and_delivers_once_at_its_commit() {
    let (r, commits) = unmask_waiting_for_its_commit(0x8000);
    // The guest reads what it wrote from the servicer's look on; the entry
    // is still masked where it matters (model and hypervisor).
    assert_eq!(guest_reads_vector_control(&r), 0);
    assert!(r.accel.debug().is_masked(0).unwrap());
    assert_eq!(
        r.accel.debug().mask_path(0).unwrap(),
        msix_accel::MaskPath::IrqfdDetached
    );
    // An interrupt meanwhile is held as pending, not delivered.
    r.source.fire(0).unwrap();
    assert!(held(&r), "the interrupt is held");
    assert_eq!(settled_count(&r, 0x40), 0, "none before the commit");
    assert_eq!(r.ioctls().set_gsi_routing, commits, "still no commit");
    assert_eq!(guest_reads_vector_control(&r), 0);
    // The window ends: one commit, the held interrupt delivered once.
    assert_eq!(r.accel.service_fast_path(), 1);
    assert_eq!(r.ioctls().set_gsi_routing, commits + 1);
    r.vm.wait_irq_count(0x40, 1).unwrap();
    assert!(!held(&r));
    assert_eq!(settled_count(&r, 0x40), 1, "delivered exactly once");
    assert_eq!(guest_reads_vector_control(&r), 0);
    assert_eq!(r.take_events(), vec![]);
}

#[test]
fn a_remask_before_the_commit_lands_reads_back_masked_and_holds() {
    let (r, commits) = unmask_waiting_for_its_commit(0x8000);
    assert_eq!(guest_reads_vector_control(&r), 0);
    r.source.fire(0).unwrap();
    assert_eq!(settled_count(&r, 0x40), 0, "none before the commit");
    // The mask exits and depends on the waiting unmask: the guest's order
    // is unmask then mask, so the unmask is applied first (one commit, the
    // held interrupt delivered once), then the mask.
    let mut p = Program::new();
    p.write(Width::W32, r.entry(0, 12), 1);
    r.vm.run(0, &p).unwrap();
    assert_eq!(r.accel.debug().unmasks_waiting(), 0, "nothing left waiting");
    assert_eq!(r.ioctls().set_gsi_routing, commits + 1);
    assert!(r.accel.debug().is_masked(0).unwrap());
    assert_eq!(guest_reads_vector_control(&r), 1);
    assert_eq!(
        settled_count(&r, 0x40),
        1,
        "delivered once, before the mask"
    );
    // Masked: a later interrupt is held, and the window's end finds
    // nothing to apply.
    r.source.fire(0).unwrap();
    assert!(held(&r));
    assert_eq!(r.accel.service_fast_path(), 0);
    assert_eq!(settled_count(&r, 0x40), 1, "none while masked");
    assert!(held(&r), "still held");
    assert_eq!(guest_reads_vector_control(&r), 1);
    assert_eq!(r.take_events(), vec![]);
}

#[test]
fn a_message_change_before_the_commit_lands_is_honoured() {
    let (r, _) = unmask_waiting_for_its_commit(0x8000);
    assert_eq!(guest_reads_vector_control(&r), 0);
    // A new message (IDT 0x41) written while the unmask waits: the write
    // exits and applies the unmask first, then the message.
    let mut p = Program::new();
    p.write(Width::W32, r.entry(0, 8), 0x41);
    r.vm.run(0, &p).unwrap();
    assert_eq!(r.accel.debug().unmasks_waiting(), 0);
    assert!(!r.accel.debug().is_masked(0).unwrap());
    assert_eq!(guest_reads_vector_control(&r), 0);
    r.source.fire(0).unwrap();
    r.vm.wait_irq_count(0x41, 1).unwrap();
    assert_eq!(settled_count(&r, 0x41), 1, "once, on the new message");
    assert_eq!(settled_count(&r, 0x40), 0, "never on the old one");
    assert_eq!(r.take_events(), vec![]);
}

#[test]
fn function_mask_holds_a_waiting_unmask_that_reads_back_unmasked() {
    let (r, _) = unmask_waiting_for_its_commit(0xC000);
    // Function Mask leaves the entry's own bit as the guest wrote it.
    assert_eq!(guest_reads_vector_control(&r), 0);
    r.source.fire(0).unwrap();
    // The window ends: the unmask is applied (its route may wait for the
    // function unmask), and Function Mask still holds the interrupt.
    assert_eq!(r.accel.service_fast_path(), 1);
    assert_eq!(r.accel.debug().entry(0).unwrap().vector_control & 1, 0);
    assert!(r.accel.debug().is_masked(0).unwrap(), "by Function Mask");
    assert_eq!(settled_count(&r, 0x40), 0, "Function Mask holds it");
    assert!(held(&r));
    assert_eq!(guest_reads_vector_control(&r), 0);
    r.accel.write_message_control(0x8000).unwrap();
    r.vm.wait_irq_count(0x40, 1).unwrap();
    assert_eq!(
        settled_count(&r, 0x40),
        1,
        "delivered once at function unmask"
    );
    assert_eq!(r.take_events(), vec![]);
}
