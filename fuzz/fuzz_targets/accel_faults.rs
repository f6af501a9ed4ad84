//! Fuzz target `accel_faults`: a real `MsixAccelerator` (its plan, executor,
//! routing table and placement) driven by arbitrary guest accesses, device
//! interrupts, Message Control writes, decode changes, resets and injected
//! hypervisor failures, over `msix_hypervisor::fake::FakeVm`, checked after
//! every step against the reference `msix-model` and the invariants of
//! `tests/tests/support/accel_harness.rs` (no interrupt lost, none delivered
//! while masked or to a stale message, nothing leaked, events only where a
//! fault or the guest's own bad message explains them).

#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use msix_accel::Policy;

#[path = "../../tests/tests/support/accel_harness.rs"]
mod harness;

use harness::{errno_of, op_of, Harness, Step};

#[derive(Arbitrary, Debug)]
enum FuzzStep {
    TableWrite { offset: u16, bytes: Vec<u8> },
    TableField { vector: u8, dword: u8, value: u32 },
    Read { pba: bool, offset: u16, len: u8 },
    MessageControl(u16),
    Fire(u8),
    Service,
    Fault { op: u8, nth: u8, errno: u8 },
    Heal,
    DecodeOff,
    DecodeOn { bar: u8 },
    Reset,
    Quiesce,
}

impl FuzzStep {
    fn into_step(self) -> Step {
        match self {
            FuzzStep::TableWrite { offset, bytes } => Step::TableWrite {
                offset: u64::from(offset),
                bytes,
            },
            FuzzStep::TableField {
                vector,
                dword,
                value,
            } => Step::TableField {
                vector: u16::from(vector),
                dword,
                value,
            },
            FuzzStep::Read { pba, offset, len } => Step::Read {
                pba,
                offset: u64::from(offset),
                len,
            },
            FuzzStep::MessageControl(v) => Step::MessageControl(v),
            FuzzStep::Fire(v) => Step::Fire(u16::from(v)),
            FuzzStep::Service => Step::Service,
            FuzzStep::Fault { op, nth, errno } => Step::Fault {
                op: op_of(op),
                nth: u64::from(nth % 4) + 1,
                errno: errno_of(errno),
            },
            FuzzStep::Heal => Step::Heal,
            FuzzStep::DecodeOff => Step::DecodeOff,
            FuzzStep::DecodeOn { bar } => Step::DecodeOn { bar },
            FuzzStep::Reset => Step::Reset,
            FuzzStep::Quiesce => Step::Quiesce,
        }
    }
}

#[derive(Arbitrary, Debug)]
struct Input {
    vectors: u8,
    policy: u8,
    maskable: bool,
    /// Now and then a routing table too small for the vectors.
    tight_routes: Option<u8>,
    steps: Vec<FuzzStep>,
}

fuzz_target!(|input: Input| {
    let vectors = u16::from(input.vectors % 16) + 1;
    let policy = Policy::ALL[usize::from(input.policy % 3)];
    let max_routes = input
        .tight_routes
        .map_or(4096, |extra| 40 + u32::from(extra % 8));
    let mut h = Harness::new(vectors, policy, input.maskable, max_routes);
    for step in input.steps.into_iter().take(512) {
        let step = step.into_step();
        if let Err(violation) = h.step(&step) {
            panic!("{policy} maskable={}: {step:?}: {violation}", input.maskable);
        }
    }
    if let Err(violation) = h.quiesce() {
        panic!("{policy} maskable={}: at the end: {violation}", input.maskable);
    }
});
