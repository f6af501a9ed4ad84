#!/bin/sh
# L2 (under reference-vmm): an unmodified kernel with its own igb/e1000e
# driver on the assigned NIC. Prints `L2-PASS name: detail` or `L2-FAIL
# name: detail` per check and `L2-INFO key=value` facts; before each
# `L2-MARK n` it writes n to the VMM's statistics port (0x4f0), so the VMM
# prints its counters at that point (`VMM-STATS mark=n`). L1 compares the
# two. Parameters come from the kernel command line: lg.moves=N (affinity
# moves), lg.rebind=N, lg.ethtool=1, lg.hostile=1, and lg.boot=1 (no
# device: only reach /init and reset). See linux-guest.sh.
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
arg() { sed -n "s/.*$1=\([^ ]*\).*/\1/p" /proc/cmdline; }
moves=$(arg lg.moves); moves=${moves:-0}
rebind=$(arg lg.rebind); rebind=${rebind:-0}
do_ethtool=$(arg lg.ethtool); hostile=$(arg lg.hostile)
# Progress: every check, mark and loop round writes /tmp/progress; a
# watcher prints where /init is blocked when it has not changed for 60 s
# (the VMM run's watchdog in L1 ends the run later).
progress() { echo "$*" > /tmp/progress; }
ok() { echo "L2-PASS $*"; progress "$*"; }
bad() { echo "L2-FAIL $*"; progress "$*"; }
stall_watch() {
    local last="" same=0 cur p
    while :; do
        sleep 10
        cur=$(cat /tmp/progress)
        if [ "$cur" = "$last" ]; then same=$((same + 10)); else same=0; last=$cur; fi
        [ $same -eq 60 ] || continue
        # First to the VMM (its stderr): the console itself may be stuck.
        printf '\356' | dd of=/dev/port bs=1 seek=1264 count=1 2>/dev/null
        echo "L2-STALL 60 s after '$cur': /init's kernel stack, tasks in D state, the kernel log's tail"
        echo "L2-STALL init wchan=$(cat /proc/1/wchan) $(grep -E '^State' /proc/1/status)"
        cat /proc/1/stack
        for p in /proc/[0-9]*; do
            grep -q '^State:.*D' $p/status 2>/dev/null || continue
            echo "L2-STALL D: $(cat $p/comm) pid ${p#/proc/}"; cat $p/stack
        done
        grep -E '^ *(2[0-9]|3[0-9]):|LOC|RES|CAL' /proc/interrupts
        dmesg | tail -15
    done
}
now() { awk '{print $1}' /proc/uptime; }
since() { awk -v t0="$1" '{printf "%.2f", $1 - t0}' /proc/uptime; }
# The VMM prints its statistics, labelled n, when n is written to 0x4f0.
mark() { echo "L2-MARK $1"; progress "mark $1"; printf "\\$(printf '%03o' "$1")" | dd of=/dev/port bs=1 seek=1264 count=1 2>/dev/null; }

cpus=$(grep -c ^processor /proc/cpuinfo)
echo "L2: init reached at $(now) s of L2's uptime, $cpus CPUs"
progress "init"
stall_watch &
# LINUX_GUEST_MODE=boot: no device assigned; /init reached with every
# vCPU the VMM was given (the command line carries the count) is the check.
if [ "$(arg lg.boot)" = 1 ]; then
    [ "$cpus" = "$(arg lg.cpus)" ] && ok "init_reached: $cpus CPUs" || bad "init_reached: $cpus CPUs, want $(arg lg.cpus)"
    [ -e /sys/bus/pci/devices/0000:00:01.0 ] && bad "no_device_in_boot_mode: 0000:00:01.0 present" || ok "no_device_in_boot_mode"
    echo "L2-DONE"
    reboot -f
fi
for m in $(cat /etc/modules); do
    insmod "$m" || echo "L2: insmod $m failed"
done
dev=$(ls -d /sys/bus/pci/devices/0000:00:01.0)
# The MSI-X table's BAR: BAR 3 on both igb and e1000e (their capability's
# Table BIR; table at offset 0, PBA at 0x2000).
msix_bir=3
drv=$(basename "$(readlink $dev/driver)")
bdf=0000:00:01.0

# The helpers' counters are local: the callers' loops count with their own.
wait_eth0() {
    local i=0
    while [ ! -e /sys/class/net/eth0 ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
    [ -e /sys/class/net/eth0 ]
}
# IRQ numbers of eth0's vectors (the driver names them eth0, eth0-TxRx-0, ...).
eth_irqs() { grep -E ' eth0(-|$)' /proc/interrupts | awk -F: '{print $1}' | tr -d ' '; }
# Link up and an IPv6 link-local address that finished DAD (bounded wait).
up() {
    # No duplicate address detection: two NICs on a private hub.
    echo 0 > /proc/sys/net/ipv6/conf/eth0/accept_dad
    ip link set eth0 up
    local i=0
    while [ $i -lt 100 ]; do
        [ "$(cat /sys/class/net/eth0/carrier 2>/dev/null)" = 1 ] &&
            ip -6 addr show dev eth0 scope link | grep -q inet6 &&
            ! ip -6 addr show dev eth0 | grep -q tentative && return 0
        sleep 0.1; i=$((i + 1))
    done
    return 1
}

# 1. The driver binds with MSI-X; every vector it requested is in /proc/interrupts.
if wait_eth0 && up; then ok "link_up: $drv on $bdf"; else bad "link_up: no carrier or address on eth0"; fi
vectors=$(ls $dev/msi_irqs 2>/dev/null | wc -l)
irqs=$(eth_irqs | wc -l)
mode=$(cat $dev/msi_irqs/* 2>/dev/null | sort -u | tr '\n' ' ')
if [ "$vectors" -gt 1 ] && [ "$vectors" -eq "$irqs" ] && [ "$mode" = "msix " ]; then
    ok "msix_vectors_in_proc_interrupts: $vectors MSI-X vectors, $irqs eth0 IRQs"
else
    bad "msix_vectors_in_proc_interrupts: msi_irqs $vectors ($mode), eth0 IRQs $irqs"
fi
dmesg | grep -E 'Using MSI-X|MSI-X' | head -2
echo "L2-INFO vectors=$vectors"
mark 1

# 2. Traffic: unicast pings to the outer guest's other NIC (L1 gives its
# link-local address as lg.peer; without it a multicast ping finds it).
# -A sends each ping as soon as the previous reply arrived.
peer=$(arg lg.peer)
if [ -z "$peer" ]; then
    ping6 -c 3 -i 0.2 -w 60 -I eth0 ff02::1 > /tmp/ping 2>&1
    own=$(ip -6 addr show dev eth0 scope link | awk '/inet6/ {sub("/.*", "", $2); print $2}')
    peer=$(grep -o 'from fe80::[0-9a-f:]*' /tmp/ping | awk '{print $2}' | sed 's/:$//' | grep -v "^$own\$" | head -1)
fi
if [ -n "$peer" ] && ping6 -A -c 5 -w 60 -I eth0 "$peer" > /tmp/ping 2>&1 &&
   grep -q '5 packets transmitted, 5 packets received' /tmp/ping; then
    ok "ping6_peer: 5/5 replies from $peer"
else
    cat /tmp/ping; bad "ping6_peer: peer '$peer'"
fi
ping1() { ping6 -c 1 -w 30 -I eth0 "$peer" >> /tmp/pings 2>&1; }

# 3. Affinity moves. Linux moves an MSI at that IRQ's next interrupt (mask,
# flush read, message write, unmask, from the interrupt path), so each
# round writes the new CPU, pings until every moved IRQ's effective
# affinity shows it, then pings once more and checks that none of those
# interrupts was counted on the old CPU. The IRQs moved are those that each
# of three pings raised (the receive queue's vector; the transmit queue
# follows the socket's hash and varies). The wait is bounded by 50 pings,
# the last 45 of them 0.2 s apart: the drivers' watchdogs also raise every
# queue vector every 2 s (igb's EICS, e1000e's ICS), so a vector the pings
# miss still moves within that bound.
if [ "$moves" -gt 0 ]; then
    cnt() { grep "^ *$1:" /proc/interrupts | awk -v c="$2" '{print $(c + 2)}'; }
    total() { echo $(( $(cnt $1 0) + $(cnt $1 1) )); }
    busy=$(eth_irqs)
    for k in 1 2 3; do
        for irq in $busy; do eval "t_$irq=\$(total $irq)"; done
        ping1
        keep=""
        for irq in $busy; do eval "[ \$(total $irq) -gt \$t_$irq ]" && keep="$keep $irq"; done
        busy=$keep
    done
    n=$(echo $busy | wc -w)
    echo "L2-INFO moved_irqs=$(echo $busy | tr ' ' ,)"
    : > /tmp/pings
    mark 2
    t0=$(now)
    lost=0; misplaced=0; unmoved=0; pings=0; r=0
    while [ $r -lt "$moves" ]; do
        cpu=$(( (r + 1) % 2 ))
        progress "affinity round $r"
        for irq in $busy; do echo $((cpu + 1)) > /proc/irq/$irq/smp_affinity; done
        pending="$busy"; k=0
        while [ -n "$pending" ] && [ $k -lt 50 ]; do
            [ $k -ge 5 ] && sleep 0.2
            ping1 || lost=$((lost + 1)); k=$((k + 1))
            left=""
            for irq in $pending; do
                [ "$(cat /proc/irq/$irq/effective_affinity_list)" = "$cpu" ] || left="$left $irq"
            done
            pending=$left
        done
        unmoved=$((unmoved + $(echo $pending | wc -w)))
        for irq in $busy; do eval "b_$irq=\$(cnt $irq $((1 - cpu)))"; done
        ping1 || lost=$((lost + 1)); pings=$((pings + k + 1))
        for irq in $busy; do
            eval "[ \"\$(cnt $irq $((1 - cpu)))\" = \"\$b_$irq\" ]" || misplaced=$((misplaced + 1))
        done
        r=$((r + 1))
    done
    t=$(since $t0)
    mark 3
    echo "L2-INFO moves=$((moves * n))"
    echo "L2-INFO move_time_s=$t"
    for irq in $busy; do echo "L2-INFO irq_$irq=$(cnt $irq 0)+$(cnt $irq 1)"; done
    rtt=$(grep -o 'time=[0-9.]*' /tmp/pings | awk -F= '$2 > m {m = $2} END {print m + 0}')
    slow=$(grep -o 'time=[0-9.]*' /tmp/pings | awk -F= '$2 > 1000' | wc -l)
    echo "L2-INFO max_ping_ms=$rtt"
    echo "L2-INFO pings_over_1s=$slow"
    [ "$n" -gt 0 ] && [ $unmoved -eq 0 ] && ok "affinity_moves: $moves rounds x $n IRQs, each took effect, in $t s" ||
        bad "affinity_moves: $unmoved of $((moves * n)) moves did not take effect within 50 pings (IRQs '$busy')"
    [ $misplaced -eq 0 ] && [ "$n" -gt 0 ] && ok "interrupts_on_the_new_cpu: after every move" ||
        bad "interrupts_on_the_new_cpu: $misplaced interrupts counted on the old CPU"
    [ $lost -eq 0 ] && ok "ping_sequence_complete: $pings pings during the moves, slowest $rtt ms" ||
        bad "ping_sequence_complete: $lost of $pings pings unanswered"
fi

# 4. The driver's own offline self-test (registers, eeprom, interrupt,
# loopback). Its interrupt test waits 10 ms for MSI-X vector 0 and its
# loopback test 20 jiffies for 64 frames, windows a nested emulated machine
# on a loaded host sometimes misses: up to three attempts, one must pass
# every test; failed attempts are printed and counted.
if [ "$do_ethtool" = 1 ]; then
    t0=$(now); a=0; passed=0
    while [ $a -lt 3 ] && [ $passed -eq 0 ]; do
        a=$((a + 1))
        progress "ethtool attempt $a"
        ethtool -t eth0 offline > /tmp/ethtool 2>&1
        grep -q 'result is PASS' /tmp/ethtool && passed=1
        [ $passed -eq 0 ] && cat /tmp/ethtool
        up || bad "link_up_after_selftest"
    done
    echo "L2-INFO ethtool_attempts=$a"
    [ $passed -eq 1 ] && ok "ethtool_offline_selftest: PASS at attempt $a in $(since $t0) s" ||
        bad "ethtool_offline_selftest: no PASS in $a attempts"
fi

# 5. Unbind and rebind: the driver frees its IRQs and disables MSI-X, then
# enables it again; the VMM's mark after the unbind shows no host IRQ.
if [ "$rebind" -gt 0 ]; then
    i=0; fails=0
    while [ $i -lt "$rebind" ]; do
        progress "rebind $i: unbind"
        echo $bdf > /sys/bus/pci/drivers/$drv/unbind
        [ $i -eq 0 ] && mark 4
        progress "rebind $i: bind"
        t1=$(now)
        echo $bdf > /sys/bus/pci/drivers/$drv/bind
        t2=$(now)
        progress "rebind $i: link up"
        wait_eth0 && up || fails=$((fails + 1))
        echo "L2-INFO rebind_$i: bind $(awk -v a=$t1 -v b=$t2 'BEGIN {printf "%.2f", b - a}') s, link $(since $t2) s, carrier $(cat /sys/class/net/eth0/carrier 2>/dev/null)"
        i=$((i + 1))
    done
    [ $fails -eq 0 ] && ok "unbind_rebind: $rebind times, link up each time" || bad "unbind_rebind: $fails of $rebind rebinds without link"
    if ping6 -A -c 3 -w 60 -I eth0 "$peer" > /tmp/ping 2>&1 && grep -q '3 packets received' /tmp/ping; then
        ok "ping6_after_rebind: 3/3"
    else
        cat /tmp/ping; bad "ping6_after_rebind"
    fi
    echo "L2-INFO vectors_after_rebind=$(ls $dev/msi_irqs | wc -l)"
    mark 5
fi
# 6. Hostile: garbage messages and odd-size accesses into the table entries
# the driver does not use (5-9 of igb's 10), the PBA and past the table,
# through /dev/mem; the vectors in use must keep working.
if [ "$hostile" = 1 ]; then
    bar=$(awk -v n=$((msix_bir + 1)) 'NR == n {print $1}' $dev/resource)
    base=$((bar))
    e=5
    while [ $e -lt 10 ]; do
        a=$((base + 16 * e))
        devmem $a 32 0xdeadbeef; devmem $((a + 4)) 32 0xffffffff; devmem $((a + 8)) 32 0x12345678
        devmem $((a + 12)) 32 0          # unmask with a message KVM must refuse
        devmem $((a + 1)) 8 0xff; devmem $((a + 2)) 16 0xabcd; devmem $((a + 3)) 8 > /dev/null
        devmem $((a + 8)) 64 0xffffffff00000000; devmem $((a + 13)) 8 0x1; devmem $((a + 6)) 16 > /dev/null
        devmem $((a + 12)) 32 0xfffffffe  # reserved bits set, unmasked
        e=$((e + 1))
    done
    devmem $((base + 0x2000)) 32 0xffffffff; devmem $((base + 0x2001)) 8 0xff; devmem $((base + 0x2000)) 64 > /dev/null
    devmem $((base + 16 * 10)) 32 0x1; devmem $((base + 16 * 10 + 3)) 8 > /dev/null
    echo "L2-INFO hostile_table=$(printf '%#x' $base)"
    if ping6 -A -c 5 -w 60 -I eth0 "$peer" > /tmp/ping 2>&1 && grep -q '5 packets received' /tmp/ping; then
        ok "vectors_in_use_work_after_garbage: 5/5 pings"
    else
        cat /tmp/ping; bad "vectors_in_use_work_after_garbage"
    fi
    mark 6
fi
echo "L2-DONE"
reboot -f
