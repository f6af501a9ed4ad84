//! The quick bench's exact counts for `fast`, measured in a real KVM guest:
//! what CI relies on, asserted without any timing.

use msix_accel::Policy;
use msix_bench::bench::{check_row, measure_row, Options, Subject};

#[test]
fn fast_linux_cycle_costs_one_exit_and_never_delivers_while_masked_nor_loses() {
    let options = Options {
        cycles: 50,
        storm_chunks: 2,
        ..Options::quick()
    };
    let subject = Subject::Ours {
        policy: Policy::Fast,
        maskable: false,
    };
    let row = measure_row(subject, &options).expect("the fast row runs");
    assert_eq!(row.policy, "fast");
    assert_eq!(row.cycle.cycles, 50);
    assert_eq!(row.cycle.exits, 50, "exactly 1 exit per Linux mask cycle");
    assert_eq!(row.exits_per_cycle, 1.0);
    assert_eq!(row.storm_delivered_while_masked, 0);
    assert_eq!(row.storm_lost, 0);
    assert_eq!(row.pending_delivered_while_masked, 0);
    assert_eq!(row.pending_delivered_at_unmask, 1);
    assert!(
        row.storm.cycles > 0,
        "the guest cycled its mask during the storm"
    );
    assert_eq!(check_row(subject, &row), Vec::<String>::new());
}
