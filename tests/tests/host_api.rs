//! The host-side API under bad input and failing ioctls: typed errors that
//! name the problem, and state that stays consistent. Also BAR moves.

use std::sync::Arc;

use irqfd_routes::{GsiRouting, IrqchipRoutes, SharedRouting};
use msix_accel::{
    AccelConfig, Error, EventKind, EventLog, IgnoreEvents, MaskPath, MsixAccelerator, Policy,
    ServiceThread,
};
use msix_hypervisor::{CountingVm, KvmVm};
use msix_rig::rig::{Rig, RigConfig, BAR_GPA};
use testvm::{MmioHandler, Program, TestVm, VmConfig, Width};
use vfio_vectors::software::SoftwareSource;

fn guest() -> TestVm {
    TestVm::new(VmConfig::default()).expect("guest boots")
}

/// A guest, its VM-wide routing table, and the hypervisor calls they share.
fn guest_with_routes() -> (TestVm, SharedRouting, Arc<CountingVm<KvmVm>>) {
    let vm = guest();
    let hv = Arc::new(CountingVm::new(KvmVm::new(vm.vm().clone())));
    let routes = GsiRouting::new(hv.clone(), IrqchipRoutes::X86KernelIrqchip)
        .unwrap()
        .into_shared();
    (vm, routes, hv)
}

#[test]
fn vector_out_of_range_is_a_typed_error() {
    let r = Rig::new(RigConfig::default()).unwrap();
    for result in [
        r.accel.pending(8).map(|_| ()),
        r.accel.debug().is_masked(8).map(|_| ()),
        r.accel.debug().entry(2048).map(|_| ()),
        r.accel.debug().mask_path(u16::MAX).map(|_| ()),
    ] {
        match result {
            Err(Error::Model(msix_model::Error::VectorOutOfRange { table_size: 8, .. })) => {}
            other => panic!("expected VectorOutOfRange, got {other:?}"),
        }
    }
}

struct Mmio(Arc<MsixAccelerator>);

impl MmioHandler for Mmio {
    fn mmio_read(&self, _vcpu: u8, addr: u64, data: &mut [u8]) -> bool {
        self.0.mmio_read(addr, data)
    }
    fn mmio_write(&self, _vcpu: u8, addr: u64, data: &[u8]) -> bool {
        self.0.mmio_write(addr, data)
    }
}

#[test]
fn a_device_takes_gsis_only_for_vectors_it_routes_and_a_vector_without_one_holds_its_interrupts() {
    let (vm, routes, hv) = guest_with_routes();
    // Leave exactly one GSI free for a device of 8 vectors.
    let mut taken = Vec::new();
    while let Ok(g) = routes.allocate() {
        taken.push(g);
    }
    routes.release(taken.pop().unwrap()).unwrap();
    let events = Arc::new(EventLog::new());
    let source = SoftwareSource::new(8).unwrap();
    let accel = Arc::new(
        MsixAccelerator::new(
            hv.clone(),
            routes.clone(),
            Box::new(source.clone()),
            AccelConfig::new(8, 0, 1).with_policy(Policy::Strict),
            events.clone(),
        )
        .expect("no GSI is taken at creation"),
    );
    accel.place(BAR_GPA, BAR_GPA + 0x1000).unwrap();
    vm.set_mmio_handler(Arc::new(Mmio(accel.clone())));
    accel.write_message_control(0x8000).unwrap();
    let mut p = Program::new();
    for e in 0..2u16 {
        p.write(
            Width::W32,
            BAR_GPA + u64::from(e) * 16,
            TestVm::msi_address(0),
        );
        p.write(
            Width::W32,
            BAR_GPA + u64::from(e) * 16 + 8,
            0x50 + u64::from(e),
        );
        p.write(Width::W32, BAR_GPA + u64::from(e) * 16 + 12, 0);
    }
    vm.run(0, &p).unwrap();
    // Vector 0 got the last GSI and delivers; vector 1 holds its interrupt.
    assert_eq!(accel.debug().mask_path(0).unwrap(), MaskPath::Unmasked);
    assert_ne!(accel.debug().mask_path(1).unwrap(), MaskPath::Unmasked);
    let reported = events.take();
    assert_eq!(reported.len(), 1, "{reported:?}");
    assert_eq!(
        (reported[0].kind, reported[0].vector),
        (EventKind::GsiExhausted, Some(1))
    );
    source.fire(0).unwrap();
    source.fire(1).unwrap();
    vm.wait_irq_count(0x50, 1).unwrap();
    vm.sentinel(0).unwrap();
    assert_eq!(vm.irq_count(0x51), 0);
    assert!(accel.pending(1).unwrap(), "held, not lost");

    // A GSI frees up: the next exit retries and delivers the held one once.
    routes.release(taken.pop().unwrap()).unwrap();
    let mut p = Program::new();
    p.read(Width::W32, BAR_GPA + 0x1000); // any exit: a PBA read
    vm.run(0, &p).unwrap();
    assert_eq!(vm.wait_irq_count(0x51, 1).unwrap(), 1);
    vm.sentinel(0).unwrap();
    assert_eq!(vm.irq_count(0x51), 1);
    assert_eq!(events.take(), vec![], "reported once");
    assert_eq!(
        accel.debug().gsi(5).unwrap(),
        None,
        "unused vectors take none"
    );
}

#[test]
fn gsis_go_back_when_msix_is_disabled_and_when_the_device_is_dropped() {
    let (_vm, routes, hv) = guest_with_routes();
    let before = {
        let mut all = Vec::new();
        while let Ok(g) = routes.allocate() {
            all.push(g);
        }
        for g in &all {
            routes.release(*g).unwrap();
        }
        all.len()
    };
    let accel = MsixAccelerator::new(
        hv,
        routes.clone(),
        Box::new(SoftwareSource::new(4).unwrap()),
        AccelConfig::new(4, 0, 1).with_policy(Policy::Trap),
        Arc::new(IgnoreEvents),
    )
    .unwrap();
    accel.place(BAR_GPA, BAR_GPA + 0x1000).unwrap();
    accel.write_message_control(0x8000).unwrap();
    for e in 0..4u64 {
        assert!(accel.mmio_write(BAR_GPA + e * 16, &0xFEE0_0000u32.to_le_bytes()));
        assert!(accel.mmio_write(BAR_GPA + e * 16 + 8, &0x40u32.to_le_bytes()));
        assert!(accel.mmio_write(BAR_GPA + e * 16 + 12, &0u32.to_le_bytes()));
    }
    let count_free = || {
        let mut all = Vec::new();
        while let Ok(g) = routes.allocate() {
            all.push(g);
        }
        for g in &all {
            routes.release(*g).unwrap();
        }
        all.len()
    };
    assert_eq!(count_free(), before - 4);
    accel.write_message_control(0).unwrap();
    assert_eq!(count_free(), before, "MSI-X disable gives them back");
    accel.write_message_control(0x8000).unwrap();
    assert_eq!(
        count_free(),
        before - 4,
        "re-enabled unmasked vectors route again"
    );
    drop(accel);
    assert_eq!(count_free(), before);
}

#[test]
fn source_and_table_sizes_must_agree() {
    let (_vm, routes, hv) = guest_with_routes();
    let err = MsixAccelerator::new(
        hv,
        routes,
        Box::new(SoftwareSource::new(4).unwrap()),
        AccelConfig::new(8, 0, 1),
        Arc::new(IgnoreEvents),
    )
    .unwrap_err();
    assert!(
        matches!(
            err,
            Error::SizeMismatch {
                source_vectors: 4,
                table_size: 8
            }
        ),
        "{err}"
    );
}

#[test]
fn a_refused_memslot_places_the_table_under_trap_and_says_why() {
    let (vm, routes, hv) = guest_with_routes();
    // Memslot 0 is the guest's RAM: KVM refuses to resize it.
    let events = Arc::new(EventLog::new());
    let accel = Arc::new(
        MsixAccelerator::new(
            hv,
            routes,
            Box::new(SoftwareSource::new(4).unwrap()),
            // Pinned: the default (`auto`) would add its PolicyChosen event.
            AccelConfig::new(4, 0, testvm::RAM_SLOT).with_policy(Policy::Fast),
            events.clone(),
        )
        .unwrap(),
    );
    let _service = ServiceThread::spawn(std::slice::from_ref(&accel)).unwrap();
    assert_eq!(
        accel.place(BAR_GPA, BAR_GPA + 0x1000).unwrap(),
        Policy::Trap
    );
    let reported = events.take();
    assert_eq!(reported.len(), 1, "{reported:?}");
    assert_eq!(reported[0].kind, EventKind::PlacementDegraded);
    assert!(reported[0].errno.is_some());
    assert!(
        reported[0].detail.contains("KVM_SET_USER_MEMORY_REGION"),
        "{}",
        reported[0].detail
    );
    // The trapped table works: reads exit and see the model.
    vm.set_mmio_handler(Arc::new(Mmio(accel.clone())));
    let mut p = Program::new();
    let control = p.read(Width::W32, BAR_GPA + 12);
    assert_eq!(vm.run(0, &p).unwrap().get(control), 1, "masked from reset");
    assert!(accel.remove().is_ok());
}

#[test]
fn fast_or_auto_without_a_servicer_places_under_strict_loudly() {
    for policy in [Policy::Fast, Policy::Auto] {
        let (_vm, routes, hv) = guest_with_routes();
        let events = Arc::new(EventLog::new());
        let accel = MsixAccelerator::new(
            hv,
            routes,
            Box::new(SoftwareSource::new(4).unwrap()),
            AccelConfig::new(4, 0, 1).with_policy(policy),
            events.clone(),
        )
        .unwrap();
        assert_eq!(
            accel.place(BAR_GPA, BAR_GPA + 0x1000).unwrap(),
            Policy::Strict
        );
        assert_eq!(accel.fast_entries(), 0);
        // Without a servicer `auto` does not measure (nor report a choice).
        assert_eq!(accel.stats().auto_measurements, 0);
        let reported = events.take();
        assert_eq!(reported.len(), 1, "{policy}: {reported:?}");
        assert_eq!(reported[0].kind, EventKind::FastPathUnserviced);
        // The detail names the policy configured, not always `fast`.
        assert!(
            reported[0]
                .detail
                .starts_with(&format!("policy {policy} without a servicer")),
            "{reported:?}"
        );
    }
}

#[test]
fn a_servicer_going_away_is_reported_and_the_next_placement_runs_under_strict() {
    let mut r = Rig::new(RigConfig::default()).unwrap();
    assert_eq!(r.accel.policy(), Policy::Fast);
    assert_eq!(r.accel.fast_entries(), 8);
    r.stop_service();
    let kinds: Vec<EventKind> = r.take_events().iter().map(|e| e.kind).collect();
    assert_eq!(kinds, vec![EventKind::FastPathUnserviced]);
    // An unmask absorbed now takes effect at the device's next exit.
    r.accel.write_message_control(0x8000).unwrap();
    let mut p = Program::new();
    p.write(Width::W32, r.entry(0, 0), 0xFEE0_0000);
    p.write(Width::W32, r.entry(0, 8), 0x48);
    p.write(Width::W32, r.entry(0, 12), 0);
    r.vm.run(0, &p).unwrap();
    assert!(
        r.accel.debug().is_masked(0).unwrap(),
        "absorbed, not serviced yet"
    );
    let mut p = Program::new();
    p.read(Width::W32, r.pba_gpa); // the next exit
    r.vm.run(0, &p).unwrap();
    assert!(!r.accel.debug().is_masked(0).unwrap());
    r.source.fire(0).unwrap();
    assert_eq!(r.vm.wait_irq_count(0x48, 1).unwrap(), 1);
    // The next placement: strict, and its unmasks exit.
    let bar = r.table_gpa + 0x40_0000;
    assert_eq!(r.accel.move_bar(bar, bar + 0x1000).unwrap(), Policy::Strict);
    assert_eq!(r.accel.fast_entries(), 0);
    r.accel.undo_retired();
    assert_eq!(r.accel.debug().retired_pending(), 0);
}

#[test]
fn moving_the_bar_moves_the_fast_path_and_keeps_the_table() {
    let r = Rig::new(RigConfig::default()).unwrap();
    r.accel.write_message_control(0x8000).unwrap();
    let mut p = Program::new();
    p.write(Width::W32, r.entry(2, 0), 0xFEE0_0000);
    p.write(Width::W32, r.entry(2, 8), 0x47);
    p.write(Width::W32, r.entry(2, 12), 0);
    r.vm.run(0, &p).unwrap();
    r.accel.service_fast_path();

    let new_bar = 0xFE40_0000;
    assert_eq!(
        r.accel.move_bar(new_bar, new_bar + 0x1000).unwrap(),
        Policy::Fast
    );
    assert!(!r.accel.claims(r.table_gpa));
    assert!(r.accel.claims(new_bar));

    // The old address is no longer ours; the new one reads the same table.
    let mut p = Program::new();
    let old = p.read(Width::W32, r.entry(2, 8));
    let new = p.read(Width::W32, new_bar + 2 * 16 + 8);
    let before = r.vm.exits();
    let out = r.vm.run(0, &p).unwrap();
    let exits = r.vm.exits().since(&before);
    assert_eq!(out.get(old), 0xFFFF_FFFF, "unclaimed MMIO reads all ones");
    assert_eq!(out.get(new), 0x47);
    assert_eq!(exits.mmio_unclaimed, 1);
    assert_eq!(exits.mmio(), 1, "the new table is read from the memslot");

    // A Linux cycle at the new address still costs one exit, and delivers.
    let mut cycle = Program::new();
    cycle.repeat(20, |p| {
        p.write(Width::W32, new_bar + 2 * 16 + 12, 1);
        p.read(Width::W32, new_bar);
        p.write(Width::W32, new_bar + 2 * 16 + 12, 0);
    });
    let before = r.vm.exits();
    r.vm.run(0, &cycle).unwrap();
    assert_eq!(r.vm.exits().since(&before).mmio(), 20);
    r.accel.service_fast_path();
    r.source.fire(2).unwrap();
    assert_eq!(r.vm.wait_irq_count(0x47, 1).unwrap(), 1);
}

#[test]
fn suspending_source_masking_moves_masked_vectors_to_the_irqfd_path_keeping_pending() {
    use msix_accel::MaskPath;
    let r = Rig::new(RigConfig {
        maskable: true,
        ..RigConfig::default()
    })
    .unwrap();
    r.accel.write_message_control(0x8000).unwrap();
    let mut p = Program::new();
    for e in 0..2u16 {
        p.write(Width::W32, r.entry(e, 0), 0xFEE0_0000);
        p.write(Width::W32, r.entry(e, 8), 0x60 + u64::from(e));
        p.write(Width::W32, r.entry(e, 12), 0);
    }
    p.write(Width::W32, r.entry(0, 12), 1); // mask entry 0 again
    r.vm.run(0, &p).unwrap();
    r.accel.service_fast_path();
    assert_eq!(r.accel.debug().mask_path(0).unwrap(), MaskPath::Source);
    r.source.fire(0).unwrap();
    assert!(r.accel.pending(0).unwrap());

    // Memory decode goes off (or a reset comes): the source stops masking.
    r.accel.suspend_source_masking().unwrap();
    assert_eq!(
        r.accel.debug().mask_path(0).unwrap(),
        MaskPath::IrqfdDetached
    );
    assert!(
        r.accel.pending(0).unwrap(),
        "the pending message survives the switch"
    );
    r.vm.sentinel_all().unwrap();
    assert_eq!(r.vm.irq_count(0x60), 0, "the switch delivered nothing");

    // New masks use the irqfd path; unmask delivers the pending message once.
    let mut p = Program::new();
    p.write(Width::W32, r.entry(1, 12), 1);
    p.write(Width::W32, r.entry(0, 12), 0);
    r.vm.run(0, &p).unwrap();
    r.accel.service_fast_path();
    assert_eq!(
        r.accel.debug().mask_path(1).unwrap(),
        MaskPath::IrqfdDetached
    );
    assert_eq!(r.vm.wait_irq_count(0x60, 1).unwrap(), 1);
    r.vm.sentinel_all().unwrap();
    assert_eq!(r.vm.irq_count(0x60), 1, "delivered once");

    // Resumed: the next mask is at the source again.
    assert!(r.accel.resume_source_masking());
    let mut p = Program::new();
    p.write(Width::W32, r.entry(0, 12), 1);
    r.vm.run(0, &p).unwrap();
    assert_eq!(r.accel.debug().mask_path(0).unwrap(), MaskPath::Source);
}
