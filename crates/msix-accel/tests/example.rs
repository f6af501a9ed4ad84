//! The `vmm_device` example as a test: a VMM-side PCI device around an
//! `MsixAccelerator`, in a real KVM guest, keeps the fast path's exit counts
//! across a BAR move and carries a pending interrupt across migration.

#[path = "../examples/vmm_device.rs"]
#[allow(dead_code)]
mod vmm_device;

use msix_accel::Policy;

fn run(policy: Policy) -> vmm_device::Report {
    let report = vmm_device::run_with(policy).unwrap_or_else(|e| panic!("{policy}: {e}"));
    for step in report.steps.iter().filter(|s| !s.ok) {
        eprintln!("{policy}: step {:?} observed {}", step.name, step.observed);
    }
    report
}

#[test]
fn example_device_runs_the_fast_path_and_migrates_a_pending_interrupt() {
    let r = run(Policy::Fast);
    assert!(r.all_ok());
    assert_eq!(r.bar_size, 0x2000);
    assert_eq!(r.placed_policy, Some(Policy::Fast));
    // Address, upper address and data exit; the unmask is absorbed.
    assert_eq!(r.programming_exits, 3);
    assert_eq!(r.cycle_exits, 1);
    assert_eq!(r.cycle_exits_after_move, 1);
    assert!(r.old_address_unclaimed);
    assert_eq!(r.deliveries_before_migration, 2);
    assert_eq!(r.pending_at_snapshot, vec![0]);
    // On the new VM: pending, not delivered, until the guest unmasks;
    // then exactly one delivery and the PBA bit clears.
    assert_eq!(r.pba_after_restore, 1);
    assert_eq!(r.deliveries_after_restore, 0);
    assert_eq!(r.deliveries_after_unmask, 1);
    assert_eq!(r.pba_after_unmask, 0);
    assert_eq!(r.deliveries_after_next_fire, 2);
    assert!(
        r.decode_off_source_untouched,
        "decode off must stop masking at the source before the mapping goes"
    );
}

#[test]
fn example_device_costs_two_exits_per_cycle_under_strict_and_three_under_trap() {
    for (policy, per_cycle) in [(Policy::Strict, 2), (Policy::Trap, 3)] {
        let r = run(policy);
        assert!(r.all_ok(), "{policy}");
        assert_eq!(r.placed_policy, Some(policy));
        assert_eq!(r.programming_exits, 4, "{policy}: the unmask exits too");
        assert_eq!(r.cycle_exits, per_cycle, "{policy}");
        assert_eq!(r.cycle_exits_after_move, per_cycle, "{policy}");
        assert_eq!(r.pending_at_snapshot, vec![0], "{policy}");
        assert_eq!(r.deliveries_after_restore, 0, "{policy}");
        assert_eq!(r.deliveries_after_unmask, 1, "{policy}");
    }
}

#[test]
fn example_device_under_auto_costs_what_its_choice_costs() {
    let r = run(Policy::Auto);
    assert!(r.all_ok());
    let chosen = r.placed_policy.expect("placed");
    assert!(
        matches!(chosen, Policy::Fast | Policy::Strict),
        "auto placed {chosen}"
    );
    assert_eq!(r.cycle_exits, chosen.linux_cycle_exits(), "{chosen}");
    assert_eq!(r.cycle_exits_after_move, chosen.linux_cycle_exits());
    assert_eq!(
        r.programming_exits,
        3 + u64::from(chosen == Policy::Strict),
        "{chosen}: the unmask exits only under strict"
    );
    assert_eq!(r.deliveries_after_restore, 0);
    assert_eq!(r.deliveries_after_unmask, 1);
}
