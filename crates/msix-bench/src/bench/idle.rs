//! What a servicer costs while its guest is idle: after the rounds (the
//! last mask traffic), every row's guest idles (no mask traffic, no
//! interrupts) for the same interval, and each row's servicer thread's CPU
//! time and its sleeps (voluntary context switches: each one a wake-up
//! before it) are read before and after. CPU time is the scheduler's
//! runtime in nanoseconds (first field of `/proc/self/task/TID/schedstat`)
//! where the kernel has it (`CONFIG_SCHED_INFO`), else `utime` + `stime`
//! of `/proc/self/task/TID/stat` in clock ticks (10 ms at 100 Hz), which
//! would hide a servicer running less than a tick; the report says which
//! ([`CpuClock`]). A servicer that sleeps until an fd is readable shows 0
//! of both; one that spins shows the whole interval.

use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;

use super::sched::{stat_field, RowThreads, ThreadSched};

/// Idle interval of a full run.
pub const IDLE_FULL: Duration = Duration::from_secs(10);
/// Idle interval of a `--quick` run.
pub const IDLE_QUICK: Duration = Duration::from_secs(1);

/// One row's servicer over the idle interval.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct IdleRow {
    /// The row.
    pub name: String,
    /// Its servicer thread's CPU time, ns, read by the report's
    /// [`CpuClock`].
    pub servicer_cpu_ns: u64,
    /// Times the servicer slept after running (voluntary switches).
    pub servicer_wakes: u64,
}

/// Where a thread's CPU time is read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CpuClock {
    /// The scheduler's runtime, ns: the first field of
    /// `/proc/self/task/TID/schedstat`.
    SchedstatNs,
    /// `utime` + `stime` of `/proc/self/task/TID/stat`, in clock ticks
    /// (`sysconf(_SC_CLK_TCK)`, 10 ms at 100 Hz), as ns: where the kernel
    /// has no schedstat.
    ClockTicks,
}

impl CpuClock {
    /// Schedstat when this kernel has it (it is read for this thread),
    /// else clock ticks.
    pub fn detect() -> CpuClock {
        // SAFETY: gettid has no preconditions.
        let me = unsafe { libc::gettid() };
        if schedstat_ns(me).is_some() {
            CpuClock::SchedstatNs
        } else {
            CpuClock::ClockTicks
        }
    }

    /// Thread `tid`'s CPU time so far, ns; None when unreadable.
    pub fn thread_cpu_ns(self, tid: i32) -> Option<u64> {
        match self {
            CpuClock::SchedstatNs => schedstat_ns(tid),
            CpuClock::ClockTicks => ticks_ns(tid),
        }
    }
}

/// Every row with a servicer thread, over one interval.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct IdleReport {
    /// The interval, seconds.
    pub seconds: f64,
    /// How `servicer_cpu_ns` was read.
    pub cpu_clock: CpuClock,
    /// Rows with a servicer thread, in the run's row order.
    pub rows: Vec<IdleRow>,
}

/// Thread `tid`'s runtime so far from schedstat, ns; None when the kernel
/// has no schedstat or it is unreadable.
fn schedstat_ns(tid: i32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/self/task/{tid}/schedstat")).ok()?;
    text.split_whitespace().next()?.parse().ok()
}

/// Thread `tid`'s CPU time so far (user + system) in clock ticks, as ns;
/// None when unreadable.
fn ticks_ns(tid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).ok()?;
    // Fields 14 and 15: utime, stime.
    let utime: u64 = stat_field(&stat, 14)?;
    let stime: u64 = stat_field(&stat, 15)?;
    // SAFETY: sysconf reads a constant of the system; no memory is passed.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let ticks = u64::try_from(ticks).ok().filter(|&t| t > 0)?;
    Some((utime + stime).saturating_mul(1_000_000_000) / ticks)
}

/// Sleeps `interval` with every guest idle and returns what each row's
/// servicer (`rows`: name and threads) did meanwhile.
pub fn measure(rows: &[(String, &RowThreads)], interval: Duration) -> IdleReport {
    let clock = CpuClock::detect();
    let read = |tid: i32| (clock.thread_cpu_ns(tid), ThreadSched::read(tid).voluntary);
    let before: Vec<Option<(Option<u64>, u64)>> =
        rows.iter().map(|(_, t)| t.servicer.map(read)).collect();
    std::thread::sleep(interval);
    let rows = rows
        .iter()
        .zip(before)
        .filter_map(|((name, t), before)| {
            let (cpu0, wakes0) = before?;
            let (cpu1, wakes1) = read(t.servicer?);
            Some(IdleRow {
                name: name.clone(),
                servicer_cpu_ns: cpu1?.saturating_sub(cpu0?),
                servicer_wakes: wakes1.saturating_sub(wakes0),
            })
        })
        .collect();
    IdleReport {
        seconds: interval.as_secs_f64(),
        cpu_clock: clock,
        rows,
    }
}

impl IdleReport {
    /// The table: one line per row with a servicer.
    pub fn table(&self, s: &mut String) {
        let _ = writeln!(
            s,
            "Idle guest for {} s after the rounds (no mask traffic, no interrupts): each servicer thread",
            self.seconds
        );
        let _ = writeln!(s, "{:<22} {:>12} {:>9}", "name", "cpu ns", "wakes");
        for r in &self.rows {
            let _ = writeln!(
                s,
                "{:<22} {:>12} {:>9}",
                r.name, r.servicer_cpu_ns, r.servicer_wakes
            );
        }
        let cpu = match self.cpu_clock {
            CpuClock::SchedstatNs => "runtime of /proc/self/task/TID/schedstat, ns",
            CpuClock::ClockTicks => "utime + stime of /proc/self/task/TID/stat, in clock ticks",
        };
        let _ = writeln!(s, "(cpu: {cpu}; wakes: its voluntary switches)");
        let _ = writeln!(s);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_threads_cpu_time_grows_when_it_spins_on_either_clock() {
        // SAFETY: gettid has no preconditions.
        let tid = unsafe { libc::gettid() };
        let mut clocks = vec![CpuClock::ClockTicks];
        // Where the kernel has schedstat, the bench reads it.
        if CpuClock::detect() == CpuClock::SchedstatNs {
            clocks.push(CpuClock::SchedstatNs);
        }
        for clock in clocks {
            let before = clock.thread_cpu_ns(tid).unwrap();
            // Spin until the count moves (bounded: it must move within
            // seconds of CPU; a watchdog names what stalled).
            let start = std::time::Instant::now();
            while clock.thread_cpu_ns(tid).unwrap() == before {
                assert!(
                    start.elapsed() < Duration::from_secs(30),
                    "watchdog: this thread's CPU time by {clock:?} never moved"
                );
                std::hint::black_box((0..1000u64).sum::<u64>());
            }
            assert!(clock.thread_cpu_ns(tid).unwrap() > before, "{clock:?}");
        }
    }

    #[test]
    fn rows_without_a_servicer_are_left_out() {
        // SAFETY: gettid has no preconditions.
        let me = unsafe { libc::gettid() };
        let with = RowThreads {
            vcpu: None,
            servicer: Some(me),
        };
        let without = RowThreads::default();
        let r = measure(
            &[("a".into(), &with), ("b".into(), &without)],
            Duration::ZERO,
        );
        assert_eq!(r.rows.len(), 1);
        assert_eq!(r.rows[0].name, "a");
        // The JSON names the clock the CPU times were read by.
        let json = serde_json::to_value(&r).unwrap();
        let clock = match CpuClock::detect() {
            CpuClock::SchedstatNs => "schedstat_ns",
            CpuClock::ClockTicks => "clock_ticks",
        };
        assert_eq!(json["cpu_clock"], clock, "{json}");
    }
}
