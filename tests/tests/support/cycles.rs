//! Linux's mask cycle on entry 0 of a rig, as the tests that count its
//! exits run it.

use msix_rig::rig::Rig;
use testvm::{Program, Width};

/// `n` Linux mask cycles on entry 0 (mask write, flush read, unmask
/// write); returns the MMIO exits they made.
pub fn linux_cycles(r: &Rig, n: u64) -> u64 {
    let mut p = Program::new();
    p.repeat(n, |p| {
        p.write(Width::W32, r.entry(0, 12), 1);
        p.read(Width::W32, r.entry(0, 0));
        p.write(Width::W32, r.entry(0, 12), 0);
    });
    let before = r.vm.exits();
    r.vm.run(0, &p).unwrap();
    r.vm.exits().since(&before).mmio()
}
