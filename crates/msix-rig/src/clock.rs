//! The guest's time stamp counter against the host's monotonic clock, for
//! latencies that start on the host (a source signal) and end in the guest
//! (its interrupt handler).
//!
//! The guest cannot read the host clock and the host cannot read the guest
//! TSC directly, so they are tied by a bracket: the guest takes a TSC stamp
//! `a`, reads the clock register [`CLOCK_GPA`] (an MMIO exit whose handler
//! answers the host's `CLOCK_MONOTONIC` in nanoseconds, `h`), and takes a
//! second stamp `b`. The host read happened between `a` and `b`, so
//! `h` corresponds to the guest time `(a + b) / 2` within `± (b - a) / 2`.
//! Of [`CALIBRATION_PAIRS`] such brackets in one guest program, the
//! narrowest is kept. Guest ticks become nanoseconds with the TSC frequency
//! KVM reports; a calibration is taken right before the samples that use it
//! (milliseconds), so frequency error adds well under a microsecond.

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use testvm::{MmioHandler, Program, TestVm, Width};

use crate::Error;

/// Guest physical address of the host clock register (8-byte reads); away
/// from the devices' BARs at 0xFE00_0000.
pub const CLOCK_GPA: u64 = 0xFD00_0000;

/// TSC-clock brackets per calibration.
pub const CALIBRATION_PAIRS: usize = 16;

/// Nanoseconds of the host's monotonic clock (CLOCK_MONOTONIC, which
/// `Instant` reads on Linux) since the first call in this process.
pub fn monotonic_ns() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

/// An MMIO handler that also answers the clock register: what every row's
/// guest gets, around its own device handler.
pub struct ClockedMmio {
    inner: Arc<dyn MmioHandler>,
}

impl std::fmt::Debug for ClockedMmio {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClockedMmio").finish_non_exhaustive()
    }
}

impl ClockedMmio {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn MmioHandler>) -> Self {
        ClockedMmio { inner }
    }
}

impl MmioHandler for ClockedMmio {
    fn mmio_read(&self, vcpu: u8, addr: u64, data: &mut [u8]) -> bool {
        if addr == CLOCK_GPA && data.len() == 8 {
            data.copy_from_slice(&monotonic_ns().to_le_bytes());
            return true;
        }
        self.inner.mmio_read(vcpu, addr, data)
    }

    fn mmio_write(&self, vcpu: u8, addr: u64, data: &[u8]) -> bool {
        self.inner.mmio_write(vcpu, addr, data)
    }
}

/// Guest TSC ticks at `tsc_khz` in nanoseconds (signed: ticks may be a
/// difference).
pub fn ticks_to_ns(ticks: i128, tsc_khz: u32) -> i128 {
    if tsc_khz == 0 {
        return 0;
    }
    ticks * 1_000_000 / i128::from(tsc_khz)
}

/// One tie between vCPU 0's TSC and the host clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Calibration {
    tsc_khz: u32,
    /// Guest TSC at the middle of the narrowest bracket.
    tsc: u64,
    /// The host clock read inside it.
    host_ns: u64,
    /// Half the bracket's width, in nanoseconds.
    pub uncertainty_ns: u64,
}

impl Calibration {
    /// Ties vCPU 0's TSC to the host clock (one guest program of
    /// [`CALIBRATION_PAIRS`] brackets; see the module documentation).
    pub fn measure(vm: &TestVm) -> Result<Calibration, Error> {
        let mut p = Program::new();
        let slots: Vec<_> = (0..CALIBRATION_PAIRS)
            .map(|_| {
                let a = p.timestamp();
                let h = p.read(Width::W64, CLOCK_GPA);
                let b = p.timestamp();
                (a, h, b)
            })
            .collect();
        let out = vm.run(0, &p)?;
        let tsc_khz = vm.tsc_khz();
        slots
            .iter()
            .map(|&(a, h, b)| (out.get(a), out.get(h), out.get(b)))
            .filter(|(a, _, b)| b >= a)
            .min_by_key(|(a, _, b)| b - a)
            .map(|(a, h, b)| Calibration {
                tsc_khz,
                tsc: a + (b - a) / 2,
                host_ns: h,
                uncertainty_ns: ticks_to_ns(i128::from((b - a) / 2), tsc_khz) as u64,
            })
            .ok_or_else(|| Error::Check("clock calibration: no usable bracket".into()))
    }

    /// The host clock reading (nanoseconds, as [`monotonic_ns`]) at guest
    /// TSC `tsc`.
    pub fn host_ns(&self, tsc: u64) -> i128 {
        i128::from(self.host_ns) + ticks_to_ns(i128::from(tsc) - i128::from(self.tsc), self.tsc_khz)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_convert_at_the_tsc_frequency() {
        assert_eq!(ticks_to_ns(2_600_000, 2_600_000), 1_000_000);
        assert_eq!(ticks_to_ns(-2_600, 2_600_000), -1_000);
        assert_eq!(ticks_to_ns(5, 0), 0);
        let c = Calibration {
            tsc_khz: 1_000_000,
            tsc: 5_000,
            host_ns: 100_000,
            uncertainty_ns: 10,
        };
        assert_eq!(c.host_ns(5_000), 100_000);
        assert_eq!(c.host_ns(6_000), 101_000);
        assert_eq!(c.host_ns(4_000), 99_000);
    }
}
