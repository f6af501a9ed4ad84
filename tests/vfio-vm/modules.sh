# Sourced by run.sh and linux-guest.sh: packs kernel modules into an
# initramfs tree.
#
# pack_modules KDIR KVER DEST NAME...: copies each module NAME and its
# dependencies from KDIR/lib/modules/KVER (the unpacked kernel package,
# modules.dep present) into DEST/lib/modules/KVER, decompressed, in load
# order (each after its dependencies); lists their paths in that order in
# DEST/etc/modules and runs depmod on DEST.
pack_modules() {
    local kdir=$1 kver=$2 dest=$3 path dst
    shift 3
    _pm_order=()
    for m in "$@"; do _pm_add "$kdir/lib/modules/$kver/modules.dep" "$m"; done
    mkdir -p "$dest/etc" "$dest/lib/modules/$kver"
    : >"$dest/etc/modules"
    for path in "${_pm_order[@]}"; do
        dst="$dest/lib/modules/$kver/${path%.xz}"
        mkdir -p "$(dirname "$dst")"
        case "$path" in
            *.xz) xz -dc "$kdir/lib/modules/$kver/$path" >"$dst" ;;
            *) cp "$kdir/lib/modules/$kver/$path" "$dst" ;;
        esac
        echo "/lib/modules/$kver/${path%.xz}" >>"$dest/etc/modules"
    done
    cp "$kdir/lib/modules/$kver"/modules.{order,builtin,builtin.modinfo} "$dest/lib/modules/$kver/" 2>/dev/null || true
    depmod -b "$dest" "$kver"
}

# Appends module $2 (after its dependencies, each once) to _pm_order.
_pm_add() {
    local dep=$1 name=$2 line path deps d i
    line=$(grep -E "(^|/)${name}\.ko(\.xz|\.zst|\.gz)?:" "$dep" | head -1) || {
        echo "kernel module $name not found ($dep)" >&2
        return 1
    }
    path=${line%%:*}
    read -r -a deps <<<"${line#*:}"
    for (( i=${#deps[@]}-1; i>=0; i-- )); do
        d=${deps[$i]}; d=${d##*/}; _pm_add "$dep" "${d%%.ko*}"
    done
    for d in "${_pm_order[@]:-}"; do [ "$d" = "$path" ] && return 0; done
    _pm_order+=("$path")
}
