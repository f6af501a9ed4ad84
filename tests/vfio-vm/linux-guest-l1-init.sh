#!/bin/sh
# L1 (the QEMU guest): loads VFIO and KVM, binds the NICs to vfio-pci and
# runs reference-vmm with L2 (the same kernel) on them, under each policy.
# Each L2 check becomes `PASS run: name` or `FAIL run: name`; the VMM-side
# checks compare the VMM's `VMM-STATS` lines at L2's marks with what L2
# saw. See linux-guest.sh and tests/vfio-vm/README.md.
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
echo "1 4 1 7" > /proc/sys/kernel/printk
. /etc/linux-guest.conf
for m in $(cat /etc/modules); do
    params=""; case "$m" in */kvm-amd.ko) params=$kvm_amd_params ;; esac
    # shellcheck disable=SC2086 # the parameters are words
    insmod "$m" $params || echo "L1: insmod $m failed"
done
pass=0; fail=0
ok() { echo "PASS $*"; pass=$((pass + 1)); }
bad() { echo "FAIL $*"; fail=$((fail + 1)); }
[ -c /dev/kvm ] && ok "l1_kvm" || bad "l1_kvm: /dev/kvm missing"

# A VMM statistic at L2's mark $1: stat MARK KEY (the VMM's stderr).
stat() { grep "^VMM-STATS mark=$1 " /tmp/vmm.err | head -1 | sed -n "s/.* $2=\([^ ]*\).*/\1/p"; }
info() { grep "^L2-INFO $1=" /tmp/vmm.out | tail -1 | sed "s/^L2-INFO $1=//"; }

# The VMM run's watchdog: watchdog PID SECONDS LABEL. Past SECONDS it
# prints what the VMM's threads are doing (kernel stacks, and one second of
# KVM's trace: whether the vCPUs still enter and exit L2) and kills it.
watchdog() {
    local i=0 t tdir
    while kill -0 "$1" 2>/dev/null; do
        if [ $i -ge "$2" ]; then
            echo "L1: $3: VMM run over $2 s: its threads, and 1 s of KVM's trace:"
            for t in /proc/$1/task/*; do
                echo "L1-STACK $(cat $t/comm) tid=${t##*/} wchan=$(cat $t/wchan) syscall=$(cat $t/syscall)"
                cat $t/stack
            done
            tdir=/sys/kernel/tracing
            [ -d $tdir/events ] || mount -t tracefs tracefs $tdir
            echo > $tdir/trace; echo 1 > $tdir/events/kvm/enable; sleep 1; echo 0 > $tdir/events/kvm/enable
            echo "L1-TRACE KVM events in 1 s, by kind:"
            awk '!/^#/ {n[$5]++} END {for (k in n) print "L1-TRACE", n[k], k}' $tdir/trace
            # L1 and L2 run the same kernel, both with nokaslr: L1's
            # kallsyms names L2's instruction pointers (fixed-width hex
            # compares as strings).
            echo "L1-TRACE exits by reason and L2's rip:"
            awk '/kvm_exit:/ {for (i = 1; i < NF; i++) if ($i == "reason") r = $(i + 1); else if ($i == "rip") n[r " " $(i + 1)]++}
                 END {for (k in n) if (n[k] > 4) print n[k], k}' $tdir/trace > /tmp/rips
            # Only the symbols in the same 64 KiB as a rip: a whole-kallsyms
            # scan costs L1 tens of seconds, which starves L2.
            awk '{print substr($3, 3, 12)}' /tmp/rips > /tmp/prefixes
            grep -F -f /tmp/prefixes /proc/kallsyms > /tmp/kallsyms
            awk 'FNR == NR {sub("^0x", "", $3); rip[FNR] = $3; line[FNR] = $0; n = FNR; next}
                 $2 ~ /^[tT]$/ {for (i = 1; i <= n; i++) if ($1 <= rip[i] && $1 > best[i]) {best[i] = $1; sym[i] = $3}}
                 END {for (i = 1; i <= n; i++) print "L1-TRACE", line[i], sym[i]}' /tmp/rips /tmp/kallsyms
            echo "L1-TRACE the last 30 other than halts and wake-ups:"
            grep -v '^#' $tdir/trace | grep -vE 'kvm_(vcpu_wakeup|halt_poll_ns|pv_tlb_flush|hv_timer_state)' | tail -30
            kill "$1"; sleep 5; kill -9 "$1" 2>/dev/null
            return
        fi
        sleep 1; i=$((i + 1))
    done
}

# One VMM run: vmm_run LABEL "VMM OPTIONS" "L2 PARAMETERS".
vmm_run() {
    label=$1
    t0=$(awk '{print $1}' /proc/uptime)
    # stdout: L2's console (its lines end in CR LF); stderr: the VMM's own.
    # L2's own lines are shown as they come, with L1's uptime, so a run
    # that stalls shows where.
    {
        /bin/reference-vmm --kernel /l2/vmlinuz --initrd /l2/initrd --cpus $l2_cpus --memory 256 \
            --cmdline "console=ttyS0 quiet panic=-1 nokaslr $3" $2 2> /tmp/vmm.err &
        vmm=$!
        watchdog $vmm "$vmm_timeout" "$label" > /dev/console 2>&1 &
        wd=$!
        wait $vmm; echo $? > /tmp/vmm.rc
        kill $wd 2>/dev/null
    } |
        tr -d '\r' | tee /tmp/vmm.out | while read -r l; do
            case "$l" in L2*) read -r up _ < /proc/uptime; echo "L1: $up $label: $l" ;; esac
        done
    rc=$(cat /tmp/vmm.rc)
    echo "L1: $label: VMM exit $rc after $(awk -v t0=$t0 '{printf "%.1f", $1 - t0}' /proc/uptime) s"
    grep -E '^VMM-(STATS final|EVENT)' /tmp/vmm.err
    if [ $rc -eq 0 ] && grep -q '^VMM-EXIT guest reset (i8042)' /tmp/vmm.err && grep -q '^L2-DONE' /tmp/vmm.out; then
        ok "$label: vmm_ran_l2_to_its_reset"
    else
        echo "L1: $label: the last lines of L2's console and the VMM:"
        tail -25 /tmp/vmm.out; grep '^VMM-UART' /tmp/vmm.err | tail -3; tail -5 /tmp/vmm.err
        bad "$label: vmm_ran_l2_to_its_reset (VMM exit $rc)"
    fi
    grep '^L2-PASS ' /tmp/vmm.out | sed "s/^L2-PASS /$label: /" | while read -r l; do echo "PASS $l"; done
    p=$(grep -c '^L2-PASS ' /tmp/vmm.out); f=$(grep -c '^L2-FAIL ' /tmp/vmm.out)
    grep '^L2-FAIL ' /tmp/vmm.out | sed "s/^L2-FAIL /FAIL $label: /"
    pass=$((pass + p)); fail=$((fail + f))
    [ $f -gt 0 ] && { echo "L1: $label: L2's last console lines:"; grep -v '^VMM-' /tmp/vmm.out | tail -15; }
    return 0
}

# Checks on the VMM's statistics at L2's marks: vmm_checks LABEL COST, where
# COST is the policy's exits per Linux mask cycle (fast 1, strict 2, trap 3),
# or `auto` for the VMM's default policy: the cost of the mechanism it chose
# (the `policy` in force at marks 2 and 3, which must agree), and its
# PolicyChosen events are the only accelerator events allowed.
vmm_checks() {
    label=$1; cost=$2; chosen=""
    if [ "$cost" = auto ]; then
        p2=$(stat 2 policy); chosen=$(stat 3 policy)
        case "$chosen" in fast) cost=1 ;; strict) cost=2 ;; *) cost=0 ;; esac
        [ "$cost" -gt 0 ] && [ "$p2" = "$chosen" ] && ok "$label: auto_chose_an_exact_mechanism: $chosen" ||
            bad "$label: auto_chose_an_exact_mechanism: in force at mark 2 '$p2', at mark 3 '$chosen'"
    fi
    v=$(info vectors); h=$(stat 1 host_irqs)
    [ -n "$v" ] && [ "${h%/*}" = "$v" ] && ok "$label: host_irqs_only_for_vectors_in_use: $h host IRQs for $v guest vectors" ||
        bad "$label: host_irqs_only_for_vectors_in_use: host $h, guest $v"
    moves=$(info moves)
    if [ -n "$moves" ]; then
        d() { echo $(( $(stat 3 $1) - $(stat 2 $1) )); }
        if [ -n "$(stat 2 exits)" ] && [ -n "$(stat 3 exits)" ] && [ "$moves" -gt 0 ]; then
            exits=$(d exits); msg=$(d message_write); mask=$(d mask_write)
            unmask=$(d unmask_write); reads=$(d table_read)
            # A move is Linux's mask cycle (mask write, flush read, unmask
            # write) around one or two message updates (3 dword writes and
            # a read-back each: x86 first points the vector at its new
            # number on the old CPU when both change). A move the vector
            # code defers (old vector not yet cleaned up) costs one more
            # cycle at the next interrupt, so cycles are counted by their
            # mask writes. Message writes exit under every policy, the
            # read-backs under trap only; a cycle costs the policy's
            # documented 1, 2 or 3 exits.
            readbacks=0; [ "$cost" -eq 3 ] && readbacks=$((msg / 3))
            cycle=$((exits - msg - readbacks))
            per() { awk -v e=$1 -v m=$2 'BEGIN {printf "%.2f", e / m}'; }
            echo "L1: $label: $moves affinity moves: $exits exits ($(per $exits $moves) per move: $mask mask cycles, flush and read-back reads $reads, message writes $msg, unmask writes $unmask) in $(info move_time_s) s guest time, slowest ping $(info max_ping_ms) ms"
            echo "TIMING $label: moves=$moves exits_per_move=$(per $exits $moves) cycles=$mask exits_per_cycle=$(per $cycle $mask) guest_time_s=$(info move_time_s) pings_over_1s=$(info pings_over_1s)"
            [ $mask -ge $moves ] && [ $cycle -eq $((mask * cost)) ] && [ $((msg % 3)) -eq 0 ] && [ $msg -ge $((3 * moves)) ] &&
                ok "$label: exits_per_linux_cycle: $cycle exits for $mask mask cycles (= $cost each) in $moves moves, plus $msg message writes" ||
                bad "$label: exits_per_linux_cycle: $cycle exits for $mask mask cycles in $moves moves, want $cost each; $msg message writes"
        else
            bad "$label: exits_per_affinity_move: no statistics at marks 2 and 3"
        fi
    fi
    h4=$(stat 4 host_irqs)
    if [ -n "$h4" ]; then
        [ "${h4%/*}" = 0 ] && ok "$label: no_host_irq_after_unbind: $h4" || bad "$label: no_host_irq_after_unbind: $h4"
        h5=$(stat 5 host_irqs); v5=$(info vectors_after_rebind)
        [ -n "$v5" ] && [ -n "$h5" ] && [ "${h5%/*}" = "$v5" ] && ok "$label: host_irqs_after_rebind: $h5 for $v5 guest vectors" ||
            bad "$label: host_irqs_after_rebind: host $h5, guest $v5"
    fi
    # Events before the exit line (teardown's own come after it).
    ev=$(sed '/^VMM-EXIT/q' /tmp/vmm.err | grep -c '^VMM-EVENT')
    if [ "$3" = hostile ]; then
        named=$(sed '/^VMM-EXIT/q' /tmp/vmm.err | grep -cE '^VMM-EVENT device 0 vector [5-9]: RouteRejected')
        others=$(sed '/^VMM-EXIT/q' /tmp/vmm.err | grep '^VMM-EVENT' | grep -cvE '^VMM-EVENT device 0 vector [5-9]:')
        [ "$named" -gt 0 ] && [ "$others" -eq 0 ] &&
            ok "$label: events_name_the_garbage_vectors: $named RouteRejected on vectors 5-9, none elsewhere" ||
            bad "$label: events_name_the_garbage_vectors: $named on vectors 5-9, $others other events"
    elif [ -n "$chosen" ]; then
        choices=$(sed '/^VMM-EXIT/q' /tmp/vmm.err | grep -cE '^VMM-EVENT device [0-9]+: PolicyChosen: auto chose (fast|strict):')
        [ "$choices" -gt 0 ] && [ "$ev" -eq "$choices" ] &&
            ok "$label: no_accelerator_events_but_the_choice: $choices PolicyChosen" ||
            bad "$label: no_accelerator_events_but_the_choice: $ev events, $choices PolicyChosen"
    else
        [ "$ev" -eq 0 ] && ok "$label: no_accelerator_events" || bad "$label: no_accelerator_events: $ev"
    fi
}

if [ "$mode" = boot ]; then
    vmm_run boot "" "lg.boot=1 lg.cpus=$l2_cpus"
fi
if [ "$mode" = full ]; then
    igb=""; e1000e=""
    for dev in /sys/bus/pci/devices/*; do
        case "$(cat $dev/vendor):$(cat $dev/device)" in
            0x8086:0x10c9) igb=$(basename $dev) ;;
            0x8086:0x10d3) e1000e=$(basename $dev) ;;
        esac
    done
    bind_vfio() {
        echo vfio-pci > /sys/bus/pci/devices/$1/driver_override
        [ -e /sys/bus/pci/devices/$1/driver ] && echo $1 > /sys/bus/pci/devices/$1/driver/unbind
        echo $1 > /sys/bus/pci/drivers_probe
    }
    # peer IFACE: brings L1's interface up and prints its link-local
    # address (bounded wait), which L2 pings (lg.peer).
    peer() {
        local i=0 a
        echo 0 > /proc/sys/net/ipv6/conf/$1/accept_dad
        ip link set $1 up
        while [ $i -lt 100 ]; do
            a=$(ip -6 addr show dev $1 scope link | awk '/inet6/ {sub("/.*", "", $2); print $2}')
            [ -n "$a" ] && { echo "$a"; return; }
            sleep 0.1; i=$((i + 1))
        done
    }
    bind_vfio $igb
    # L1's e1000e stays with its Linux driver: L2's pings go to it.
    peer_ip=$(peer $(basename /sys/bus/pci/devices/$e1000e/net/*))
    echo "L1: the peer of L2's igb is $peer_ip"
    # The first run (fast, source masking on: named on the command line,
    # since its checks depend on it) with everything, then each run of
    # policy_runs (POLICY:SOURCE_MASKING; by default every other policy with
    # and without source masking), the hostile guest in trap:off.
    vmm_run "igb default" "--device $igb --policy fast --source-masking on" "lg.peer=$peer_ip lg.moves=$rounds lg.rebind=$rebinds lg.ethtool=1"
    vmm_checks "igb default" 1
    for p in $policy_runs; do
        policy=${p%%:*}; sm=${p##*:}
        case "$policy" in fast) cost=1 ;; strict) cost=2 ;; trap) cost=3 ;; *) cost=$policy ;; esac
        label="igb $policy sm=$sm"
        if [ "$p" = trap:off ]; then
            vmm_run "$label" "--device $igb --policy $policy --source-masking $sm" "lg.peer=$peer_ip lg.moves=$rounds_other lg.hostile=1 iomem=relaxed"
            vmm_checks "$label" $cost hostile
        else
            vmm_run "$label" "--device $igb --policy $policy --source-masking $sm" "lg.peer=$peer_ip lg.moves=$rounds_other"
            vmm_checks "$label" $cost
        fi
    done
    # e1000e assigned; L1's igb, back on its Linux driver, answers the pings.
    # (e1000e's ethtool interrupt test switches the NIC to INTx, which this
    # VMM does not provide.)
    echo $igb > /sys/bus/pci/drivers/vfio-pci/unbind
    bind_vfio $e1000e
    echo > /sys/bus/pci/devices/$igb/driver_override
    echo $igb > /sys/bus/pci/drivers_probe
    i=0; while [ ! -e /sys/bus/pci/devices/$igb/net ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
    peer_ip=$(peer $(basename /sys/bus/pci/devices/$igb/net/*))
    echo "L1: the peer of L2's e1000e is $peer_ip"
    vmm_run "e1000e default" "--device $e1000e --policy fast --source-masking on" "lg.peer=$peer_ip lg.moves=$rounds_other lg.rebind=2"
    vmm_checks "e1000e default" 1
fi
echo "linux-guest: $pass passed, $fail failed"
poweroff -f
