#!/bin/sh
# L2 (under reference-vmm): an unmodified kernel; this /init exercises the
# assigned NIC and prints one line per check. See linux-guest.sh.
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
echo "L2: init reached, $(grep -c ^processor /proc/cpuinfo) CPUs"
echo "L2-DONE"
reboot -f
