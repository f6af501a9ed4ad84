//! The command line: what to boot, how many vCPUs and how much RAM, which
//! PCI functions to assign, and how their MSI-X is accelerated.

use std::path::PathBuf;
use std::time::Duration;

use msix_accel::Policy;

/// `reference-vmm --help`.
pub const HELP: &str = "\
reference-vmm: boots a Linux bzImage under KVM with VFIO-assigned PCI
functions whose MSI-X runs on msix-accel.

USAGE:
    reference-vmm --kernel BZIMAGE [--initrd FILE] [--cmdline STRING]
                  [--cpus 1-4] [--memory MIB] [--device BDF]...
                  [--policy fast|strict|trap|auto] [--source-masking on|off]
                  [--coalescing MICROSECONDS[,BATCH]]

    --kernel          a bzImage (Linux boot protocol 2.06 or later)
    --initrd          an initramfs, loaded at the top of RAM
    --cmdline         the kernel command line; the VMM appends `acpi=off`
                      (the machine is described by an MP table only) and
                      `reboot=k` (the i8042 reset ends the VMM)
    --cpus            vCPUs, 1 to 4 (default 1)
    --memory          guest RAM in MiB, 64 to 3072 (default 512)
    --device          a PCI function bound to vfio-pci, as 0000:01:00.0 or
                      a sysfs path; repeat for more (default none)
    --policy          the accelerator's policy (default auto: it measures
                      the host at placement and runs fast or strict)
    --source-masking  mask at the device through the VFIO table mmap when
                      the host allows it (default on)
    --coalescing      the fast path's unmask coalescing window and batch
                      (default 10000,64)

The guest's console is the 8250 UART at 0x3f8 (IRQ 4), on stdout; the VMM's
own lines go to stderr. A byte written to port 0x4f0 prints the console
UART's registers (`VMM-UART`) and each device's accelerator statistics as
a `VMM-STATS` line (the checks in tests/vfio-vm mark phases this way);
each accelerator event is printed as a `VMM-EVENT` line. At exit (guest
reboot, triple fault) the VMM prints every device's statistics and exits
0; on a setup failure it exits 1.
";

/// Everything the command line selects.
#[derive(Clone, Debug)]
pub struct Options {
    /// The bzImage.
    pub kernel: PathBuf,
    /// The initramfs, if any.
    pub initrd: Option<PathBuf>,
    /// The command line as given (the VMM appends its own parameters).
    pub cmdline: String,
    /// vCPUs.
    pub cpus: u8,
    /// Guest RAM in bytes.
    pub memory: u64,
    /// sysfs paths or BDFs of the assigned functions.
    pub devices: Vec<PathBuf>,
    /// The accelerator's policy.
    pub policy: Policy,
    /// Whether the accelerator masks at the device when it can.
    pub source_masking: bool,
    /// The fast path's unmask coalescing window and batch, if not the
    /// accelerator's default.
    pub coalescing: Option<(Duration, u16)>,
}

/// The most vCPUs the MP table and the tests plan for.
pub const MAX_CPUS: u8 = 4;
/// RAM must end below the PCI hole at 3 GiB.
const MAX_MEMORY_MIB: u64 = 3072;
const MIN_MEMORY_MIB: u64 = 64;

impl Options {
    /// Parses the arguments after the program name. `Ok(None)` for `--help`.
    pub fn parse(args: &[String]) -> Result<Option<Options>, String> {
        let mut kernel = None;
        let mut o = Options {
            kernel: PathBuf::new(),
            initrd: None,
            cmdline: String::new(),
            cpus: 1,
            memory: 512 << 20,
            devices: Vec::new(),
            policy: msix_accel::DEFAULT_POLICY,
            source_masking: true,
            coalescing: None,
        };
        let mut it = args.iter();
        while let Some(flag) = it.next() {
            if flag == "--help" || flag == "-h" {
                return Ok(None);
            }
            let value = it
                .next()
                .ok_or_else(|| format!("{flag} needs a value (see --help)"))?;
            match flag.as_str() {
                "--kernel" => kernel = Some(PathBuf::from(value)),
                "--initrd" => o.initrd = Some(PathBuf::from(value)),
                "--cmdline" => o.cmdline = value.clone(),
                "--cpus" => {
                    o.cpus = value
                        .parse()
                        .ok()
                        .filter(|n| (1..=MAX_CPUS).contains(n))
                        .ok_or_else(|| format!("--cpus {value}: 1 to {MAX_CPUS}"))?
                }
                "--memory" => {
                    let mib: u64 = value
                        .parse()
                        .ok()
                        .filter(|m| (MIN_MEMORY_MIB..=MAX_MEMORY_MIB).contains(m))
                        .ok_or_else(|| {
                            format!("--memory {value}: {MIN_MEMORY_MIB} to {MAX_MEMORY_MIB} MiB")
                        })?;
                    o.memory = mib << 20;
                }
                "--device" => o.devices.push(PathBuf::from(value)),
                "--policy" => {
                    o.policy = value
                        .parse()
                        .map_err(|e| format!("--policy {value}: {e}"))?
                }
                "--source-masking" => {
                    o.source_masking = match value.as_str() {
                        "on" => true,
                        "off" => false,
                        _ => return Err(format!("--source-masking {value}: on or off")),
                    }
                }
                "--coalescing" => o.coalescing = Some(parse_coalescing(value)?),
                _ => return Err(format!("unknown option {flag} (see --help)")),
            }
        }
        o.kernel = kernel.ok_or("--kernel is required (see --help)")?;
        Ok(Some(o))
    }
}

/// `MICROSECONDS[,BATCH]`; the batch defaults to 64, the accelerator's.
fn parse_coalescing(value: &str) -> Result<(Duration, u16), String> {
    let bad = || format!("--coalescing {value}: MICROSECONDS[,BATCH], batch 1 or more");
    let (window, batch) = match value.split_once(',') {
        Some((w, b)) => (w, b.parse::<u16>().map_err(|_| bad())?),
        None => (value, 64),
    };
    let window: u64 = window.parse().map_err(|_| bad())?;
    if batch == 0 {
        return Err(bad());
    }
    Ok((Duration::from_micros(window), batch))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_string).collect()
    }

    #[test]
    fn every_option_parses_and_defaults_hold() {
        let o = Options::parse(&args("--kernel k")).unwrap().unwrap();
        assert_eq!((o.cpus, o.memory, o.policy), (1, 512 << 20, Policy::Auto));
        assert!(o.source_masking && o.devices.is_empty() && o.coalescing.is_none());
        let o = Options::parse(&args(
            "--kernel k --initrd i --cpus 4 --memory 1024 --device 0000:00:02.0 \
             --device 0000:00:03.0 --policy trap --source-masking off --coalescing 500,8",
        ))
        .unwrap()
        .unwrap();
        assert_eq!(o.cpus, 4);
        assert_eq!(o.memory, 1 << 30);
        assert_eq!(o.devices.len(), 2);
        assert_eq!(o.policy, Policy::Trap);
        assert!(!o.source_masking);
        assert_eq!(o.coalescing, Some((Duration::from_micros(500), 8)));
        assert!(Options::parse(&args("--help")).unwrap().is_none());
    }

    #[test]
    fn out_of_range_values_are_refused_with_the_option_named() {
        for bad in [
            "",
            "--kernel k --cpus 5",
            "--kernel k --cpus 0",
            "--kernel k --memory 4096",
            "--kernel k --policy quick",
            "--kernel k --source-masking maybe",
            "--kernel k --coalescing 10,0",
            "--kernel k --bogus 1",
            "--kernel",
        ] {
            assert!(Options::parse(&args(bad)).is_err(), "{bad:?} accepted");
        }
    }
}
