//! The accelerator's plan and executor against the reference model with
//! faults injected, without KVM: seeded random runs of the harness the
//! `accel_faults` fuzz target also drives (see support/accel_harness.rs).
//! Bounded by steps, deterministic by seed.

#[path = "support/accel_harness.rs"]
mod harness;

use harness::{errno_of, op_of, Harness, Step};
use msix_accel::Policy;

/// xorshift64*: tiny, seeded.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn random_step(rng: &mut Rng, vectors: u16) -> Step {
    let v = rng.below(u64::from(vectors)) as u16;
    match rng.below(100) {
        0..=34 => {
            let dword = rng.below(4) as u8;
            let value = match dword {
                0 => 0xFEE0_0000 | (rng.below(2) << 12) as u32,
                // Mostly zero; sometimes a byte KVM refuses (x2APIC API).
                1 => [0, 0, 0, 1, 0x100][rng.below(5) as usize],
                2 => 0x30 + rng.below(0xC0) as u32,
                _ => rng.below(2) as u32,
            };
            Step::TableField {
                vector: v,
                dword,
                value,
            }
        }
        35..=39 => Step::TableWrite {
            offset: rng.below(u64::from(vectors) * 16 + 64),
            bytes: rng.next().to_le_bytes()[..[1, 2, 4, 8][rng.below(4) as usize]].to_vec(),
        },
        40..=47 => Step::Read {
            pba: rng.below(2) == 0,
            offset: rng.below(u64::from(vectors) * 16),
            len: rng.below(4) as u8,
        },
        48..=53 => Step::MessageControl([0x8000, 0xC000, 0x0000, 0x8000][rng.below(4) as usize]),
        54..=69 => Step::Fire(v),
        70..=76 => Step::Service,
        77..=84 => Step::Fault {
            op: op_of(rng.below(256) as u8),
            nth: 1 + rng.below(3),
            errno: errno_of(rng.below(256) as u8),
        },
        85..=87 => Step::Heal,
        88..=89 => Step::DecodeOff,
        90..=92 => Step::DecodeOn {
            bar: rng.below(4) as u8,
        },
        93 => Step::Reset,
        _ => Step::Quiesce,
    }
}

pub fn runs(policy: Policy, maskable: bool, seeds: std::ops::Range<u64>) {
    for seed in seeds {
        let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
        let vectors = 1 + rng.below(8) as u16;
        // Now and then a table too small for the vectors: GSIs run out.
        let max_routes = if rng.below(4) == 0 {
            40 + rng.below(4) as u32
        } else {
            4096
        };
        let mut h = Harness::new(vectors, policy, maskable, max_routes);
        let mut steps = Vec::new();
        for _ in 0..300 {
            let step = random_step(&mut rng, vectors);
            steps.push(step.clone());
            let r = h.step(&step);
            if std::env::var_os("HARNESS_TRACE").is_some() {
                let v = std::env::var("VEC")
                    .ok()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                eprintln!("{step:?} -> {}", h.describe(v));
            }
            if let Err(violation) = r {
                panic!(
                    "{policy} maskable={maskable} seed {seed}: {violation}\nafter {} steps, last {:?}",
                    steps.len(),
                    &steps[steps.len().saturating_sub(8)..]
                );
            }
        }
        if let Err(violation) = h.quiesce() {
            panic!(
                "{policy} maskable={maskable} seed {seed}: at the end: {violation}\nlast steps {:?}",
                &steps[steps.len().saturating_sub(16)..]
            );
        }
    }
}

#[test]
fn fast_with_faults_matches_the_reference_and_loses_nothing() {
    runs(Policy::Fast, false, 0..60);
    runs(Policy::Fast, true, 0..60);
}

#[test]
fn strict_with_faults_matches_the_reference_and_loses_nothing() {
    runs(Policy::Strict, false, 100..160);
    runs(Policy::Strict, true, 100..160);
}

#[test]
fn trap_with_faults_matches_the_reference_and_loses_nothing() {
    runs(Policy::Trap, false, 200..260);
    runs(Policy::Trap, true, 200..260);
}

/// Replays one run step by step, printing each step and what it did to
/// one vector: `SEED=n POLICY=fast VEC=v HARNESS_TRACE=1 cargo test -p
/// msix-accel-tests --test plan_executor replay_one_seed -- --ignored`.
#[test]
#[ignore = "a debugging aid: replays the run SEED names"]
fn replay_one_seed() {
    let seed: u64 = std::env::var("SEED").unwrap().parse().unwrap();
    let policy: Policy = std::env::var("POLICY")
        .unwrap_or("strict".into())
        .parse()
        .unwrap();
    runs(
        policy,
        std::env::var_os("MASKABLE").is_some(),
        seed..seed + 1,
    );
}
