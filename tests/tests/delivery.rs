//! Interrupt delivery from the source to the guest with no accelerator in
//! between: a software MSI-X source, irqfds and MSI routes from
//! `irqfd-routes`, and a real KVM guest counting interrupts per IDT vector.
//! This is the fast path's foundation: device -> eventfd -> irqfd -> LAPIC,
//! never through VMM userspace.

use std::sync::Arc;
use std::time::Duration;

use irqfd_routes::{
    eventfd_drain, eventfd_pending, Gsi, GsiRouting, IrqchipRoutes, Irqfd, MsiMessage,
    MsiRouteTable,
};
use msix_hypervisor::{CountingVm, KvmVm};
use msix_rig::storm::storm_count;
use testvm::{TestVm, VmConfig};
use vfio_vectors::software::SoftwareSource;
use vfio_vectors::MsixSource;

/// First IDT vector the tests route to; 0x40.. stays clear of exceptions
/// (0..0x20), the doorbell (0xFE) and the spurious vector (0xFF).
const FIRST_IDT: u8 = 0x40;

/// A guest, its VM-wide routing table, and a software device whose vectors
/// each have a GSI and an irqfd.
struct Bench {
    vm: TestVm,
    routing: GsiRouting,
    hv: Arc<CountingVm<KvmVm>>,
    source: SoftwareSource,
    gsis: Vec<Gsi>,
    irqfds: Vec<Irqfd>,
}

impl Bench {
    /// Boots a guest with `vcpus` vCPUs and an enabled `vectors`-vector source
    /// with one GSI per vector (allocated, no route yet, no irqfd attached).
    fn new(vcpus: u8, vectors: u16) -> Bench {
        let vm = TestVm::new(VmConfig {
            vcpus,
            watchdog: Duration::from_secs(10),
            ..VmConfig::default()
        })
        .expect("guest boots");
        let hv = Arc::new(CountingVm::new(KvmVm::new(vm.vm().clone())));
        let routing =
            GsiRouting::new(hv.clone(), IrqchipRoutes::X86KernelIrqchip).expect("routing table");
        let mut source = SoftwareSource::new(vectors).expect("source");
        source.enable(vectors).expect("MSI-X enabled at the source");
        let gsis = (0..vectors)
            .map(|_| routing.allocate().expect("free GSI"))
            .collect();
        let irqfds = (0..vectors).map(|_| Irqfd::new(hv.clone())).collect();
        Bench {
            vm,
            routing,
            hv,
            source,
            gsis,
            irqfds,
        }
    }

    /// Stages `vector`'s route: IDT `idt` on `vcpu` (not committed).
    fn stage(&mut self, vector: u16, vcpu: u8, idt: u8) {
        let message = MsiMessage::new(TestVm::msi_address(vcpu), u32::from(idt));
        self.routing
            .stage(self.gsis[usize::from(vector)], message)
            .expect("stage route");
    }

    /// Attaches `vector`'s irqfd, then drops the count KVM injected on
    /// assignment (the protocol in irqfd-routes' docs).
    fn attach(&mut self, vector: u16) {
        let v = usize::from(vector);
        let trigger = self.source.trigger(vector).expect("trigger");
        self.irqfds[v]
            .attach(trigger, self.gsis[v])
            .expect("irqfd attach");
        eventfd_drain(trigger).expect("drain");
    }

    fn detach(&mut self, vector: u16) {
        let trigger = self.source.trigger(vector).expect("trigger");
        self.irqfds[usize::from(vector)]
            .detach(trigger)
            .expect("irqfd detach");
    }

    fn pending(&self, vector: u16) -> bool {
        eventfd_pending(self.source.trigger(vector).expect("trigger")).expect("poll")
    }

    fn set_gsi_routing_calls(&self) -> u64 {
        self.hv.counts().set_gsi_routing
    }
}

/// IDT vector of device vector `v` when routes spread over `spread` IDT vectors.
fn idt(v: u16, spread: u16) -> u8 {
    FIRST_IDT + (v % spread) as u8
}

#[test]
fn sixty_four_vectors_each_reach_their_own_idt_vector_without_exits() {
    let mut b = Bench::new(1, 64);
    for v in 0..64 {
        b.stage(v, 0, idt(v, 64));
    }
    assert_eq!(b.routing.commit().unwrap().calls, 1);
    for v in 0..64 {
        b.attach(v);
    }
    let exits_before = b.vm.exits();

    // Every vector targets its own IDT vector, so nothing can coalesce in
    // the LAPIC: no need to wait between fires.
    for v in 0..64 {
        b.source.fire(v).unwrap();
    }
    for v in 0..64 {
        assert_eq!(b.vm.wait_irq_count(idt(v, 64), 1).unwrap(), 1, "vector {v}");
    }
    // Anything more in the local APIC is taken before the sentinel.
    b.vm.sentinel_all().unwrap();
    for v in 0..64 {
        assert_eq!(b.vm.irq_count(idt(v, 64)), 1, "vector {v} delivered once");
    }
    assert_eq!(
        b.vm.exits().since(&exits_before).mmio(),
        0,
        "delivery never exits to userspace"
    );
}

#[test]
fn detached_vector_accumulates_then_delivers_exactly_once_on_reattach() {
    let mut b = Bench::new(1, 1);
    b.stage(0, 0, FIRST_IDT);
    b.routing.commit().unwrap();
    b.attach(0);
    b.detach(0);

    b.source.fire_n(0, 5).unwrap();
    b.vm.sentinel_all().unwrap();
    assert_eq!(
        b.vm.irq_count(FIRST_IDT),
        0,
        "a detached vector delivers nothing"
    );
    assert!(b.pending(0), "the fires wait in the eventfd count");
    assert!(
        b.pending(0),
        "looking at the pending state never consumes it"
    );

    b.attach(0);
    assert_eq!(b.vm.wait_irq_count(FIRST_IDT, 1).unwrap(), 1);
    b.vm.sentinel_all().unwrap();
    assert_eq!(
        b.vm.irq_count(FIRST_IDT),
        1,
        "five accumulated fires are one interrupt, delivered once"
    );
    assert!(!b.pending(0), "the delivered count is no longer pending");
}

#[test]
fn route_change_moves_delivery_to_a_new_vector_and_vcpu() {
    let mut b = Bench::new(2, 1);
    b.stage(0, 0, 0x40);
    b.routing.commit().unwrap();
    b.attach(0);
    b.source.fire(0).unwrap();
    b.vm.wait_irq_count(0x40, 1).unwrap();
    assert_eq!(b.vm.irq_count_on(0, 0x40), 1);

    b.stage(0, 1, 0x45);
    assert_eq!(b.routing.commit().unwrap().calls, 1);
    b.source.fire(0).unwrap();
    b.vm.wait_irq_count(0x45, 1).unwrap();
    b.vm.sentinel_all().unwrap();
    assert_eq!(
        b.vm.irq_count_on(1, 0x45),
        1,
        "the new route's vCPU and vector"
    );
    assert_eq!(b.vm.irq_count_on(0, 0x45), 0);
    assert_eq!(b.vm.irq_count(0x40), 1, "nothing more on the old vector");
}

/// Brings up `vectors` vectors spread over 64 IDT vectors: stage every
/// route, one commit, attach every irqfd. Returns the bench and how many
/// KVM_SET_GSI_ROUTING the bring-up cost.
fn bring_up(vectors: u16) -> (Bench, u64) {
    let mut b = Bench::new(1, vectors);
    let before = b.set_gsi_routing_calls();
    for v in 0..vectors {
        b.stage(v, 0, idt(v, 64));
    }
    b.routing.commit().unwrap();
    for v in 0..vectors {
        b.attach(v);
    }
    let cost = b.set_gsi_routing_calls() - before;
    (b, cost)
}

#[test]
fn bringing_up_256_vectors_costs_a_constant_number_of_routing_commits() {
    let (small, small_cost) = bring_up(32);
    drop(small);
    let (b, cost) = bring_up(256);
    assert_eq!(cost, 1, "one KVM_SET_GSI_ROUTING for 256 routes");
    assert_eq!(
        cost, small_cost,
        "the cost does not grow with the vector count"
    );

    // 256 vectors share 64 IDT vectors: fire one vector per IDT vector at a
    // time and wait, so no two fires coalesce in the LAPIC.
    for round in 0..4u16 {
        for v in round * 64..(round + 1) * 64 {
            b.source.fire(v).unwrap();
        }
        for v in round * 64..(round + 1) * 64 {
            let count =
                b.vm.wait_irq_count(idt(v, 64), u64::from(round) + 1)
                    .unwrap();
            assert_eq!(count, u64::from(round) + 1, "vector {v}");
        }
    }
}

#[test]
fn storm_of_100k_fires_across_8_vectors_loses_nothing() {
    let mut b = Bench::new(1, 8);
    for v in 0..8 {
        b.stage(v, 0, idt(v, 8));
    }
    b.routing.commit().unwrap();
    for v in 0..8 {
        b.attach(v);
    }

    let report = storm_count(&b.source, (0..8).collect(), 100_000)
        .unwrap()
        .wait(b.vm.watchdog())
        .unwrap();
    assert!(report.error.is_none() && !report.panicked, "{report:?}");
    assert_eq!(report.total, 100_000);
    assert_eq!(report.signalled, 100_000, "every fire reached its eventfd");

    // Fires end; what reached the local APIC is taken before the sentinel.
    b.vm.sentinel_all().unwrap();
    for v in 0..8 {
        let fired = b.source.stats(v).unwrap().fired;
        let delivered = b.vm.irq_count(idt(v, 8));
        assert!(delivered >= 1, "vector {v} delivered");
        // Edge interrupts coalesce: several eventfd signals consumed by one
        // irqfd wakeup, or several injections while the IDT vector is already
        // pending in the LAPIC's IRR, are one interrupt. That coalescing is the
        // only allowed difference between fired and delivered.
        assert!(
            delivered <= fired,
            "vector {v}: {delivered} delivered > {fired} fired"
        );
    }

    // Nothing is lost: a fire after the storm is always followed by a
    // delivery, so the storm left no vector stuck (no IRR bit never EOI'd, no
    // eventfd count KVM never consumed).
    let after: Vec<u64> = (0..8).map(|v| b.vm.irq_count(idt(v, 8))).collect();
    for v in 0..8 {
        b.source.fire(v).unwrap();
    }
    for v in 0..8u16 {
        let count =
            b.vm.wait_irq_count(idt(v, 8), after[usize::from(v)] + 1)
                .unwrap();
        assert!(count > after[usize::from(v)], "vector {v}");
        assert!(count <= b.source.stats(v).unwrap().fired);
    }
}
