//! Entry 0 of a rig as the tests that count a Linux mask cycle's exits use
//! it: brought up, then cycled.

use msix_rig::rig::Rig;
use testvm::{Program, Width};

/// Programs entry 0 for IDT `vector` on vCPU 0, enables MSI-X, unmasks,
/// and applies an unmask the fast path absorbed.
pub fn bring_up(r: &Rig, vector: u8) {
    r.accel.write_message_control(0x8000).unwrap();
    let mut p = Program::new();
    p.write(Width::W32, r.entry(0, 0), 0xFEE0_0000);
    p.write(Width::W32, r.entry(0, 4), 0);
    p.write(Width::W32, r.entry(0, 8), u64::from(vector));
    p.write(Width::W32, r.entry(0, 12), 0);
    r.vm.run(0, &p).unwrap();
    r.accel.service_fast_path();
}

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

/// Linux's mask of entry 0: the Vector Control write, then the flush read
/// of the entry's address; returns what the flush read saw.
pub fn mask(r: &Rig) -> u64 {
    let mut p = Program::new();
    p.write(Width::W32, r.entry(0, 12), 1);
    let flush = p.read(Width::W32, r.entry(0, 0));
    r.vm.run(0, &p).unwrap().get(flush)
}

/// Unmasks entry 0 and checks that the interrupt it held reaches the guest
/// exactly once at IDT `vector` (a sentinel after it proves no second one).
pub fn unmask_delivers_once(r: &Rig, vector: u8, what: &str) {
    let mut p = Program::new();
    p.write(Width::W32, r.entry(0, 12), 0);
    r.vm.run(0, &p).unwrap();
    assert_eq!(r.vm.wait_irq_count(vector, 1).unwrap(), 1, "{what}");
    r.vm.sentinel_all().unwrap();
    assert_eq!(r.vm.irq_count(vector), 1, "{what}: delivered once");
}
