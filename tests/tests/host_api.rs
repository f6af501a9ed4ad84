//! The host-side API under bad input and failing ioctls: typed errors that
//! name the problem, and state that stays consistent. Also BAR moves.

use std::sync::Arc;

use irqfd_routes::{GsiRouting, IoctlCounters, IrqchipRoutes, SharedRouting};
use msix_accel::{AccelConfig, Error, MsixAccelerator, Policy};
use msix_bench::rig::{Rig, RigConfig, BAR_GPA};
use testvm::{Program, TestVm, VmConfig, Width};
use vfio_vectors::software::SoftwareSource;

fn guest() -> TestVm {
    TestVm::new(VmConfig::default()).expect("guest boots")
}

/// A guest, its VM-wide routing table and the ioctl counters they share.
fn guest_with_routes() -> (TestVm, SharedRouting, Arc<IoctlCounters>) {
    let vm = guest();
    let ioctls = Arc::new(IoctlCounters::default());
    let routes = GsiRouting::new(
        vm.vm().clone(),
        IrqchipRoutes::X86KernelIrqchip,
        ioctls.clone(),
    )
    .unwrap()
    .into_shared();
    (vm, routes, ioctls)
}

#[test]
fn vector_out_of_range_is_a_typed_error() {
    let r = Rig::new(RigConfig::default()).unwrap();
    for result in [
        r.accel.pending(8).map(|_| ()),
        r.accel.is_masked(8).map(|_| ()),
        r.accel.entry(2048).map(|_| ()),
        r.accel.mask_path(u16::MAX).map(|_| ()),
    ] {
        match result {
            Err(Error::Model(msix_model::Error::VectorOutOfRange { table_size: 8, .. })) => {}
            other => panic!("expected VectorOutOfRange, got {other:?}"),
        }
    }
}

#[test]
fn exhausted_gsis_fail_creation_and_release_what_was_taken() {
    let (vm, routes, ioctls) = guest_with_routes();
    // Leave exactly 5 GSIs free, then ask for a device of 8 vectors.
    let mut taken = Vec::new();
    while let Ok(g) = routes.lock().unwrap().allocate() {
        taken.push(g);
    }
    for g in taken.drain(taken.len() - 5..) {
        routes.lock().unwrap().release(g).unwrap();
    }
    let err = MsixAccelerator::new(
        vm.vm().clone(),
        routes.clone(),
        Box::new(SoftwareSource::new(8).unwrap()),
        AccelConfig::new(8, 0, 1),
        ioctls.clone(),
    )
    .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Routing(irqfd_routes::Error::GsiExhausted { .. })
        ),
        "{err}"
    );
    // The 5 GSIs it took were given back: a 5-vector device fits.
    let accel = MsixAccelerator::new(
        vm.vm().clone(),
        routes,
        Box::new(SoftwareSource::new(5).unwrap()),
        AccelConfig::new(5, 0, 1),
        ioctls,
    );
    assert!(accel.is_ok(), "{:?}", accel.err());
}

#[test]
fn source_and_table_sizes_must_agree() {
    let (vm, routes, ioctls) = guest_with_routes();
    let err = MsixAccelerator::new(
        vm.vm().clone(),
        routes,
        Box::new(SoftwareSource::new(4).unwrap()),
        AccelConfig::new(8, 0, 1),
        ioctls,
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
fn a_failing_memslot_ioctl_is_reported_with_its_errno_and_leaves_the_table_unplaced() {
    let (vm, routes, ioctls) = guest_with_routes();
    // Memslot 0 is the guest's RAM: moving it is refused by KVM.
    let accel = MsixAccelerator::new(
        vm.vm().clone(),
        routes,
        Box::new(SoftwareSource::new(4).unwrap()),
        AccelConfig::new(4, 0, testvm::RAM_SLOT),
        ioctls,
    )
    .unwrap();
    let err = accel.place(BAR_GPA, BAR_GPA + 0x1000).unwrap_err();
    match err {
        Error::Binding(kvm_msix_error) => {
            let text = kvm_msix_error.to_string();
            assert!(
                text.contains("KVM_SET_USER_MEMORY_REGION") && text.contains("errno"),
                "{text}"
            );
        }
        other => panic!("expected a binding error, got {other}"),
    }
    assert!(!accel.claims(BAR_GPA), "a failed placement claims nothing");
    // Consistent: a trap placement (no memslot) still works afterwards.
    assert!(accel.remove().is_ok());
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
    r.accel.service_fast_path().unwrap();

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
    r.accel.service_fast_path().unwrap();
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
    r.accel.service_fast_path().unwrap();
    assert_eq!(r.accel.mask_path(0).unwrap(), MaskPath::Source);
    r.source.fire(0).unwrap();
    assert!(r.accel.pending(0).unwrap());

    // Memory decode goes off (or a reset comes): the source stops masking.
    r.accel.suspend_source_masking().unwrap();
    assert_eq!(r.accel.mask_path(0).unwrap(), MaskPath::IrqfdDetached);
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
    r.accel.service_fast_path().unwrap();
    assert_eq!(r.accel.mask_path(1).unwrap(), MaskPath::IrqfdDetached);
    assert_eq!(r.vm.wait_irq_count(0x60, 1).unwrap(), 1);
    r.vm.sentinel_all().unwrap();
    assert_eq!(r.vm.irq_count(0x60), 1, "delivered once");

    // Resumed: the next mask is at the source again.
    assert!(r.accel.resume_source_masking());
    let mut p = Program::new();
    p.write(Width::W32, r.entry(0, 12), 1);
    r.vm.run(0, &p).unwrap();
    assert_eq!(r.accel.mask_path(0).unwrap(), MaskPath::Source);
}
