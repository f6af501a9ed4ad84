//! The load `msix-bench stress` runs on purpose beside its checks, to
//! provoke what a busy build machine provoked: CPU hogs (spinning threads),
//! a second KVM guest whose thread creates and destroys guests, irqfds and
//! routes in a loop, and cargo-like file I/O (write, fsync, read, unlink).
//!
//! Each kind runs on its own threads until stopped; none of them is
//! checked, they only have to be running (see [`Load::wait_running`]).

use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use msix_accel::Policy;
use serde::Serialize;
use testvm::{Program, Width};

use crate::bench::workload::{self, Target};
use crate::bench::Subject;
use crate::Error;

/// Which load to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct LoadConfig {
    /// Spinning threads.
    pub hogs: usize,
    /// The second guest creating and destroying guests, irqfds and routes.
    pub churn: bool,
    /// Write, fsync, read and unlink files in a temporary directory.
    pub io: bool,
}

impl LoadConfig {
    /// Every kind of load, with one CPU hog per online CPU.
    pub fn all() -> LoadConfig {
        LoadConfig {
            hogs: thread::available_parallelism().map_or(2, |n| n.get()),
            churn: true,
            io: true,
        }
    }

    /// No load.
    pub fn none() -> LoadConfig {
        LoadConfig {
            hogs: 0,
            churn: false,
            io: false,
        }
    }

    /// What runs, in words.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if self.hogs > 0 {
            parts.push(format!("{} CPU hogs", self.hogs));
        }
        if self.churn {
            parts.push("a churn guest (guests, irqfds, routes)".to_string());
        }
        if self.io {
            parts.push("file I/O (write, fsync, read, unlink)".to_string());
        }
        if parts.is_empty() {
            "no load".to_string()
        } else {
            parts.join(", ")
        }
    }
}

/// Vectors of each churn guest's device: every one gets a route and an
/// irqfd at bring-up, loses the irqfd (or is masked at the source) at the
/// mask, and gets it back at the unmask.
const CHURN_VECTORS: u16 = 64;
/// Bytes of each file the I/O load writes (an object file's size).
const IO_FILE_BYTES: usize = 1 << 20;
/// Spins between two checks of the stop flag by a CPU hog.
const HOG_SPINS: u64 = 1 << 20;

/// What the load did, for the report.
#[derive(Clone, Debug, Default, Serialize)]
pub struct LoadReport {
    /// What ran.
    pub described: String,
    /// CPU hogs that ran.
    pub hogs: usize,
    /// Batches of spins the hogs did, all together.
    pub hog_batches: u64,
    /// Guests the churn thread created and destroyed.
    pub churn_guests: u64,
    /// KVM ioctls (routes, irqfds, ioeventfds, memslots) the churn guests'
    /// bring-ups issued.
    pub churn_ioctls: u64,
    /// Interrupts the churn guests' devices fired.
    pub churn_fires: u64,
    /// Files the I/O thread wrote, synced, read back and unlinked.
    pub io_files: u64,
    /// Errors the load threads met (a load that failed stopped early).
    pub errors: Vec<String>,
}

#[derive(Debug, Default)]
struct Counters {
    hog_batches: AtomicU64,
    churn_guests: AtomicU64,
    churn_ioctls: AtomicU64,
    churn_fires: AtomicU64,
    io_files: AtomicU64,
    errors: Mutex<Vec<String>>,
}

impl Counters {
    fn error(&self, what: &str, e: impl std::fmt::Display) {
        self.errors
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(format!("{what}: {e}"));
    }

    fn errors(&self) -> Vec<String> {
        self.errors
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// The running load; dropping it stops it.
#[derive(Debug)]
pub struct Load {
    config: LoadConfig,
    stop: Arc<AtomicBool>,
    counters: Arc<Counters>,
    threads: Vec<JoinHandle<()>>,
    io_dir: Option<PathBuf>,
}

impl Load {
    /// Starts the load `config` asks for.
    pub fn start(config: LoadConfig) -> Result<Load, Error> {
        let mut load = Load {
            config,
            stop: Arc::new(AtomicBool::new(false)),
            counters: Arc::new(Counters::default()),
            threads: Vec::new(),
            io_dir: None,
        };
        for i in 0..config.hogs {
            load.spawn(format!("stress-hog{i}"), hog)?;
        }
        if config.churn {
            load.spawn("stress-churn".into(), churn)?;
        }
        if config.io {
            let dir =
                std::env::temp_dir().join(format!("msix-bench-stress-{}", std::process::id()));
            std::fs::create_dir_all(&dir)
                .map_err(|e| Error::Check(format!("file I/O load: {}: {e}", dir.display())))?;
            load.io_dir = Some(dir.clone());
            load.spawn("stress-io".into(), move |stop, counters| {
                io(stop, counters, &dir)
            })?;
        }
        Ok(load)
    }

    fn spawn(
        &mut self,
        name: String,
        body: impl FnOnce(&AtomicBool, &Counters) + Send + 'static,
    ) -> Result<(), Error> {
        let stop = Arc::clone(&self.stop);
        let counters = Arc::clone(&self.counters);
        let handle = thread::Builder::new()
            .name(name.clone())
            .spawn(move || body(&stop, &counters))
            .map_err(|e| Error::Check(format!("cannot start load thread {name}: {e}")))?;
        self.threads.push(handle);
        Ok(())
    }

    /// Waits until every kind of load has done its first piece of work
    /// (a batch of spins, a churn guest, a file), so the checks that follow
    /// run under load; fails when a load thread failed, or when a whole
    /// `watchdog` period passed without progress of the loads not yet
    /// running (a hog batch; a churn ioctl, fire or guest; a file): a
    /// loaded machine makes them start late, not fail.
    pub fn wait_running(&self, watchdog: Duration) -> Result<(), Error> {
        let c = &self.counters;
        let load = |n: &AtomicU64| n.load(Ordering::Relaxed);
        let started = || {
            (
                self.config.hogs == 0 || load(&c.hog_batches) > 0,
                !self.config.churn || load(&c.churn_guests) > 0,
                !self.config.io || load(&c.io_files) > 0,
            )
        };
        // Only the loads still starting count: a running hog's batches
        // must not keep a wait for a stuck churn guest alive.
        let progress = || {
            let (hogs, churn, io) = started();
            let mut sum = 0u64;
            if !hogs {
                sum = sum.wrapping_add(load(&c.hog_batches));
            }
            if !churn {
                sum = sum
                    .wrapping_add(load(&c.churn_ioctls))
                    .wrapping_add(load(&c.churn_fires));
            }
            if !io {
                sum = sum.wrapping_add(load(&c.io_files));
            }
            sum
        };
        let mut dog = testvm::Watchdog::new(watchdog, progress());
        loop {
            let errors = c.errors();
            if let Some(e) = errors.first() {
                return Err(Error::Check(format!("load: {e}")));
            }
            let (hogs, churn, io) = started();
            if hogs && churn && io {
                return Ok(());
            }
            if let Err(stalled) = dog.check(progress()) {
                return Err(Error::Check(format!(
                    "load not running: {stalled} (hogs {hogs}, churn guest {churn}, file I/O {io})"
                )));
            }
            thread::sleep(Duration::from_millis(5));
        }
    }

    /// What the load did so far, and the errors it met.
    pub fn report(&self) -> LoadReport {
        let c = &self.counters;
        LoadReport {
            described: self.config.describe(),
            hogs: self.config.hogs,
            hog_batches: c.hog_batches.load(Ordering::Relaxed),
            churn_guests: c.churn_guests.load(Ordering::Relaxed),
            churn_ioctls: c.churn_ioctls.load(Ordering::Relaxed),
            churn_fires: c.churn_fires.load(Ordering::Relaxed),
            io_files: c.io_files.load(Ordering::Relaxed),
            errors: c.errors(),
        }
    }

    /// Stops every load thread, joins them, removes the I/O directory and
    /// reports.
    pub fn stop(mut self) -> LoadReport {
        self.halt();
        self.report()
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            if t.join().is_err() {
                self.counters.error("load thread", "panicked");
            }
        }
        if let Some(dir) = self.io_dir.take() {
            if let Err(e) = std::fs::remove_dir_all(&dir) {
                self.counters
                    .error(&format!("file I/O load: {}", dir.display()), e);
            }
        }
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.halt();
    }
}

/// Spins until stopped.
fn hog(stop: &AtomicBool, counters: &Counters) {
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    while !stop.load(Ordering::Relaxed) {
        for _ in 0..HOG_SPINS {
            x = std::hint::black_box(x.rotate_left(7) ^ 0xA5A5);
        }
        counters.hog_batches.fetch_add(1, Ordering::Relaxed);
    }
}

/// Creates and destroys guests with an accelerated device until stopped:
/// each one's bring-up programs and unmasks every entry (routes and irqfd
/// assigns), a mask and unmask of every entry detaches and reattaches the
/// irqfds (or masks at the source), every vector fires, and dropping the
/// guest releases it all. Policies and source masking take turns.
fn churn(stop: &AtomicBool, counters: &Counters) {
    let mut i = 0usize;
    while !stop.load(Ordering::Relaxed) {
        let subject = Subject::Ours {
            policy: Policy::ALL[i % Policy::ALL.len()],
            maskable: i % 2 == 1,
        };
        if let Err(e) = churn_once(subject, counters) {
            counters.error("churn guest", e);
            return;
        }
        counters.churn_guests.fetch_add(1, Ordering::Relaxed);
        i += 1;
    }
}

fn churn_once(subject: Subject, counters: &Counters) -> Result<(), Error> {
    let target = subject.build(CHURN_VECTORS)?;
    let t = target.as_ref();
    let bring_up = workload::bring_up(t, CHURN_VECTORS, workload::BringUpOrder::Early)?;
    counters
        .churn_ioctls
        .fetch_add(bring_up.ioctls, Ordering::Relaxed);
    fire_all(t, counters)?;
    let mut p = Program::new();
    for e in 0..CHURN_VECTORS {
        p.write(Width::W32, t.entry(e, 12), 1);
    }
    p.read(Width::W32, t.entry(0, 0));
    for e in 0..CHURN_VECTORS {
        p.write(Width::W32, t.entry(e, 12), 0);
    }
    t.vm().run(0, &p)?;
    t.settle()?;
    fire_all(t, counters)
}

fn fire_all(t: &dyn Target, counters: &Counters) -> Result<(), Error> {
    for e in 0..CHURN_VECTORS {
        t.source().fire(e)?;
    }
    counters
        .churn_fires
        .fetch_add(u64::from(CHURN_VECTORS), Ordering::Relaxed);
    Ok(())
}

/// Writes, syncs, reads back and unlinks files in `dir` until stopped, as
/// a build writing object files does.
fn io(stop: &AtomicBool, counters: &Counters, dir: &std::path::Path) {
    let data: Vec<u8> = (0..IO_FILE_BYTES).map(|i| (i * 31 % 251) as u8).collect();
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let path = dir.join(format!("obj-{}.o", n % 8));
        if let Err(e) = io_once(&path, &data) {
            counters.error(&format!("file I/O load: {}", path.display()), e);
            return;
        }
        counters.io_files.fetch_add(1, Ordering::Relaxed);
        n += 1;
    }
}

fn io_once(path: &std::path::Path, data: &[u8]) -> std::io::Result<()> {
    let mut f = std::fs::File::create(path)?;
    f.write_all(data)?;
    f.sync_all()?;
    drop(f);
    let mut back = Vec::with_capacity(data.len());
    std::fs::File::open(path)?.read_to_end(&mut back)?;
    if back != data {
        return Err(std::io::Error::other(
            "read back differs from what was written",
        ));
    }
    std::fs::remove_file(path)
}
