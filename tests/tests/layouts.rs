//! Every table and PBA layout the PCI spec allows, under every policy, with
//! and without source masking, in a real guest: the PBA reads its bits
//! wherever it is (on the table's page too), bytes that are neither table
//! nor PBA are left to the VMM, the table's page is mapped only when
//! nothing else lives on it, and table and PBA follow their own BARs.

#[path = "support/settle.rs"]
mod settle;

use msix_accel::{BarOffset, Error, Policy};
use msix_rig::rig::{Rig, RigConfig, RigDevice, RigLayout};
use testvm::{Program, TestVm, Width};

const POLICIES: [Policy; 3] = [Policy::Fast, Policy::Strict, Policy::Trap];

/// A layout, the policy it allows (None: the one asked for) and addresses
/// in its BARs (from the device's BAR 0) that are neither table nor PBA.
struct Case {
    name: &'static str,
    layout: RigLayout,
    forced: Option<Policy>,
    foreign: &'static [(u8, u64)],
}

fn cases() -> Vec<Case> {
    let at = |bir, offset| BarOffset::new(bir, offset);
    vec![
        Case {
            name: "standard: table at 0, PBA on the next page",
            layout: RigLayout::standard(8),
            forced: None,
            foreign: &[],
        },
        Case {
            name: "PBA on the table's page",
            layout: RigLayout {
                table: at(0, 0),
                pba: at(0, 0x800),
                bar_size: None,
            },
            forced: Some(Policy::Trap),
            foreign: &[],
        },
        Case {
            name: "table and PBA in different BARs",
            layout: RigLayout {
                table: at(0, 0),
                pba: at(2, 0),
                bar_size: None,
            },
            forced: None,
            foreign: &[],
        },
        Case {
            name: "table off a page boundary among other registers",
            layout: RigLayout {
                table: at(0, 0x200),
                pba: at(0, 0x300),
                bar_size: None,
            },
            forced: Some(Policy::Trap),
            // Before the table, between table and PBA, after the PBA.
            foreign: &[
                (0, 0x0),
                (0, 0x1FC),
                (0, 0x280),
                (0, 0x2FC),
                (0, 0x308),
                (0, 0xFFC),
            ],
        },
        Case {
            name: "BARs of 256 bytes sharing a page",
            layout: RigLayout {
                table: at(0, 0),
                pba: at(1, 0),
                bar_size: Some(0x100),
            },
            forced: Some(Policy::Trap),
            // Past the table in BAR 0, past the PBA in BAR 1, BAR 2.
            foreign: &[(0, 0x80), (0, 0xFC), (1, 0x8), (1, 0xFC), (2, 0x0)],
        },
    ]
}

fn rig(layout: RigLayout, policy: Policy, maskable: bool) -> Rig {
    Rig::new(RigConfig {
        vectors: 8,
        policy,
        maskable,
        layout: Some(layout),
        ..RigConfig::default()
    })
    .expect("rig boots")
}

fn program(p: &mut Program, d: &RigDevice, entry: u16, idt: u8) {
    p.write(Width::W32, d.entry(entry, 0), TestVm::msi_address(0));
    p.write(Width::W32, d.entry(entry, 4), 0);
    p.write(Width::W32, d.entry(entry, 8), u64::from(idt));
}

/// Exits to userspace of one Linux mask cycle under `policy`.
fn cycle_exits(policy: Policy) -> u64 {
    policy.linux_cycle_exits()
}

fn layout_works(case: &Case, policy: Policy, maskable: bool) {
    let what = format!("{} under {policy} maskable={maskable}", case.name);
    let r = rig(case.layout, policy, maskable);
    let d = &r.devices[0];
    let effective = case.forced.unwrap_or(policy);
    assert_eq!(r.accel.policy(), effective, "{what}");
    assert_eq!(
        r.accel.fast_entries() > 0,
        effective == Policy::Fast,
        "{what}"
    );
    r.accel.write_message_control(0x8000).unwrap();
    let mut p = Program::new();
    program(&mut p, d, 0, 0x40);
    program(&mut p, d, 5, 0x45);
    p.write(Width::W32, d.entry(0, 12), 0);
    r.vm.run(0, &p).unwrap();

    // Entry 5 is masked: its interrupts wait in the PBA, which the guest
    // reads exactly wherever it is.
    d.source.fire(5).unwrap();
    d.source.fire(5).unwrap();
    let before = r.accel.stats();
    let mut p = Program::new();
    let qword = p.read(Width::W64, d.pba_gpa);
    let dword = p.read(Width::W32, d.pba_gpa);
    let byte = p.read(Width::W8, d.pba_gpa);
    let out = r.vm.run(0, &p).unwrap();
    assert_eq!(
        (out.get(qword), out.get(dword), out.get(byte)),
        (1 << 5, 1 << 5, 1 << 5),
        "{what}: the guest reads entry 5 pending"
    );
    let stats = r.accel.stats().since(&before);
    assert_eq!(
        (stats.pba_read_exits, stats.table_read_exits),
        (3, 0),
        "{what}: PBA reads are PBA reads"
    );
    r.vm.sentinel(0).unwrap();
    assert_eq!(r.vm.irq_count(0x45), 0, "{what}: none while masked");

    // Unmasking delivers the held interrupt once.
    let mut p = Program::new();
    p.write(Width::W32, d.entry(5, 12), 0);
    let after = p.read(Width::W64, d.pba_gpa);
    let out = r.vm.run(0, &p).unwrap();
    assert_eq!(r.vm.wait_irq_count(0x45, 1).unwrap(), 1, "{what}");
    r.vm.sentinel(0).unwrap();
    assert_eq!(r.vm.irq_count(0x45), 1, "{what}: exactly once");
    assert_eq!(out.get(after), 0, "{what}: no longer pending");

    // A Linux mask cycle costs what the effective policy promises, and the
    // entry delivers afterwards.
    let exits = r.vm.exits();
    let mut p = Program::new();
    p.write(Width::W32, d.entry(0, 12), 1);
    p.read(Width::W32, d.entry(0, 0));
    p.write(Width::W32, d.entry(0, 12), 0);
    r.vm.run(0, &p).unwrap();
    assert_eq!(
        r.vm.exits().since(&exits).mmio(),
        cycle_exits(effective),
        "{what}"
    );
    d.source.fire(0).unwrap();
    assert_eq!(r.vm.wait_irq_count(0x40, 1).unwrap(), 1, "{what}");

    // Masked again: nothing delivered, the bit shows, unmask delivers.
    let mut p = Program::new();
    p.write(Width::W32, d.entry(0, 12), 1);
    r.vm.run(0, &p).unwrap();
    d.source.fire(0).unwrap();
    r.vm.sentinel(0).unwrap();
    assert_eq!(r.vm.irq_count(0x40), 1, "{what}: none while masked");
    let mut p = Program::new();
    let bits = p.read(Width::W32, d.pba_gpa);
    p.write(Width::W32, d.entry(0, 12), 0);
    let out = r.vm.run(0, &p).unwrap();
    assert_eq!(out.get(bits), 1, "{what}");
    assert_eq!(r.vm.wait_irq_count(0x40, 2).unwrap(), 2, "{what}");

    // What is neither table nor PBA is the VMM's: not claimed, reads of
    // the guest come back from the VMM (all ones here), writes do nothing.
    let exits = r.vm.exits();
    let mut p = Program::new();
    let reads: Vec<_> = case
        .foreign
        .iter()
        .map(|&(bir, offset)| {
            let gpa = d.bar_gpa(bir) + offset;
            assert!(!r.accel.claims(gpa), "{what}: {gpa:#x} claimed");
            p.write(Width::W32, gpa, 0);
            p.read(Width::W32, gpa)
        })
        .collect();
    let out = r.vm.run(0, &p).unwrap();
    for slot in reads {
        assert_eq!(out.get(slot), 0xFFFF_FFFF, "{what}");
    }
    assert_eq!(
        r.vm.exits().since(&exits).mmio_unclaimed,
        2 * case.foreign.len() as u64,
        "{what}"
    );
    assert_eq!(r.take_events(), vec![], "{what}");
}

#[test]
fn every_layout_works_under_every_policy_with_and_without_source_masking() {
    for case in cases() {
        for policy in POLICIES {
            for maskable in [false, true] {
                layout_works(&case, policy, maskable);
            }
        }
    }
}

fn separate_bars(policy: Policy) -> Rig {
    rig(
        RigLayout {
            table: BarOffset::new(0, 0),
            pba: BarOffset::new(2, 0),
            bar_size: None,
        },
        policy,
        false,
    )
}

/// The guest reads the PBA's first qword at `pba`.
fn guest_pba(r: &Rig, pba: u64) -> u64 {
    let mut p = Program::new();
    let slot = p.read(Width::W64, pba);
    r.vm.run(0, &p).unwrap().get(slot)
}

#[test]
fn the_pba_bar_moves_alone_without_touching_the_table() {
    let r = separate_bars(Policy::Fast);
    let d = &r.devices[0];
    r.accel.write_message_control(0x8000).unwrap();
    d.source.fire(3).unwrap();
    let ioctls = r.ioctls();
    let moved = d.bar_gpa(2) + 0x4_0000;
    assert_eq!(r.accel.set_bar(2, Some(moved)).unwrap(), Policy::Fast);
    assert_eq!(
        r.ioctls().since(&ioctls).total(),
        0,
        "no memslot or ioeventfd work"
    );
    assert!(!r.accel.claims(d.pba_gpa), "the old PBA address is free");
    assert_eq!(guest_pba(&r, moved), 1 << 3);
    assert_eq!(r.accel.fast_entries(), 8, "the table keeps its fast path");
    // The table moves alone; the PBA stays.
    let table = d.bar_gpa(0) + 0xC_0000;
    assert_eq!(r.accel.set_bar(0, Some(table)).unwrap(), Policy::Fast);
    assert!(!r.accel.claims(d.table_gpa));
    assert!(r.accel.claims(table + 0x7C));
    assert_eq!(guest_pba(&r, moved), 1 << 3);
    // The table's BAR stops decoding: the PBA still answers.
    r.accel.set_bar(0, None).unwrap();
    assert!(!r.accel.claims(table));
    assert_eq!(guest_pba(&r, moved), 1 << 3);
    // A BAR holding neither structure changes nothing. The table's two
    // moves above retired its unmask ioeventfds, which the service thread
    // undoes on its own time: the count starts once it has.
    settle::wait_retired(&r);
    let ioctls = r.ioctls();
    r.accel.set_bar(4, Some(0xFD00_0000)).unwrap();
    assert_eq!(r.ioctls().since(&ioctls).total(), 0);
    assert!(matches!(
        r.accel.set_bar(6, Some(0)),
        Err(Error::InvalidBar(6))
    ));
    assert_eq!(r.take_events(), vec![]);
}

#[test]
fn a_pba_bar_programmed_onto_the_table_page_makes_it_trap_until_it_leaves() {
    for policy in [Policy::Fast, Policy::Strict] {
        let r = separate_bars(policy);
        let d = &r.devices[0];
        r.accel.write_message_control(0x8000).unwrap();
        d.source.fire(2).unwrap();
        // A hostile guest puts BAR 2 over the second half of the table's page.
        let onto = d.table_gpa + 0x800;
        assert_eq!(r.accel.set_bar(2, Some(onto)).unwrap(), Policy::Trap);
        assert_eq!(guest_pba(&r, onto), 1 << 2, "{policy}: read as PBA");
        let mut p = Program::new();
        let entry = p.read(Width::W32, d.entry(2, 12));
        assert_eq!(r.vm.run(0, &p).unwrap().get(entry), 1, "{policy}");
        // BAR 2 back where it was: the table is mapped again.
        assert_eq!(r.accel.set_bar(2, Some(d.bar_gpa(2))).unwrap(), policy);
        assert_eq!(guest_pba(&r, d.pba_gpa), 1 << 2, "{policy}");
        assert_eq!(r.take_events(), vec![], "{policy}");
    }
}

#[test]
fn a_bar_at_the_top_of_the_address_space_decodes_nothing_and_breaks_nothing() {
    let r = separate_bars(Policy::Fast);
    let d = &r.devices[0];
    // Neither the table (0x80 bytes) nor the PBA (8 bytes) fits below 2^64.
    let top = u64::MAX - 0x3F;
    r.accel.set_bar(0, Some(top)).unwrap();
    r.accel.set_bar(2, Some(u64::MAX - 3)).unwrap();
    assert!(!r.accel.claims(top));
    assert!(!r.accel.claims(u64::MAX - 3));
    assert!(!r.accel.claims(d.table_gpa));
    assert!(!r.accel.claims(d.pba_gpa));
    // Both back: everything works again.
    assert_eq!(
        r.accel.set_bar(0, Some(d.bar_gpa(0))).unwrap(),
        Policy::Fast
    );
    r.accel.set_bar(2, Some(d.bar_gpa(2))).unwrap();
    r.accel.write_message_control(0x8000).unwrap();
    let mut p = Program::new();
    program(&mut p, d, 1, 0x41);
    p.write(Width::W32, d.entry(1, 12), 0);
    r.vm.run(0, &p).unwrap();
    d.source.fire(1).unwrap();
    assert_eq!(r.vm.wait_irq_count(0x41, 1).unwrap(), 1);
    assert_eq!(r.take_events(), vec![]);
}
