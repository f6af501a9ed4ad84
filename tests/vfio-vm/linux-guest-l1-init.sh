#!/bin/sh
# L1 (the QEMU guest): loads VFIO and KVM, binds the NICs to vfio-pci and
# runs reference-vmm with L2 (the same kernel) on each. See linux-guest.sh.
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
echo "1 4 1 7" > /proc/sys/kernel/printk
for m in $(cat /etc/modules); do
    insmod "$m" || echo "L1: insmod $m failed"
done
mode=$(cat /etc/mode)
pass=0; fail=0
ok() { echo "PASS $*"; pass=$((pass + 1)); }
bad() { echo "FAIL $*"; fail=$((fail + 1)); }
[ -c /dev/kvm ] && ok "l1_kvm" || bad "l1_kvm: /dev/kvm missing"

# One VMM run: $1 label, $2 extra VMM options, $3 L2 command line extra.
vmm_run() {
    label=$1; opts=$2; extra=$3
    t0=$(awk '{print $1}' /proc/uptime)
    /bin/reference-vmm --kernel /l2/vmlinuz --initrd /l2/initrd --cpus 2 --memory 512 \
        --cmdline "console=ttyS0 quiet panic=-1 $extra" $opts > /tmp/vmm.out 2>&1
    rc=$?
    cat /tmp/vmm.out
    echo "L1: $label: VMM exit $rc after $(awk -v t0=$t0 '{printf "%.1f", $1 - t0}' /proc/uptime) s"
    return $rc
}

if [ "$mode" = boot ]; then
    if vmm_run boot "" "" && grep -q '^L2-DONE' /tmp/vmm.out && grep -q '^VMM-EXIT guest reset' /tmp/vmm.out; then
        ok "boot_unmodified_linux_to_init_and_reset"
    else
        bad "boot_unmodified_linux_to_init_and_reset: see above"
    fi
fi
echo "linux-guest: $pass passed, $fail failed"
poweroff -f
