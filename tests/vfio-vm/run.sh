#!/usr/bin/env bash
# Runs the kernel VFIO backend of vfio-vectors against real vfio-pci inside a
# QEMU (TCG) guest with an emulated IOMMU and two NICs (igb, e1000e).
#
# Phases: install host packages if missing -> fetch and unpack the guest
# kernel -> build the static test binary -> build the initramfs -> boot ->
# check the guest's summary lines. Exits 0 only when the guest printed final
# lines "N passed, 0 failed", "end-to-end: N passed, 0 failed" and
# "scenarios: N passed, 0 failed, K skipped", each with N > 0. See
# tests/vfio-vm/README.md.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
work="$root/target/vfio-vm"
mkdir -p "$work"

start_s=$(date +%s)
phase() { printf '[vfio-vm %s +%ss] %s\n' "$(date +%H:%M:%S)" "$(( $(date +%s) - start_s ))" "$*"; }
die() { printf 'vfio-vm: FAILED: %s\n' "$*" >&2; exit 1; }

# Guest kernel: the version the probe used, else the newest 6.12 in backports.
preferred_kernel="linux-image-6.12.95+deb12-amd64"
guest_timeout_s=${VFIO_VM_TIMEOUT:-600}

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

# --- phase 1: host packages -------------------------------------------------
qemu_has_igb() {
    command -v qemu-system-x86_64 >/dev/null 2>&1 &&
        qemu-system-x86_64 -device help 2>/dev/null | grep -q '"igb"'
}
have_tools() {
    qemu_has_igb && [ -x /bin/busybox ] && dpkg -s busybox-static >/dev/null 2>&1 &&
        command -v cpio >/dev/null && command -v depmod >/dev/null && command -v xz >/dev/null
}

apt_updated=0
apt_update_once() {
    if [ "$apt_updated" -eq 0 ]; then
        as_root apt-get update -q >"$work/apt-update.log" 2>&1 ||
            { cat "$work/apt-update.log" >&2; die "apt-get update failed"; }
        apt_updated=1
    fi
}

ensure_backports() {
    if grep -rqs 'bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/; then
        return
    fi
    # Reuse the Debian mirror already configured (not the security one).
    local mirror
    mirror=$(grep -rhs -E '^(URIs:|deb )' /etc/apt/sources.list /etc/apt/sources.list.d/*.sources \
                /etc/apt/sources.list.d/*.list 2>/dev/null |
             grep -oE 'https?://[^ ]+/debian/?( |$)' | grep -v security | head -1 | tr -d ' ' || true)
    [ -n "$mirror" ] || mirror="http://deb.debian.org/debian"
    phase "adding bookworm-backports from $mirror"
    as_root tee /etc/apt/sources.list.d/bookworm-backports.sources >/dev/null <<EOF
Types: deb
URIs: $mirror
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
    apt_updated=0
}

phase "phase 1: host packages"
ensure_backports
if ! have_tools; then
    apt_update_once
    phase "installing qemu-system-x86 (backports), busybox-static, cpio, kmod, xz-utils"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
        -t bookworm-backports qemu-system-x86/bookworm-backports busybox-static cpio kmod xz-utils \
        >"$work/apt-install.log" 2>&1 ||
        { tail -30 "$work/apt-install.log" >&2; die "package install failed (qemu-system-x86/bookworm-backports busybox-static cpio kmod xz-utils); see $work/apt-install.log"; }
    have_tools || die "packages installed but a tool is still missing (qemu-system-x86_64 with -device igb, /bin/busybox, cpio, depmod, xz)"
fi
phase "$(qemu-system-x86_64 --version | head -1)"

# --- phase 2: guest kernel --------------------------------------------------
phase "phase 2: guest kernel"
kpkg=""
if ls "$work"/kernel/linux-image-*/boot/vmlinuz-* >/dev/null 2>&1; then
    kdir=$(ls -d "$work"/kernel/linux-image-* | sort -V | tail -1)
    kpkg=$(basename "$kdir")
else
    apt_update_once
    if apt-cache policy "$preferred_kernel" 2>/dev/null | grep -q 'Candidate: [0-9]'; then
        kpkg="$preferred_kernel"
    else
        kpkg=$(apt-cache search --names-only '^linux-image-6\.12\.[0-9]+\+deb12-amd64$' |
               awk '{print $1}' | sort -V | tail -1)
    fi
    [ -n "$kpkg" ] || die "package missing: no linux-image-6.12.*+deb12-amd64 in the apt sources (is bookworm-backports configured?)"
    phase "downloading $kpkg"
    mkdir -p "$work/kernel/dl"
    (cd "$work/kernel/dl" && rm -f ./*.deb && apt-get download -q "$kpkg" >"$work/apt-download.log" 2>&1) ||
        { cat "$work/apt-download.log" >&2; die "package missing: apt-get download $kpkg failed"; }
    kdir="$work/kernel/$kpkg"
    rm -rf "$kdir.tmp" && mkdir -p "$kdir.tmp"
    dpkg -x "$work"/kernel/dl/*.deb "$kdir.tmp"
    rm -f "$work"/kernel/dl/*.deb
    mv "$kdir.tmp" "$kdir"
fi
vmlinuz=$(ls "$kdir"/boot/vmlinuz-* | head -1)
kver=${vmlinuz##*/vmlinuz-}
phase "kernel $kpkg ($kver)"
if [ ! -s "$kdir/lib/modules/$kver/modules.dep" ]; then
    depmod -b "$kdir" "$kver"   # the .deb ships no modules.dep
fi

# --- phase 3: static test binaries ------------------------------------------
phase "phase 3: building vfio-vm-test and msix-bench (static, release)"
(cd "$root" && RUSTFLAGS='-C target-feature=+crt-static' CARGO_PROFILE_RELEASE_DEBUG=false \
    cargo build -q --release -p vfio-vm-test -p msix-bench --target x86_64-unknown-linux-gnu) ||
    die "cargo build of vfio-vm-test and msix-bench failed"
# The build directory cargo uses (CARGO_TARGET_DIR or the workspace's target/).
target_dir=$(cd "$root" && cargo metadata --format-version 1 --no-deps |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])') ||
    die "cargo metadata failed"
testbin="$target_dir/x86_64-unknown-linux-gnu/release/vfio-vm-test"
benchbin="$target_dir/x86_64-unknown-linux-gnu/release/msix-bench"
[ -x "$testbin" ] || die "test binary missing: $testbin"
[ -x "$benchbin" ] || die "msix-bench binary missing: $benchbin"
# crates/vfio-vectors/tests/hardware.rs runs in the guest too.
hwbin=$(cd "$root" && RUSTFLAGS='-C target-feature=+crt-static' CARGO_PROFILE_RELEASE_DEBUG=false \
    cargo test -q --release --no-run -p vfio-vectors --test hardware \
    --target x86_64-unknown-linux-gnu --message-format=json 2>/dev/null |
    grep -o '"executable":"[^"]*"' | tail -1 | sed 's/^"executable":"//; s/"$//') ||
    die "cargo build of vfio-vectors tests/hardware.rs failed"
[ -x "$hwbin" ] || die "hardware test binary missing"

# --- phase 4: initramfs -----------------------------------------------------
phase "phase 4: initramfs"
ird="$work/initramfs"
rm -rf "$ird"
mkdir -p "$ird"/{bin,dev,proc,sys,etc,lib/modules/"$kver"}
cp /bin/busybox "$ird/bin/busybox"
for applet in sh mount insmod echo cat ls sleep poweroff awk grep tee basename; do
    ln -s busybox "$ird/bin/$applet"
done
# Load order from modules.dep: each wanted module after its dependencies.
order=()
add_module() {
    local name=$1 line path deps d i
    line=$(grep -E "(^|/)${name}\.ko(\.xz|\.zst|\.gz)?:" "$kdir/lib/modules/$kver/modules.dep" | head -1) ||
        die "kernel module $name not found in $kpkg"
    path=${line%%:*}
    read -r -a deps <<<"${line#*:}"
    for (( i=${#deps[@]}-1; i>=0; i-- )); do
        d=${deps[$i]}; d=${d##*/}; add_module "${d%%.ko*}"
    done
    for d in "${order[@]:-}"; do [ "$d" = "$path" ] && return 0; done
    order+=("$path")
}
# VFIO, then KVM for the end-to-end stage (ccp is a dependency of kvm-amd).
for m in irqbypass vfio vfio_iommu_type1 vfio-pci-core vfio-pci kvm ccp kvm-amd; do add_module "$m"; done
: >"$ird/etc/modules"
for path in "${order[@]}"; do
    dst="$ird/lib/modules/$kver/${path%.xz}"
    mkdir -p "$(dirname "$dst")"
    case "$path" in
        *.xz) xz -dc "$kdir/lib/modules/$kver/$path" >"$dst" ;;
        *) cp "$kdir/lib/modules/$kver/$path" "$dst" ;;
    esac
    echo "/lib/modules/$kver/${path%.xz}" >>"$ird/etc/modules"
done
cp "$kdir/lib/modules/$kver"/modules.{order,builtin,builtin.modinfo} "$ird/lib/modules/$kver/" 2>/dev/null || true
depmod -b "$ird" "$kver"
phase "modules: $(tr '\n' ' ' <"$ird/etc/modules" | sed 's#/lib/modules/[^ ]*/##g')"
cp "$testbin" "$ird/bin/vfio-vm-test"
cp "$hwbin" "$ird/bin/vfio-vectors-hardware"
cp "$benchbin" "$ird/bin/msix-bench"
# The checked-in scenarios, run on each NIC with `msix-bench scenario --vfio`.
mkdir -p "$ird/scenarios"
cp "$root"/tests/scenarios/*.scn "$ird/scenarios/"
# Focus mode (a diagnostic, never CI's run): VFIO_VM_FOCUS="FILE.scn ..."
# runs only those scenario files on each NIC, VFIO_VM_FOCUS_ROUNDS times
# (default 10), and skips every other check.
: >"$ird/etc/focus"
if [ -n "${VFIO_VM_FOCUS:-}" ]; then
    echo "${VFIO_VM_FOCUS_ROUNDS:-10} $VFIO_VM_FOCUS" >"$ird/etc/focus"
    phase "focus mode: ${VFIO_VM_FOCUS_ROUNDS:-10} rounds of $VFIO_VM_FOCUS on each NIC"
fi
cat >"$ird/init" <<'EOF'
#!/bin/sh
# Guest init: load VFIO and KVM, bind every igb/e1000e to vfio-pci, test
# each (kernel VFIO source alone, then end to end under KVM), power off.
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
echo "4 4 1 7" > /proc/sys/kernel/printk
for m in $(cat /etc/modules); do
    insmod "$m" || echo "GUEST: insmod $m failed"
done
total_pass=0; total_fail=0; nics=0; e2e_pass=0; e2e_fail=0
scn_pass=0; scn_fail=0; scn_skip=0
if [ -c /dev/kvm ]; then
    kvm=1
    echo "GUEST: /dev/kvm present"
else
    kvm=0
    echo "FAIL kvm_in_guest: /dev/kvm missing after loading kvm and kvm-amd"
    e2e_fail=$((e2e_fail + 1))
fi
for dev in /sys/bus/pci/devices/*; do
    id="$(cat $dev/vendor):$(cat $dev/device)"
    # igb and e1000e: every check. virtio-net: a device with MSI-X whose
    # vectors msix-bench cannot raise (no known trigger): the end-to-end
    # checks that need no raise, the others reported skipped.
    case "$id" in
        0x8086:0x10c9|0x8086:0x10d3) nic=1 ;;
        0x1af4:0x1000|0x1af4:0x1041) nic=0 ;;
        *) continue ;;
    esac
    bdf=$(basename $dev)
    echo vfio-pci > $dev/driver_override
    [ -e $dev/driver ] && echo $bdf > $dev/driver/unbind
    echo $bdf > /sys/bus/pci/drivers_probe
    echo "GUEST: $bdf ($id) driver: $(basename $(readlink $dev/driver 2>/dev/null) 2>/dev/null)"
    if [ -s /etc/focus ]; then
        [ $nic -eq 1 ] || continue
        read -r rounds focus </etc/focus
        for r in $(seq 1 $rounds); do
            files=""; for f in $focus; do files="$files /scenarios/$f"; done
            /bin/msix-bench scenario --vfio $bdf $files > /tmp.scn 2>&1
            grep -E '^(FAIL|PASS|DIAG|INFO)' /tmp.scn | sed "s#^#FOCUS $bdf round $r: #"
            # The same files on the built-in software device: a control
            # that tells the device's part from the nested platform's.
            /bin/msix-bench scenario $files > /tmp.sw 2>&1
            grep -E '^(FAIL|PASS)' /tmp.sw | sed "s#^#FOCUS software round $r: #"
            line=$(grep -E '^[0-9]+ passed, [0-9]+ failed' /tmp.scn | tail -1)
            p=$(echo "$line" | awk '{print $1}'); f=$(echo "$line" | awk '{print $3}' | tr -d ,)
            scn_pass=$((scn_pass + ${p:-0})); scn_fail=$((scn_fail + ${f:-1}))
        done
        total_pass=$((total_pass + 1)); e2e_pass=$((e2e_pass + 1)); nics=$((nics + 1))
        continue
    fi
    if [ $nic -eq 1 ]; then
    nics=$((nics + 1))
    /bin/vfio-vm-test $dev > /tmp.out 2>&1; rc=$?
    cat /tmp.out
    line=$(grep -E '^[0-9]+ passed, [0-9]+ failed$' /tmp.out | tail -1)
    if [ -n "$line" ]; then
        p=$(echo "$line" | awk '{print $1}'); f=$(echo "$line" | awk '{print $3}')
    else
        p=0; f=1; echo "FAIL $bdf: test binary printed no summary (exit $rc)"
    fi
    [ $rc -ne 0 ] && [ "$f" -eq 0 ] && { f=1; echo "FAIL $bdf: test binary exited $rc"; }
    # crates/vfio-vectors/tests/hardware.rs against the same device.
    MSIX_ACCEL_VFIO_DEVICE=$dev /bin/vfio-vectors-hardware --test-threads=1 > /tmp.hw 2>&1
    if [ $? -eq 0 ] && grep -q '^test result: ok. 1 passed' /tmp.hw && ! grep -q skipped /tmp.hw; then
        echo "PASS hardware_rs_loopback"; p=$((p + 1))
    else
        cat /tmp.hw; echo "FAIL hardware_rs_loopback: see above"; f=$((f + 1))
    fi
    echo "GUEST: $bdf ($id): $p passed, $f failed"
    total_pass=$((total_pass + p)); total_fail=$((total_fail + f))
    fi
    # End to end: the NIC's vectors through the accelerator into a KVM guest.
    if [ $kvm -eq 1 ]; then
        t0=$(awk '{print $1}' /proc/uptime)
        /bin/msix-bench --vfio $bdf > /tmp.e2e 2>&1; rc=$?
        cat /tmp.e2e
        line=$(grep -E '^end-to-end: [0-9]+ passed, [0-9]+ failed$' /tmp.e2e | tail -1)
        if [ -n "$line" ]; then
            p=$(echo "$line" | awk '{print $2}'); f=$(echo "$line" | awk '{print $4}')
        else
            p=0; f=1; echo "FAIL $bdf: msix-bench --vfio printed no summary (exit $rc)"
        fi
        # The peer handlers' checks must pass too (their line is separate).
        peers=$(grep -E '^peers: [0-9]+ passed, [0-9]+ failed$' /tmp.e2e | tail -1)
        if [ -z "$peers" ]; then
            f=$((f + 1)); echo "FAIL $bdf: msix-bench --vfio printed no peers line"
        elif [ "$(echo "$peers" | awk '{print $4}')" -ne 0 ]; then
            f=$((f + 1)); echo "FAIL $bdf: peer handlers: $peers"
        fi
        [ $rc -ne 0 ] && [ "$f" -eq 0 ] && { f=1; echo "FAIL $bdf: msix-bench --vfio exited $rc"; }
        skipped=$(grep -E '^end-to-end: [0-9]+ skipped' /tmp.e2e | awk '{print $2}')
        skipped=${skipped:-0}
        echo "GUEST: $bdf ($id) end to end: $p passed, $f failed, $skipped skipped in $(awk -v t0=$t0 '{printf "%.1f", $1 - t0}' /proc/uptime) s"
        e2e_pass=$((e2e_pass + p)); e2e_fail=$((e2e_fail + f))
        if [ $nic -eq 1 ]; then
            # The checked-in scenarios on the NIC's own vectors; files the
            # device cannot run are reported SKIP with the reason.
            t0=$(awk '{print $1}' /proc/uptime)
            files=$(ls /scenarios/*.scn)
            /bin/msix-bench scenario --vfio $bdf $files > /tmp.scn 2>&1; rc=$?
            # A test-guest vCPU that triple-faults (KVM_EXIT_SHUTDOWN) is a
            # fault of the emulated nested platform, not of the code under
            # test: the test guest reports every exception it takes and
            # stops (tests/vfio-vm/README.md, "Faults of the nested
            # platform"). When that is the only kind of failure, each file
            # it hit runs once more and its second results replace its
            # first; its first failures are printed as PLATFORM-FAULT.
            # Any other failure, or the fault again, fails the stage.
            retry=$(grep -E '^FAIL /scenarios/[^:]+:[0-9]+: .*unexpected exit Shutdown' /tmp.scn |
                    sed -E 's#^FAIL (/scenarios/[^:]+):.*#\1#' | sort -u)
            others=$(grep -E '^FAIL ' /tmp.scn | grep -vc 'unexpected exit Shutdown')
            if [ -n "$retry" ] && [ "$others" -eq 0 ] && [ $rc -eq 1 ]; then
                for file in $retry; do
                    sed -i "s#^FAIL $file:#PLATFORM-FAULT $file:#" /tmp.scn
                done
            else
                retry=""
            fi
            cat /tmp.scn
            line=$(grep -E '^[0-9]+ passed, [0-9]+ failed(, [0-9]+ skipped)?$' /tmp.scn | tail -1)
            if [ -n "$line" ]; then
                p=$(echo "$line" | awk '{print $1}'); f=$(echo "$line" | awk '{print $3}' | tr -d ,)
                s=$(echo "$line" | awk '{print $5}'); s=${s:-0}
            else
                p=0; f=1; s=0; echo "FAIL $bdf: msix-bench scenario --vfio printed no summary (exit $rc)"
            fi
            if [ -n "$retry" ]; then
                for file in $retry; do
                    p=$((p - $(grep -c "^PASS $file " /tmp.scn)))
                    f=$((f - $(grep -c "^PLATFORM-FAULT $file:" /tmp.scn)))
                    s=$((s - $(grep -c "^SKIP $file " /tmp.scn)))
                    echo "RETRIED $bdf $file: a test-guest vCPU triple-faulted; the file runs again"
                done
                /bin/msix-bench scenario --vfio $bdf $retry > /tmp.retry 2>&1; rc=$?
                grep -vE '^[0-9]+ passed, [0-9]+ failed' /tmp.retry
                line=$(grep -E '^[0-9]+ passed, [0-9]+ failed(, [0-9]+ skipped)?$' /tmp.retry | tail -1)
                if [ -n "$line" ]; then
                    p=$((p + $(echo "$line" | awk '{print $1}')))
                    f=$((f + $(echo "$line" | awk '{print $3}' | tr -d ,)))
                    s2=$(echo "$line" | awk '{print $5}'); s=$((s + ${s2:-0}))
                else
                    f=$((f + 1)); echo "FAIL $bdf: the retried files printed no summary (exit $rc)"
                fi
            fi
            [ $rc -ne 0 ] && [ "$f" -eq 0 ] && { f=1; echo "FAIL $bdf: msix-bench scenario --vfio exited $rc"; }
            echo "GUEST: $bdf ($id) scenarios: $p passed, $f failed, $s skipped in $(awk -v t0=$t0 '{printf "%.1f", $1 - t0}' /proc/uptime) s"
            scn_pass=$((scn_pass + p)); scn_fail=$((scn_fail + f)); scn_skip=$((scn_skip + s))
        fi
        if [ $nic -eq 0 ]; then
            # --json on the quickest device: the same checks as one document.
            /bin/msix-bench --vfio $bdf --json > /tmp.json 2>&1
            if grep -q '"failed": 0,' /tmp.json && grep -q "\"skipped\": $skipped," /tmp.json &&
               grep -q "\"passed\": $p," /tmp.json && grep -q '"peers_failed": 0,' /tmp.json; then
                echo "PASS $bdf json_report_matches_the_table"; e2e_pass=$((e2e_pass + 1))
            else
                head -c 2000 /tmp.json; echo; echo "FAIL $bdf json_report_matches_the_table"; e2e_fail=$((e2e_fail + 1))
            fi
        fi
    fi
done
[ $nics -eq 0 ] && { echo "FAIL no igb/e1000e found"; total_fail=$((total_fail + 1)); }
[ $kvm -eq 1 ] && [ $scn_pass -eq 0 ] && { echo "FAIL scenarios: none ran"; scn_fail=$((scn_fail + 1)); }
echo "GUEST-DONE"
echo "end-to-end: $e2e_pass passed, $e2e_fail failed"
echo "scenarios: $scn_pass passed, $scn_fail failed, $scn_skip skipped"
echo "$total_pass passed, $total_fail failed"
poweroff -f
EOF
chmod +x "$ird/init"
initrd="$work/initramfs.cpio"
(cd "$ird" && find . | cpio -o -H newc --quiet >"$initrd")
phase "initramfs $(du -h "$initrd" | cut -f1)"

# --- phase 5: boot ----------------------------------------------------------
phase "phase 5: booting QEMU (TCG, timeout ${guest_timeout_s}s)"
log="$work/console.log"
set +e
timeout -k 10 "$guest_timeout_s" qemu-system-x86_64 -M q35 -accel tcg,thread=${VFIO_VM_TCG_THREAD:-multi} -cpu qemu64,+svm,+npt,+x2apic \
    -m 1G -smp ${VFIO_VM_SMP:-1} -nographic \
    -no-reboot -nic none -kernel "$vmlinuz" -initrd "$initrd" \
    -append 'console=ttyS0 intel_iommu=on irqaffinity=0 panic=-1 no_timer_check' \
    -device intel-iommu,intremap=on -device igb -device e1000e -device virtio-net-pci \
    </dev/null 2>&1 | tr -d '\r' | tee "$log" | grep -E '^(PASS|FAIL|SKIP|GUEST|TIMING|INFO|FOCUS|RETRIED|PLATFORM-FAULT)|passed, [0-9]+ failed(, [0-9]+ skipped)?$|Kernel panic'
qemu_rc=${PIPESTATUS[0]}
set -e
phase "QEMU exited ($qemu_rc); console log: $log"

# --- phase 6: verdict -------------------------------------------------------
if [ "$qemu_rc" -eq 124 ] || [ "$qemu_rc" -eq 137 ]; then
    die "QEMU timeout: killed after ${guest_timeout_s}s (see $log)"
fi
if grep -q 'Kernel panic' "$log"; then
    grep -A5 'Kernel panic' "$log" >&2
    die "guest panic (see $log)"
fi
summary=$(sed -n '/^GUEST-DONE$/,$p' "$log" | grep -E '^[0-9]+ passed, [0-9]+ failed$' | tail -1 || true)
e2e=$(sed -n '/^GUEST-DONE$/,$p' "$log" | grep -E '^end-to-end: [0-9]+ passed, [0-9]+ failed$' | tail -1 || true)
scn=$(sed -n '/^GUEST-DONE$/,$p' "$log" | grep -E '^scenarios: [0-9]+ passed, [0-9]+ failed, [0-9]+ skipped$' | tail -1 || true)
if [ -z "$summary" ] || [ -z "$e2e" ] || [ -z "$scn" ]; then
    tail -20 "$log" >&2
    die "no summary line from the guest (QEMU exit $qemu_rc; see $log)"
fi
phase "QEMU stage done in $(( $(date +%s) - start_s ))s"
grep -E '^FAIL' "$log" || true
grep -q '^FAIL kvm_in_guest' "$log" && die "/dev/kvm missing in the guest (kvm-amd did not load; see $log)"
read -r passed _ failed _ <<<"$summary"
read -r _ e2e_passed _ e2e_failed _ <<<"$e2e"
read -r _ scn_passed _ scn_failed _ <<<"$scn"
stage_ok=0
[ "$passed" -gt 0 ] && [ "$failed" -eq 0 ] && [ "$e2e_passed" -gt 0 ] && [ "$e2e_failed" -eq 0 ] &&
    [ "$scn_passed" -gt 0 ] && [ "$scn_failed" -eq 0 ] && stage_ok=1

# --- phase 7: an unmodified Linux guest (linux-guest.sh), opt-in ------------
# VFIO_VM_LINUX_GUEST=1 runs it after the verdict above (whatever it is, so
# that one run reports both) and requires its `linux-guest: N passed, 0
# failed`. Off by default, so not in CI yet: its nested machine still hung
# in 4 of 11 runs with one L1 CPU (README, "The nested machine: one L1 CPU").
# Its watchdog is tighter than its own default (2400 s): a whole run takes
# 3-4 minutes.
lg=""; lg_ok=1
if [ "${VFIO_VM_LINUX_GUEST:-0}" = 1 ]; then
    phase "phase 7: Linux guest stage (tests/vfio-vm/linux-guest.sh)"
    lg_log="$work/linux-guest.log"
    set +e
    LINUX_GUEST_TIMEOUT=${LINUX_GUEST_TIMEOUT:-900} bash "$here/linux-guest.sh" 2>&1 | tee "$lg_log"
    lg_rc=${PIPESTATUS[0]}
    set -e
    lg=$(grep -E '^linux-guest: [0-9]+ passed, [0-9]+ failed$' "$lg_log" | tail -1 || true)
    lg_ok=0
    if [ -n "$lg" ]; then
        read -r _ lg_passed _ lg_failed _ <<<"$lg"
        [ "$lg_rc" -eq 0 ] && [ "$lg_passed" -gt 0 ] && [ "$lg_failed" -eq 0 ] && lg_ok=1
    else
        lg="linux-guest: FAILED: no summary line (exit $lg_rc; see $lg_log)"
    fi
fi
phase "done in $(( $(date +%s) - start_s ))s"
echo "$e2e"
echo "$scn"
echo "$summary"
[ -z "$lg" ] || echo "$lg"
[ "$stage_ok" -eq 1 ] && [ "$lg_ok" -eq 1 ]
