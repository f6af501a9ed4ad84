//! The bench's rows in real KVM guests: the floors cost exactly the exits
//! they are built for, and each peer model makes exactly the calls its
//! VMM's code makes, per Linux mask cycle, at bring-up and for the pending
//! check. Counts only; nothing timed.

use msix_bench::bench::floor::FloorKind;
use msix_bench::bench::workload::{self, BringUpOrder, CallCounts, Target, VECTOR};
use msix_bench::bench::Subject;
use msix_peers::PeerModel;
use testvm::{Program, Width};

fn row(subject: Subject, vectors: u16) -> Box<dyn Target> {
    let t = subject.build(vectors).expect("the row's guest boots");
    workload::bring_up_entry0(t.as_ref()).expect("entry 0 comes up");
    workload::warm_up(t.as_ref()).expect("warm-up");
    t
}

#[test]
fn floors_cost_exactly_one_and_three_exits_per_cycle_with_no_call_and_deliver() {
    for kind in FloorKind::ALL {
        let t = row(Subject::Floor(kind), 8);
        let batch = workload::cycle_batch(t.as_ref(), 20).unwrap();
        assert_eq!(batch.exits, 20 * kind.exits_per_cycle(), "{}", kind.name());
        assert_eq!(batch.calls, CallCounts::default(), "{}", kind.name());
        let seen = t.vm().irq_count(VECTOR);
        t.source().fire(0).unwrap();
        t.vm().wait_irq_count(VECTOR, seen + 1).unwrap();
    }
}

#[test]
fn each_peer_model_makes_its_vmms_calls_per_linux_cycle() {
    let expected = |model| {
        let mut c = CallCounts::default();
        match model {
            // Re-point to the userspace eventfd and back; a commit at unmask.
            PeerModel::QemuLike => {
                c.set_gsi_routing = 10;
                c.set_irqs = 20;
            }
            // The mask is not acted on; a commit at unmask.
            PeerModel::CloudHypervisorLike => c.set_gsi_routing = 10,
            // irqfd deassign at mask, assign at unmask.
            PeerModel::DragonballLike => {
                c.irqfd_assign = 10;
                c.irqfd_deassign = 10;
            }
            // Re-points only: the message did not change.
            PeerModel::CrosvmLike => c.set_irqs = 20,
        }
        c
    };
    for model in PeerModel::ALL {
        let t = row(Subject::Peer(model), 8);
        let batch = workload::cycle_batch(t.as_ref(), 10).unwrap();
        assert_eq!(batch.exits, 30, "{model}: every access traps");
        assert_eq!(batch.calls, expected(model), "{model}");
    }
}

#[test]
fn bring_up_of_64_vectors_costs_each_model_what_its_code_does() {
    const N: u64 = 64;
    for model in PeerModel::ALL {
        for order in BringUpOrder::ALL {
            let t = Subject::Peer(model).build(64).unwrap();
            let b = workload::bring_up(t.as_ref(), 64, order).unwrap();
            let (commits, irqfd, set_irqs) = match (model, order) {
                // One commit and one irqfd assign at each first unmask; a
                // re-point per unmask and one SET_IRQS at enable.
                (PeerModel::QemuLike, _) => (N, N, N + 1),
                (PeerModel::CloudHypervisorLike, _) => (N, N, 1),
                // One routing call at enable, then one per address/data
                // dword (3 per message); N assigns + N deassigns at enable
                // (Function Mask set), N assigns at the unmasks.
                (PeerModel::DragonballLike, BringUpOrder::Early) => (1 + 3 * N, 3 * N, 1),
                (PeerModel::DragonballLike, BringUpOrder::Reservation) => (1 + 6 * N, 3 * N, 1),
                // Two SET_IRQS at enable, one at the Function Mask clear,
                // one per first unmask.
                (PeerModel::CrosvmLike, _) => (N, N, N + 3),
            };
            assert_eq!(
                (b.route_commits, b.irqfd_ioctls, b.calls.set_irqs),
                (commits, irqfd, set_irqs),
                "{model}, {order:?}"
            );
            let f = b.function_mask.calls;
            let (commits, irqfd, set_irqs) = match model {
                // Release (re-point) of every vector, then use: a commit
                // and a re-point each.
                PeerModel::QemuLike => (N, 0, 2 * N),
                // Setting deassigns every irqfd; clearing commits once per
                // entry with a GSI and assigns again.
                PeerModel::CloudHypervisorLike => (N, 2 * N, 0),
                // Mask and unmask of every unmasked entry.
                PeerModel::DragonballLike => (0, 2 * N, 0),
                // Every vector re-pointed in one SET_IRQS, twice.
                PeerModel::CrosvmLike => (0, 0, 2),
            };
            assert_eq!(
                (f.set_gsi_routing, f.irqfd(), f.set_irqs),
                (commits, irqfd, set_irqs),
                "{model}, Function Mask"
            );
        }
    }
}

#[test]
fn peers_hold_a_masked_message_except_cloud_hypervisor_like() {
    for model in PeerModel::ALL {
        let t = row(Subject::Peer(model), 8);
        let p = workload::pending(t.as_ref()).unwrap();
        if model == PeerModel::CloudHypervisorLike {
            assert!(p.delivered_while_masked >= 1, "{model}: {p:?}");
            assert!(!p.pba_pending, "{model}: its PBA reads the device");
            assert_eq!(p.delivered_at_unmask, 0, "{model}");
        } else {
            assert_eq!(p.delivered_while_masked, 0, "{model}: {p:?}");
            assert!(p.pba_pending, "{model}: {p:?}");
            assert_eq!(p.delivered_at_unmask, 1, "{model}");
        }
    }
}

#[test]
fn qemu_like_serves_the_pba_without_an_exit_until_a_masked_vector_fires() {
    let t = row(Subject::Peer(PeerModel::QemuLike), 8);
    let mut read = Program::new();
    let bits = read.read(Width::W64, t.pba());
    let pba_read = |t: &dyn Target| {
        let exits = t.vm().exits();
        let value = t.vm().run(0, &read).unwrap().get(bits);
        (t.vm().exits().since(&exits).mmio(), value)
    };
    assert_eq!(pba_read(t.as_ref()), (0, 0), "the device's PBA, mapped");
    let mut mask = Program::new();
    mask.write(Width::W32, t.entry(0, 12), 1);
    t.vm().run(0, &mask).unwrap();
    t.source().fire(0).unwrap();
    t.settle().unwrap(); // the main loop saw it
    let memslot_calls = t.calls().set_user_memory_region;
    assert_eq!(pba_read(t.as_ref()), (1, 1), "emulated: the read exits");
    let mut unmask = Program::new();
    unmask.write(Width::W32, t.entry(0, 12), 0);
    t.vm().run(0, &unmask).unwrap();
    t.settle().unwrap();
    assert_eq!(t.calls().set_user_memory_region, memslot_calls + 1);
    assert_eq!(pba_read(t.as_ref()), (0, 0), "mapped again");
}
