//! The built `msix-bench` refuses bad input before any work starts: one
//! line on stderr, a nonzero exit, no panic or backtrace. Each of these
//! inputs used to start a run of minutes or hours (or fail only after one),
//! so a watchdog on the CPU time the process has used, far more than any
//! refusal uses and far less than such a run, tells them apart without
//! depending on how busy the machine is.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A refusal uses milliseconds of CPU; the runs these inputs used to start
/// keep a guest's vCPU busy for minutes.
const CPU_WATCHDOG: Duration = Duration::from_secs(10);

/// Backstop for a process that neither ends nor uses CPU (a hang): far
/// beyond any wait for a CPU on a loaded machine.
const HANG_WATCHDOG: Duration = Duration::from_secs(600);

/// CPU time `child` and the children it waited for have used (utime,
/// stime, cutime, cstime of /proc/PID/stat), or None once it is gone.
fn cpu_time(child: &Child) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", child.id())).ok()?;
    // The command name (field 2) may hold spaces; the fields after its
    // closing parenthesis start at field 3 (state).
    let fields: Vec<&str> = stat.get(stat.rfind(')')? + 2..)?.split(' ').collect();
    let ticks: u64 = fields
        .get(11..15)?
        .iter()
        .map(|f| f.parse::<u64>().ok())
        .sum::<Option<u64>>()?;
    // SAFETY: sysconf reads a configuration value; no memory is passed.
    let hz = u64::try_from(unsafe { libc::sysconf(libc::_SC_CLK_TCK) })
        .ok()
        .filter(|&hz| hz > 0)?;
    Some(Duration::from_millis(ticks * 1000 / hz))
}

struct Ran {
    code: i32,
    stdout: String,
    stderr: String,
}

fn bench() -> Command {
    Command::new(env!("CARGO_BIN_EXE_msix-bench"))
}

/// Runs `command` to its end, or fails the test at a watchdog.
fn run(command: Command) -> Ran {
    run_within(command, CPU_WATCHDOG)
}

/// Runs `command` to its end, or fails the test once it has used `cpu` of
/// CPU time (or hangs).
fn run_within(mut command: Command, cpu: Duration) -> Ran {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env("RUST_BACKTRACE", "1")
        .spawn()
        .expect("msix-bench starts");
    let started = Instant::now();
    loop {
        if child.try_wait().expect("wait for msix-bench").is_some() {
            break;
        }
        let used = cpu_time(&child).unwrap_or_default();
        if used >= cpu || started.elapsed() >= HANG_WATCHDOG {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{command:?} still running after {used:?} of CPU time and {:?} of wall time: the input was not refused up front",
                started.elapsed()
            );
        }
        // Polling, not timing: how long this sleeps changes nothing but
        // how soon the end is noticed.
        std::thread::sleep(Duration::from_millis(5));
    }
    let out = child.wait_with_output().expect("msix-bench output");
    Ran {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn msix_bench(args: &[&str]) -> Ran {
    let mut c = bench();
    c.args(args);
    run(c)
}

/// Exit code 2 and exactly one line on stderr that contains `needle`.
fn assert_refused(ran: &Ran, needle: &str, what: &str) {
    assert_eq!(ran.code, 2, "{what}: exit code; stderr: {}", ran.stderr);
    let lines: Vec<&str> = ran.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{what}: one line on stderr, got {lines:?}");
    assert!(
        lines[0].contains(needle),
        "{what}: {:?} lacks {needle:?}",
        lines[0]
    );
    assert!(
        !ran.stderr.contains("panicked") && !ran.stderr.contains("backtrace"),
        "{what}: {}",
        ran.stderr
    );
}

/// A scratch directory of one test, removed when the test ends.
struct Scratch(PathBuf);

impl Scratch {
    fn new(test: &str) -> Scratch {
        let dir =
            std::env::temp_dir().join(format!("msix-bench-cli-{}-{test}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("scratch directory");
        Scratch(dir)
    }

    fn path(&self, name: &str) -> String {
        self.0.join(name).to_string_lossy().into_owned()
    }

    fn scenario(&self, name: &str, text: &str) -> String {
        let path = self.path(name);
        std::fs::write(&path, text).expect("write scenario");
        path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn cycles_beyond_the_bound_are_refused_in_one_line() {
    for n in ["99999999999", "100001", "0", "many"] {
        let ran = msix_bench(&["--quick", "--cycles", n]);
        assert_refused(&ran, "--cycles", &format!("--cycles {n}"));
        assert!(ran.stderr.contains("1..=100000"), "{}", ran.stderr);
    }
}

#[test]
fn an_unwritable_plot_path_is_refused_before_measuring() {
    let dir = Scratch::new("plot");
    let missing_dir = "/nonexistent-msix-bench-dir/out.svg".to_string();
    let a_directory = dir.path("");
    for path in [missing_dir, a_directory] {
        let ran = msix_bench(&["--plot", &path]);
        assert_refused(&ran, &format!("--plot {path}"), &path);
    }
}

#[test]
fn a_fire_count_beyond_the_bound_is_a_file_and_line_error() {
    let dir = Scratch::new("count");
    let f = dir.scenario(
        "big-count.scn",
        "msix enable\ndevice fire 0 count=99999999999\n",
    );
    let ran = msix_bench(&["scenario", &f]);
    assert_refused(&ran, &format!("{f}:2: count=99999999999"), "count=");
}

#[test]
fn a_concurrent_repeat_beyond_the_bound_is_a_file_and_line_error() {
    let dir = Scratch::new("repeat");
    let f = dir.scenario(
        "big-repeat.scn",
        "msix enable\nbegin concurrent 99999999999\nguest read32 table+0\nend\n",
    );
    let ran = msix_bench(&["scenario", &f]);
    assert_refused(
        &ran,
        &format!("{f}:2: begin concurrent"),
        "begin concurrent",
    );
}

#[test]
fn a_reserved_vector_is_a_file_and_line_error() {
    let dir = Scratch::new("vector");
    let f = dir.scenario("sentinel.scn", "msix enable\nexpect irq 0x20 = 0\n");
    let ran = msix_bench(&["scenario", &f]);
    assert_refused(&ran, &format!("{f}:2: vector 0x20 is reserved"), "0x20");
}

#[test]
fn file_level_errors_name_the_file_without_a_line() {
    let dir = Scratch::new("file");
    let empty = dir.scenario("empty.scn", "# only a comment\n");
    let ran = msix_bench(&["scenario", &empty]);
    assert_refused(&ran, &format!("{empty}: no steps"), "empty file");
    assert!(!ran.stderr.contains(":0"), "{}", ran.stderr);

    let missing = dir.path("missing.scn");
    let ran = msix_bench(&["scenario", &missing]);
    assert_refused(&ran, &format!("{missing}: cannot read"), "missing file");
    assert!(!ran.stderr.contains(":0"), "{}", ran.stderr);
}

#[test]
fn without_dev_kvm_the_scenario_runner_says_so_once_and_exits_2() {
    let dir = Scratch::new("kvm");
    let a = dir.scenario("a.scn", "policies fast strict trap\nmsix enable\n");
    let b = dir.scenario("b.scn", "policies fast strict trap\nmsix enable\n");
    // A private mount namespace whose /dev is an empty tmpfs: no /dev/kvm.
    let mut c = Command::new("unshare");
    c.args(["--mount", "--map-root-user", "sh", "-c"])
        .arg(r#"mount -t tmpfs tmpfs /dev && exec "$0" "$@""#)
        .arg(env!("CARGO_BIN_EXE_msix-bench"))
        .args(["scenario", &a, &b]);
    let ran = run(c);
    assert_refused(&ran, "/dev/kvm", "no /dev/kvm");
    assert!(ran.stdout.is_empty(), "no PASS/FAIL lines: {}", ran.stdout);
}

#[test]
fn without_dev_vfio_a_scenario_run_on_a_device_says_so_once_and_exits_2() {
    let dir = Scratch::new("vfio");
    let a = dir.scenario("a.scn", "msix enable\ndevice fire 0\n");
    // A private mount namespace whose /dev is an empty tmpfs: no /dev/vfio
    // (nor /dev/kvm: the device is checked first, before any guest).
    let mut c = Command::new("unshare");
    c.args(["--mount", "--map-root-user", "sh", "-c"])
        .arg(r#"mount -t tmpfs tmpfs /dev && exec "$0" "$@""#)
        .arg(env!("CARGO_BIN_EXE_msix-bench"))
        .args(["scenario", "--vfio", "0000:00:03.0", &a]);
    let ran = run(c);
    assert_refused(
        &ran,
        "--vfio 0000:00:03.0: /dev/vfio/vfio missing",
        "no /dev/vfio",
    );
    assert!(
        ran.stdout.is_empty(),
        "no PASS/FAIL/SKIP lines: {}",
        ran.stdout
    );
}

#[test]
fn stress_rounds_duration_and_hogs_beyond_their_bounds_are_refused_in_one_line() {
    for (args, needle) in [
        (&["stress", "--rounds", "0"][..], "--rounds"),
        (&["stress", "--rounds", "99999999999"], "--rounds"),
        (&["stress", "--duration", "99999999999"], "--duration"),
        (&["stress", "--hogs", "1000"], "--hogs"),
        (&["stress", "--frobnicate"], "unknown argument"),
    ] {
        assert_refused(&msix_bench(args), needle, &format!("{args:?}"));
    }
}

#[test]
fn unknown_arguments_are_refused_in_one_line() {
    assert_refused(&msix_bench(&["--frobnicate"]), "unknown argument", "bench");
    assert_refused(
        &msix_bench(&["scenario", "--frobnicate", "x.scn"]),
        "unknown option --frobnicate",
        "scenario",
    );
    assert_refused(&msix_bench(&["help", "frob"]), "no help on", "help");
}

#[test]
fn version_and_help_print_and_exit_0() {
    let ran = msix_bench(&["--version"]);
    assert_eq!(ran.code, 0, "{}", ran.stderr);
    assert_eq!(
        ran.stdout.trim(),
        format!("msix-bench {}", env!("CARGO_PKG_VERSION"))
    );
    for args in [&["help"][..], &["--help"], &["-h"]] {
        let ran = msix_bench(args);
        assert_eq!(ran.code, 0, "{args:?}: {}", ran.stderr);
        assert!(ran.stdout.contains("USAGE:"), "{args:?}");
        assert!(ran.stdout.contains("--cycles N"), "{args:?}");
    }
    for args in [&["help", "stress"][..], &["stress", "--help"]] {
        let ran = msix_bench(args);
        assert_eq!(ran.code, 0, "{args:?}: {}", ran.stderr);
        assert!(ran.stdout.contains("usage: msix-bench stress"), "{args:?}");
        assert!(ran.stdout.contains("--duration SECONDS"), "{args:?}");
    }
    for args in [&["help", "scenario"][..], &["scenario", "--help"]] {
        let ran = msix_bench(args);
        assert_eq!(ran.code, 0, "{args:?}: {}", ran.stderr);
        assert!(
            ran.stdout.contains("usage: msix-bench scenario"),
            "{args:?}"
        );
        assert!(ran.stdout.contains("--policy P"), "{args:?}");
    }
}

#[test]
fn a_device_or_layout_the_file_cannot_have_is_a_file_and_line_error() {
    let dir = Scratch::new("devices");
    let f = dir.scenario(
        "devices.scn",
        "devices 2\nmsix enable\ndevice fire 0 dev=2\n",
    );
    let ran = msix_bench(&["scenario", &f]);
    assert_refused(&ran, &format!("{f}:3: device 2 but the VM has 2"), "dev=2");

    let f = dir.scenario(
        "layout.scn",
        "vectors 8\nlayout table=0:0 pba=0:0x40\nmsix enable\n",
    );
    let ran = msix_bench(&["scenario", &f]);
    assert_refused(
        &ran,
        &format!("{f}:2: the table and the PBA overlap"),
        "layout",
    );
}

#[test]
fn a_file_that_is_not_text_is_named_as_not_a_scenario_file() {
    // The built binary itself: a file that exists and is not text.
    let binary = env!("CARGO_BIN_EXE_msix-bench");
    let ran = msix_bench(&["scenario", binary]);
    assert_refused(
        &ran,
        &format!("{binary}: not a scenario text file"),
        "a binary",
    );
    assert!(
        !ran.stderr.contains("stream did not contain"),
        "{}",
        ran.stderr
    );
}

#[test]
fn a_malformed_pci_address_is_refused_before_vfio_is_looked_at() {
    let dir = Scratch::new("bdf");
    let a = dir.scenario("a.scn", "msix enable\n");
    for args in [
        &["--vfio", "nothing"][..],
        &["--vfio", "nothing", "--json"],
        &["scenario", "--vfio", "nothing", &a],
    ] {
        let ran = msix_bench(args);
        assert_refused(
            &ran,
            "--vfio nothing: not a PCI address",
            &format!("{args:?}"),
        );
        assert!(
            !ran.stderr.contains("/dev/vfio"),
            "{args:?}: {}",
            ran.stderr
        );
        assert!(ran.stdout.is_empty(), "{args:?}: {}", ran.stdout);
    }
}

#[test]
fn a_redirected_bench_run_reports_each_stage_and_ends_with_its_verdict() {
    let mut c = bench();
    c.args(["--quick", "--rounds", "2", "--cycles", "4"]);
    // A short run of every row uses seconds of CPU; a minute means it is
    // stuck in a loop.
    let ran = run_within(c, Duration::from_secs(60));
    assert_eq!(
        ran.code, 0,
        "stdout: {}\nstderr: {}",
        ran.stdout, ran.stderr
    );
    // stderr is a pipe here, not a terminal: a line per stage, no bar.
    for stage in [
        "booting 18 rows' guests",
        "rounds: 2 × 2 Linux mask cycles per row",
        "storm and pending checks: 14 rows",
        "bring-up of 64 vectors in Linux's two orders",
        "statistics",
    ] {
        assert!(
            ran.stderr
                .lines()
                .any(|l| l.starts_with("msix-bench: ") && l.contains(stage)),
            "no stage line {stage:?} in {}",
            ran.stderr
        );
    }
    let last = ran.stdout.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("verdict: PASS: 5 of 6 checks held: every row ran; exact exits"),
        "{last}"
    );
    assert!(
        last.ends_with("; not run: fast brings up 2048 vectors in at most 64 route commits"),
        "{last}"
    );
    assert!(
        ran.stdout
            .contains("why: fast, fast+srcmask, fast+srcmask+poll, fast+srcmask+batch, fast+srcmask+defer take 1 exit"),
        "{}",
        ran.stdout
    );
}
