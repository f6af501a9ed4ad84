#!/usr/bin/env bash
# An unmodified Linux as the innermost guest: boots the vfio-vm QEMU guest
# (L1, TCG, SVM emulated, kvm-amd) and, inside it, crates/reference-vmm with
# the same Debian bzImage as L2, its NICs assigned through VFIO and their
# MSI-X on msix-accel. L2's /init checks the NIC driver; L1 collects the
# VMM's statistics and prints `linux-guest: N passed, M failed`.
#
# Needs what tests/vfio-vm/run.sh installs and fetches (QEMU, busybox-static,
# the 6.12 kernel in target/vfio-vm/kernel): run.sh calls this script after
# its own stage. LINUX_GUEST_MODE=boot only boots L2 to /init with no device.
# See tests/vfio-vm/README.md ("The Linux guest stage").
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
work="$root/target/vfio-vm/linux-guest"
mkdir -p "$work"
mode=${LINUX_GUEST_MODE:-full}
# Affinity-move rounds: the default run, and each other policy run.
rounds=${LINUX_GUEST_ROUNDS:-20}
rounds_other=${LINUX_GUEST_ROUNDS_OTHER:-5}
# The igb runs after the first (fast, source masking on), as POLICY:SOURCE_MASKING
# (policy fast, strict, trap or auto; on or off); trap:off is the hostile run.
policy_runs=${LINUX_GUEST_POLICY_RUNS:-auto:on strict:on trap:on fast:off strict:off trap:off}
# Unbind/rebind cycles of the igb default run.
rebinds=${LINUX_GUEST_REBINDS:-10}
guest_timeout_s=${LINUX_GUEST_TIMEOUT:-2400}
# Diagnosis knobs (README, "Diagnosing"): extra QEMU arguments, extra L1
# kernel parameters, kvm-amd module parameters in L1, L2's vCPUs.
qemu_extra=${LINUX_GUEST_QEMU_ARGS:-}
l1_append=${LINUX_GUEST_L1_APPEND:-}
kvm_amd_params=${LINUX_GUEST_KVM_AMD:-}
l2_cpus=${LINUX_GUEST_L2_CPUS:-2}
# L1's CPUs (QEMU's -smp). One by default: with two, the nested machine
# faulted in 6 of 8 runs (L1 hangs and triple faults, L2 shutdowns); with
# one, 7 of 11 passed and the other 4 hung the same way while L2 booted
# (README, "The nested machine: one L1 CPU"). L2's vCPUs then time-share
# L1's one CPU as threads; L2 still sees LINUX_GUEST_L2_CPUS.
l1_cpus=${LINUX_GUEST_L1_CPUS:-1}
# QEMU's accelerator: tcg (multi-threaded, one host thread per vCPU) or,
# e.g., tcg,thread=single (README, "The nested machine: one L1 CPU").
accel=${LINUX_GUEST_ACCEL:-tcg}
# Each VMM run's watchdog in L1 (it then prints the VMM's threads and kills it).
vmm_timeout=${LINUX_GUEST_VMM_TIMEOUT:-300}

start_s=$(date +%s)
phase() { printf '[linux-guest %s +%ss] %s\n' "$(date +%H:%M:%S)" "$(( $(date +%s) - start_s ))" "$*"; }
die() { printf 'linux-guest: FAILED: %s\n' "$*" >&2; exit 1; }

# shellcheck source=tests/vfio-vm/modules.sh
. "$here/modules.sh"

kdir=$(ls -d "$root"/target/vfio-vm/kernel/linux-image-* 2>/dev/null | sort -V | tail -1 || true)
[ -n "$kdir" ] || die "no kernel in target/vfio-vm/kernel: run tests/vfio-vm/run.sh first"
vmlinuz=$(ls "$kdir"/boot/vmlinuz-* | head -1)
kver=${vmlinuz##*/vmlinuz-}
[ -s "$kdir/lib/modules/$kver/modules.dep" ] || depmod -b "$kdir" "$kver"

# --- the VMM, static ----------------------------------------------------------
phase "building reference-vmm (static, release)"
(cd "$root" && RUSTFLAGS='-C target-feature=+crt-static' CARGO_PROFILE_RELEASE_DEBUG=false \
    cargo build -q --release -p reference-vmm --target x86_64-unknown-linux-gnu) ||
    die "cargo build of reference-vmm failed"
target_dir=$(cd "$root" && cargo metadata --format-version 1 --no-deps |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
vmm="$target_dir/x86_64-unknown-linux-gnu/release/reference-vmm"
[ -x "$vmm" ] || die "reference-vmm binary missing: $vmm"

# --- L2's initramfs: busybox, the NIC drivers, ethtool ------------------------
phase "L2 initramfs"
l2="$work/l2"
rm -rf "$l2" && mkdir -p "$l2"/{bin,dev,proc,sys,etc,tmp,lib/modules/"$kver"}
cp /bin/busybox "$l2/bin/busybox"
for applet in sh mount insmod echo cat ls sleep reboot dmesg awk grep sed ip ping6 ping tr head tail dd wc basename readlink printf sort devmem; do
    ln -sf busybox "$l2/bin/$applet"
done
pack_modules "$kdir" "$kver" "$l2" dca i2c-algo-bit igb e1000e
# ethtool from its Debian package, with the shared libraries it needs.
debs="$work/debs"
if [ ! -x "$debs/root/sbin/ethtool" ]; then
    rm -rf "$debs" && mkdir -p "$debs/root"
    (cd "$debs" && apt-get download -q ethtool libmnl0 >"$work/apt-download.log" 2>&1) ||
        { cat "$work/apt-download.log" >&2; die "apt-get download ethtool libmnl0 failed"; }
    for deb in "$debs"/*.deb; do dpkg -x "$deb" "$debs/root"; done
fi
cp "$debs/root/sbin/ethtool" "$l2/bin/ethtool"
LD_LIBRARY_PATH="$debs/root/usr/lib/x86_64-linux-gnu" ldd "$l2/bin/ethtool" |
    grep -oE '/[^ ]+' | while read -r lib; do
        dst=${lib#"$debs/root"}
        mkdir -p "$l2$(dirname "$dst")"
        cp -L "$lib" "$l2$dst"
    done
[ -e "$l2/lib64/ld-linux-x86-64.so.2" ] || die "ethtool's dynamic loader was not packed"
cp "$here/linux-guest-l2-init.sh" "$l2/init"
chmod +x "$l2/init"
(cd "$l2" && find . | cpio -o -H newc --quiet >"$work/l2.cpio")

# --- L1's initramfs: VFIO and KVM modules, the VMM, L2's kernel and initramfs --
phase "L1 initramfs"
l1="$work/l1"
rm -rf "$l1" && mkdir -p "$l1"/{bin,dev,proc,sys,etc,l2,tmp,lib/modules/"$kver"}
cp /bin/busybox "$l1/bin/busybox"
for applet in sh mount insmod echo cat ls sleep poweroff ip awk grep sed tee tr basename readlink head tail timeout wc; do
    ln -sf busybox "$l1/bin/$applet"
done
pack_modules "$kdir" "$kver" "$l1" irqbypass vfio vfio_iommu_type1 vfio-pci-core vfio-pci kvm ccp kvm-amd e1000e igb
cp "$vmm" "$l1/bin/reference-vmm"
cp "$vmlinuz" "$l1/l2/vmlinuz"
cp "$work/l2.cpio" "$l1/l2/initrd"
cat >"$l1/etc/linux-guest.conf" <<CONF
mode='$mode' rounds='$rounds' rounds_other='$rounds_other' rebinds='$rebinds'
kvm_amd_params='$kvm_amd_params' l2_cpus='$l2_cpus' vmm_timeout='$vmm_timeout'
policy_runs='$policy_runs'
CONF
cp "$here/linux-guest-l1-init.sh" "$l1/init"
chmod +x "$l1/init"
(cd "$l1" && find . | cpio -o -H newc --quiet >"$work/l1.cpio")
phase "initramfs L1 $(du -h "$work/l1.cpio" | cut -f1) (L2 $(du -h "$work/l2.cpio" | cut -f1))"

# --- boot ---------------------------------------------------------------------
phase "booting QEMU ($accel, L1 CPUs $l1_cpus, L2 vCPUs $l2_cpus, timeout ${guest_timeout_s}s)"
log="$work/console.log"
set +e
timeout -k 10 "$guest_timeout_s" qemu-system-x86_64 -M q35 -accel "$accel" -cpu qemu64,+svm,+npt,+x2apic \
    -m 2G -smp "$l1_cpus" -nographic -no-reboot -nic none -kernel "$vmlinuz" -initrd "$work/l1.cpio" \
    -append "console=ttyS0 intel_iommu=on panic=-1 quiet nokaslr no_timer_check $l1_append" \
    -device intel-iommu,intremap=on \
    -netdev hubport,id=h0,hubid=0 -device igb,netdev=h0 \
    -netdev hubport,id=h1,hubid=0 -device e1000e,netdev=h1 \
    -d cpu_reset -D "$work/qemu-reset.log" $qemu_extra \
    </dev/null 2>&1 | sed -u 's/\r$//' | tee "$log" |
    grep --line-buffered -E '^(PASS|FAIL|L1:|L1-|L2:|VMM-EXIT|VMM-EVENT|VMM-STATS final|TIMING)|linux-guest: |Kernel panic'
qemu_rc=${PIPESTATUS[0]}
set -e
phase "QEMU exited ($qemu_rc); console log: $log"
if [ "$qemu_rc" -eq 124 ] || [ "$qemu_rc" -eq 137 ]; then
    tail -40 "$log" >&2
    die "QEMU timeout: killed after ${guest_timeout_s}s (see $log)"
fi
summary=$(grep -E '^linux-guest: [0-9]+ passed, [0-9]+ failed$' "$log" | tail -1 || true)
if [ -z "$summary" ]; then
    tail -40 "$log" >&2
    # -no-reboot turns a reset of L1 into QEMU's exit 0; QEMU logs a triple
    # fault of L1 (not one in a nested guest, which KVM gets as an exit).
    grep -q '^Triple fault' "$work/qemu-reset.log" &&
        die "L1 triple fault: QEMU reset the outer guest (see $work/qemu-reset.log and README, \"The nested machine: one L1 CPU\")"
    die "no summary line (see $log)"
fi
grep -E '^FAIL' "$log" || true
echo "$summary"
read -r _ passed _ failed _ <<<"$summary"
[ "$passed" -gt 0 ] && [ "$failed" -eq 0 ]
