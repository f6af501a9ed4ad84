//! One round of `msix-bench stress` in-process, beside a churn guest and
//! file I/O (no CPU hogs: the test suite is load enough): every policy
//! passes the bench's exact checks, with no masked-window violation.

use msix_bench::stress::load::LoadConfig;
use msix_bench::stress::{run, subjects, Options};

#[test]
fn one_round_under_churn_and_io_passes_every_check_with_no_violation() {
    let options = Options {
        rounds: Some(1),
        duration: None,
        json: true,
        load: LoadConfig {
            hogs: 0,
            churn: true,
            io: true,
        },
    };
    let report = run(&options).expect("the load runs");
    assert_eq!(report.rounds, 1);
    assert_eq!(report.failures, Vec::<String>::new());
    assert_eq!(report.passed, subjects().len() as u64);
    assert_eq!(report.failed, 0);
    assert_eq!(
        report.violations, 0,
        "deliveries raised after a mask took effect"
    );
    for p in &report.policies {
        assert_eq!(p.runs, 1, "{}", p.policy);
        assert_eq!(p.cycles, 200, "{}", p.policy);
        assert_eq!(p.storm_cycles, 100, "{}: masked windows", p.policy);
        assert_eq!(p.lost, 0, "{}", p.policy);
    }
    assert!(report.load.churn_guests >= 1, "{:?}", report.load);
    assert!(report.load.io_files >= 1, "{:?}", report.load);
    assert!(report.load.errors.is_empty(), "{:?}", report.load.errors);
}
