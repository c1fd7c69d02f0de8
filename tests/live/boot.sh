#!/usr/bin/env bash
# The two stages of booting a throwaway systemd host for the live tests; tests/live/box.py
# drives this script and owns everything around it (checks, waiting, exec, stop, cleanup).
#
#   boot.sh launch   joins the box's cgroups (BOX_CGROUP_PROCS), then becomes `unshare`,
#                    whose forked child is PID 1 of new pid/mount/uts/ipc/cgroup namespaces
#   boot.sh init     (that child) builds the box's root and execs systemd as PID 1
#
# Environment, set by box.py:
#   BOX_NAME           instance name: hostname and target name
#   BOX_STATE          host directory holding the mount points root/ and rw/
#   BOX_CGROUP_PROCS   cgroup.procs files of the box's cgroups, one per hierarchy (launch)
#   BOX_CGROUP_MOUNTS  "MOUNTPOINT TYPE OPTIONS" lines: the hierarchies to mount inside
#   BOX_BINDS          host directories bind-mounted at the same path inside, space separated
#   BOX_MASKS          unit file globs masked inside (host services the box must never start)
#   BOX_SYSTEMD        the systemd binary
#   BOX_DROP_CAPS      setpriv --bounding-set list for systemd and everything it starts
set -euo pipefail

launch() {
    local procs
    for procs in $BOX_CGROUP_PROCS; do echo "$$" >"$procs"; done
    # The cgroup namespace is rooted where we are now: in the box's own cgroups.
    # --kill-child: should the launcher die, PID 1 and with it the whole box die too.
    exec unshare --pid --fork --kill-child --mount --uts --ipc --cgroup --propagation private -- "$0" init
}

init() {
    local R="$BOX_STATE/root" RW="$BOX_STATE/rw" mp type opts sub n
    set -x
    # Root: an overlay of the host's / (read only to the box) under a tmpfs that dies with it.
    mount -t tmpfs -o mode=0755,size=2G "$BOX_NAME-rw" "$RW"
    mkdir -p "$RW/upper" "$RW/work"
    mount -t overlay -o "lowerdir=/,upperdir=$RW/upper,workdir=$RW/work" "$BOX_NAME" "$R"

    # API file systems; the host's kernel knobs stay read-only.
    mount -t proc -o nosuid,nodev,noexec proc "$R/proc"
    for sub in sys sysrq-trigger; do
        [ -e "$R/proc/$sub" ] || continue
        mount --bind "$R/proc/$sub" "$R/proc/$sub"
        mount -o remount,bind,ro,nosuid,nodev,noexec "$R/proc/$sub"
    done
    mount -t sysfs -o ro,nosuid,nodev,noexec sysfs "$R/sys"
    mount -t tmpfs -o nosuid,nodev,noexec,mode=0755 cgroup "$R/sys/fs/cgroup"
    # Fresh cgroup mounts: in the cgroup namespace their root is the box's own cgroup.
    while read -r mp type opts; do
        sub="${mp#/sys/fs/cgroup}"
        if [ "$type" = cgroup2 ] && [ -z "$sub" ]; then
            umount "$R/sys/fs/cgroup"
            mount -t cgroup2 -o nosuid,nodev,noexec cgroup2 "$R/sys/fs/cgroup"
        elif [ "$type" = cgroup2 ]; then
            mkdir -p "$R/sys/fs/cgroup$sub"
            mount -t cgroup2 -o nosuid,nodev,noexec cgroup2 "$R/sys/fs/cgroup$sub"
        else
            mkdir -p "$R/sys/fs/cgroup$sub"
            mount -t cgroup -o "nosuid,nodev,noexec,$opts" cgroup "$R/sys/fs/cgroup$sub"
            # a co-mounted hierarchy (cpu,cpuacct) is also reachable by each controller's name
            case "$opts" in *,*)
                for n in ${opts//,/ }; do [ -e "$R/sys/fs/cgroup/$n" ] || ln -s "${sub#/}" "$R/sys/fs/cgroup/$n"; done ;;
            esac
        fi
    done <<<"$BOX_CGROUP_MOUNTS"

    # /dev: a private tmpfs with harmless nodes only.
    mount -t tmpfs -o nosuid,mode=0755,size=8M "$BOX_NAME-dev" "$R/dev"
    for n in null zero full random urandom tty; do
        touch "$R/dev/$n"
        mount --bind "/dev/$n" "$R/dev/$n"
    done
    touch "$R/dev/console"
    mount --bind /dev/null "$R/dev/console"
    mkdir -p "$R/dev/pts" "$R/dev/shm"
    mount -t devpts -o newinstance,ptmxmode=0666,mode=0620 devpts "$R/dev/pts"
    ln -s pts/ptmx "$R/dev/ptmx"
    mount -t tmpfs -o nosuid,nodev,mode=1777 shm "$R/dev/shm"
    ln -s /proc/self/fd "$R/dev/fd"
    for n in 0:stdin 1:stdout 2:stderr; do ln -s "/proc/self/fd/${n%:*}" "$R/dev/${n#*:}"; done
    mount -t tmpfs -o nosuid,nodev,mode=0755 run "$R/run"
    mkdir -p "$R/run/systemd"
    echo "$BOX_NAME" >"$R/run/systemd/container"
    # A private /tmp: the box's systemd-tmpfiles empties /tmp at boot, and the host's must
    # not even be looked at. Work trees come in as bind mounts (tmpfiles stops at mount points).
    mount -t tmpfs -o nosuid,nodev,mode=1777 tmp "$R/tmp"
    for n in $BOX_BINDS; do
        mkdir -p "$R$n"
        mount --rbind "$n" "$R$n"
    done

    # Units: boot $BOX_NAME.target (basic.target only); nothing the host enabled, no
    # generators (sysv scripts, postgresql clusters, fstab ...), host services masked.
    local etc="$R/etc/systemd/system" f
    rm -rf "$etc"/*.wants "$etc"/*.requires "$etc/default.target"
    mkdir -p "$etc" "$R/etc/systemd/system-generators"
    printf '[Unit]\nDescription=%s: basic system only\nRequires=basic.target\nAfter=basic.target\n' \
        "$BOX_NAME" >"$etc/$BOX_NAME.target"
    ln -s "$BOX_NAME.target" "$etc/default.target"
    shopt -s nullglob
    for f in /lib/systemd/system-generators/* /usr/lib/systemd/system-generators/* \
             /usr/local/lib/systemd/system-generators/* /etc/systemd/system-generators/*; do
        ln -sfn /dev/null "$R/etc/systemd/system-generators/${f##*/}"
    done
    set -f
    for n in $BOX_MASKS; do
        set +f
        for f in /lib/systemd/system/$n /usr/lib/systemd/system/$n /etc/systemd/system/$n; do
            case "$f" in *.service|*.socket|*.timer|*.path|*.mount|*.target) ;; *) continue ;; esac
            rm -rf "${etc:?}/${f##*/}"
            ln -s /dev/null "$etc/${f##*/}"
        done
        set -f
    done
    set +f
    : >"$R/etc/fstab"
    echo "$BOX_NAME" >"$R/etc/hostname"
    hostname "$BOX_NAME"

    # Switch root and drop the host's tree from this mount namespace.
    mkdir -p "$R/run/.oldroot"
    cd "$R"
    pivot_root . run/.oldroot
    cd /
    umount -l /run/.oldroot
    rmdir /run/.oldroot
    # systemd leaves mount propagation alone in a container and relies on / being shared;
    # without this every LoadCredential= directory (and PrivateTmp=) comes out empty.
    # The peer groups are new: nothing propagates to or from the host.
    mount --make-rshared /
    set +x
    exec env -i container="$BOX_NAME" PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        LANG=C.UTF-8 setpriv --bounding-set "$BOX_DROP_CAPS" -- \
        "$BOX_SYSTEMD" --system --unit="$BOX_NAME.target" --show-status=no
}

case "${1:-}" in
    launch) launch ;;
    init) init ;;
    *) echo "usage: $0 launch|init (run by tests/live/box.py)" >&2; exit 2 ;;
esac
