//! The host IRQs vfio-pci holds for a device's MSI-X vectors, as the host
//! lists them in `/proc/interrupts`: one line per vector wired with
//! VFIO_DEVICE_SET_IRQS, named `vfio-msix[V](BDF)`.

/// The MSI-X vectors of device `bdf` that have a host IRQ now, ascending.
pub fn host_msix_vectors(bdf: &str) -> Result<Vec<u16>, String> {
    let text = std::fs::read_to_string("/proc/interrupts")
        .map_err(|e| format!("/proc/interrupts: {e}"))?;
    Ok(vectors_in(&text, bdf))
}

/// For each MSI-X vector of device `bdf` that has a host IRQ now, the
/// messages the device sent on it since it was wired (the IRQ's count
/// summed over CPUs), by vector.
pub fn host_msix_counts(bdf: &str) -> Result<Vec<(u16, u64)>, String> {
    let text = std::fs::read_to_string("/proc/interrupts")
        .map_err(|e| format!("/proc/interrupts: {e}"))?;
    Ok(counts_in(&text, bdf))
}

/// The vectors named `vfio-msix[V](bdf)` in a `/proc/interrupts` text.
fn vectors_in(text: &str, bdf: &str) -> Vec<u16> {
    counts_in(text, bdf).into_iter().map(|(v, _)| v).collect()
}

/// Each `vfio-msix[V](bdf)` line of a `/proc/interrupts` text as (V, the
/// sum of its per-CPU counts), ascending by V.
fn counts_in(text: &str, bdf: &str) -> Vec<(u16, u64)> {
    let suffix = format!("]({bdf})");
    let mut counts: Vec<(u16, u64)> = text
        .lines()
        .filter_map(|line| {
            let words: Vec<&str> = line.split_whitespace().collect();
            let vector = words
                .last()?
                .strip_prefix("vfio-msix[")?
                .strip_suffix(suffix.as_str())?
                .parse()
                .ok()?;
            // "IRQ:" then one count per CPU, then the chip's name.
            let count = words
                .iter()
                .skip(1)
                .map_while(|w| w.parse::<u64>().ok())
                .sum();
            Some((vector, count))
        })
        .collect();
    counts.sort_unstable();
    counts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_this_devices_msix_vectors_are_counted() {
        let text = "           CPU0       CPU1\n\
             24:          3          0  IR-PCI-MSIX-0000:00:03.0    0-edge      vfio-msix[0](0000:00:03.0)\n\
             25:          0          0  IR-PCI-MSIX-0000:00:03.0    1-edge      vfio-msix[1](0000:00:03.0)\n\
             26:          0          0  IR-PCI-MSIX-0000:00:04.0    0-edge      vfio-msix[0](0000:00:04.0)\n\
             27:          0          0  IR-PCI-MSI-0000:00:03.0    0-edge      vfio-msi[0](0000:00:03.0)\n\
             28:          7          2  IR-PCI-MSIX-0000:00:03.0    4-edge      vfio-msix[4](0000:00:03.0)\n";
        assert_eq!(vectors_in(text, "0000:00:03.0"), vec![0, 1, 4]);
        assert_eq!(vectors_in(text, "0000:00:04.0"), vec![0]);
        assert_eq!(vectors_in(text, "0000:00:05.0"), Vec::<u16>::new());
        assert_eq!(
            counts_in(text, "0000:00:03.0"),
            vec![(0, 3), (1, 0), (4, 9)]
        );
    }
}
