//! What the host's scheduler did while a row ran: per-thread run time,
//! context switches and migrations (`/proc/self/task/TID/sched`), the CPU
//! a thread last ran on, how often each CPU went idle
//! (`/sys/devices/system/cpu/cpuN/cpuidle`), and the load average. The
//! bench reads them around each row's batch of Linux mask cycles, outside
//! the guest's timed loop, to attribute where a row's time goes (which
//! thread ran, whether the servicer slept and was woken, whether the vCPU
//! thread was preempted). Missing files (a kernel without
//! `CONFIG_SCHED_DEBUG` or cpuidle) read as zeros.

use std::fs;

use serde::Serialize;

/// A thread of this process, by its kernel id and name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Task {
    /// Kernel thread id.
    pub tid: i32,
    /// Its name (`comm`).
    pub name: String,
}

/// Every thread of this process now.
pub fn tasks() -> Vec<Task> {
    let Ok(dir) = fs::read_dir("/proc/self/task") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| {
            let tid: i32 = e.file_name().to_str()?.parse().ok()?;
            let name = fs::read_to_string(format!("/proc/self/task/{tid}/comm")).ok()?;
            Some(Task {
                tid,
                name: name.trim().to_string(),
            })
        })
        .collect()
}

/// The threads in `after` that `before` did not have.
pub fn new_tasks(before: &[Task], after: &[Task]) -> Vec<Task> {
    after
        .iter()
        .filter(|t| !before.iter().any(|b| b.tid == t.tid))
        .cloned()
        .collect()
}

/// One thread's scheduler counters at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ThreadSched {
    /// CPU time, ns (`se.sum_exec_runtime`).
    pub run_ns: f64,
    /// Times it slept (blocked) and was woken again.
    pub voluntary: u64,
    /// Times it was preempted while runnable.
    pub involuntary: u64,
    /// Times it moved to another CPU.
    pub migrations: u64,
    /// The CPU it last ran on.
    pub cpu: i64,
}

/// Field `n` (numbered from 1, as in proc(5)) of a `/proc/.../stat` line.
/// The fields from 3 on follow the parenthesised name (field 2), which may
/// hold spaces and parentheses: they are counted from the last ')'.
pub fn stat_field<T: std::str::FromStr>(stat: &str, n: usize) -> Option<T> {
    stat[stat.rfind(')')? + 1..]
        .split_whitespace()
        .nth(n.checked_sub(3)?)?
        .parse()
        .ok()
}

fn field(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.split(':').next().map(str::trim) == Some(name))
        .and_then(|l| l.split(':').nth(1))
        .and_then(|v| v.trim().parse().ok())
}

impl ThreadSched {
    /// Reads thread `tid`'s counters (zeros when unreadable).
    pub fn read(tid: i32) -> ThreadSched {
        let sched = fs::read_to_string(format!("/proc/self/task/{tid}/sched")).unwrap_or_default();
        let get = |name| field(&sched, name).unwrap_or(0.0);
        // `stat` field 39: processor.
        let stat = fs::read_to_string(format!("/proc/self/task/{tid}/stat")).unwrap_or_default();
        let cpu = stat_field(&stat, 39).unwrap_or(-1);
        ThreadSched {
            // Printed in milliseconds with six decimals.
            run_ns: get("se.sum_exec_runtime") * 1e6,
            voluntary: get("nr_voluntary_switches") as u64,
            involuntary: get("nr_involuntary_switches") as u64,
            migrations: get("se.nr_migrations") as u64,
            cpu,
        }
    }
}

/// Times each CPU entered an idle state so far (every state summed), by
/// CPU number.
pub fn idle_entries() -> Vec<u64> {
    let mut out = Vec::new();
    for cpu in 0.. {
        let dir = format!("/sys/devices/system/cpu/cpu{cpu}");
        if fs::metadata(&dir).is_err() {
            break;
        }
        let mut sum = 0;
        for state in 0.. {
            match fs::read_to_string(format!("{dir}/cpuidle/state{state}/usage")) {
                Ok(v) => sum += v.trim().parse::<u64>().unwrap_or(0),
                Err(_) => break,
            }
        }
        out.push(sum);
    }
    out
}

/// The 1-, 5- and 15-minute load averages (zeros when unreadable).
pub fn load_average() -> [f64; 3] {
    let text = fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let mut it = text.split_whitespace().map(|v| v.parse().unwrap_or(0.0));
    [
        it.next().unwrap_or(0.0),
        it.next().unwrap_or(0.0),
        it.next().unwrap_or(0.0),
    ]
}

/// What the scheduler did during one row's batch of cycles, per cycle.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct RoundSched {
    /// The vCPU thread's CPU time, ns per cycle.
    pub vcpu_run_ns: f64,
    /// Times the vCPU thread was preempted, per cycle.
    pub vcpu_preempted: f64,
    /// Times the vCPU thread slept, per cycle.
    pub vcpu_slept: f64,
    /// The vCPU thread's CPU at the end of the batch.
    pub vcpu_cpu: i64,
    /// The row's servicer thread's CPU time, ns per cycle (0 without one).
    pub servicer_run_ns: f64,
    /// Times the servicer slept and was woken, per cycle.
    pub servicer_wakes: f64,
    /// Times the servicer was preempted, per cycle.
    pub servicer_preempted: f64,
    /// The servicer's CPU at the end of the batch (-1 without one).
    pub servicer_cpu: i64,
    /// Of the unmasks the row's servicer saw, the share it saw on the CPU
    /// the vCPU thread exited on (-1: the row does not count them).
    pub servicer_same_cpu: f64,
    /// Idle entries of all CPUs together, per cycle.
    pub idle_entries: f64,
    /// The 1-minute load average at the end of the batch.
    pub load1: f64,
}

/// The threads of one row that the bench watches.
#[derive(Clone, Debug, Default)]
pub struct RowThreads {
    /// The vCPU thread.
    pub vcpu: Option<i32>,
    /// The thread that services the row's absorbed unmasks, if any.
    pub servicer: Option<i32>,
}

impl RowThreads {
    /// From the threads a row's construction started: the vCPU thread
    /// (`testvm-vcpu0`) and its servicer (`msix-fast-path` or
    /// `floor-servicer`).
    pub fn from_tasks(tasks: &[Task]) -> RowThreads {
        let find = |names: &[&str]| {
            tasks
                .iter()
                .find(|t| names.contains(&t.name.as_str()))
                .map(|t| t.tid)
        };
        RowThreads {
            vcpu: find(&["testvm-vcpu0"]),
            servicer: find(&["msix-fast-path", "floor-servicer"]),
        }
    }

    /// Their counters now, with every CPU's idle entries.
    pub fn snapshot(&self) -> SchedSnapshot {
        SchedSnapshot {
            vcpu: self.vcpu.map(ThreadSched::read).unwrap_or_default(),
            servicer: self.servicer.map(ThreadSched::read),
            idle: idle_entries(),
        }
    }
}

/// [`RowThreads::snapshot`]'s result.
#[derive(Clone, Debug, Default)]
pub struct SchedSnapshot {
    vcpu: ThreadSched,
    servicer: Option<ThreadSched>,
    idle: Vec<u64>,
}

impl SchedSnapshot {
    /// What happened from `self` to `later`, over `cycles` cycles.
    pub fn per_cycle(&self, later: &SchedSnapshot, cycles: u64) -> RoundSched {
        let n = cycles.max(1) as f64;
        let d = |a: u64, b: u64| b.saturating_sub(a) as f64 / n;
        let (a, b) = (&self.vcpu, &later.vcpu);
        let servicer = match (self.servicer, later.servicer) {
            (Some(s0), Some(s1)) => Some((s0, s1)),
            _ => None,
        };
        let idle: u64 = later
            .idle
            .iter()
            .zip(&self.idle)
            .map(|(l, e)| l.saturating_sub(*e))
            .sum();
        RoundSched {
            vcpu_run_ns: (b.run_ns - a.run_ns).max(0.0) / n,
            vcpu_preempted: d(a.involuntary, b.involuntary),
            vcpu_slept: d(a.voluntary, b.voluntary),
            vcpu_cpu: b.cpu,
            servicer_run_ns: servicer.map_or(0.0, |(s0, s1)| (s1.run_ns - s0.run_ns).max(0.0) / n),
            servicer_wakes: servicer.map_or(0.0, |(s0, s1)| d(s0.voluntary, s1.voluntary)),
            servicer_preempted: servicer.map_or(0.0, |(s0, s1)| d(s0.involuntary, s1.involuntary)),
            servicer_cpu: servicer.map_or(-1, |(_, s1)| s1.cpu),
            servicer_same_cpu: -1.0,
            idle_entries: idle as f64 / n,
            load1: load_average()[0],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_thread_is_listed_and_its_counters_read() {
        let me = tasks();
        assert!(!me.is_empty());
        // SAFETY: gettid has no preconditions.
        let tid = unsafe { libc::gettid() };
        assert!(me.iter().any(|t| t.tid == tid));
        let s = ThreadSched::read(tid);
        assert!(s.cpu >= 0, "{s:?}");
    }

    #[test]
    fn new_tasks_are_those_started_since_and_named_threads_are_found() {
        let task = |tid, name: &str| Task {
            tid,
            name: name.into(),
        };
        let before = vec![task(1, "main"), task(2, "testvm-vcpu0")];
        let after = vec![
            task(1, "main"),
            task(2, "testvm-vcpu0"),
            task(3, "testvm-vcpu0"),
            task(4, "msix-fast-path"),
        ];
        let new = new_tasks(&before, &after);
        assert_eq!(
            new,
            vec![task(3, "testvm-vcpu0"), task(4, "msix-fast-path")]
        );
        let threads = RowThreads::from_tasks(&new);
        assert_eq!((threads.vcpu, threads.servicer), (Some(3), Some(4)));
    }

    #[test]
    fn a_stat_field_is_counted_from_the_last_parenthesis() {
        let stat = "42 (a) b (c)) S 1 2 3 4";
        assert_eq!(stat_field::<char>(stat, 3), Some('S'));
        assert_eq!(stat_field::<u32>(stat, 4), Some(1));
        assert_eq!(stat_field::<u32>(stat, 7), Some(4));
        assert_eq!(stat_field::<u32>(stat, 8), None);
        assert_eq!(stat_field::<u32>(stat, 2), None);
        assert_eq!(stat_field::<u32>("no name", 3), None);
    }

    #[test]
    fn a_sched_field_is_found_by_its_exact_name() {
        let text = "se.nr_migrations   :   7\nnr_switches  :  12\nnr_voluntary_switches : 5\n";
        assert_eq!(field(text, "se.nr_migrations"), Some(7.0));
        assert_eq!(field(text, "nr_voluntary_switches"), Some(5.0));
        assert_eq!(field(text, "nr_involuntary_switches"), None);
    }
}
