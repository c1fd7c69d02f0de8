"""A real systemd host for the live tests, on a machine whose PID 1 is not systemd.

`Box.start()` boots the installed systemd as PID 1 of new pid, mount, UTS, IPC and cgroup
namespaces (`boot.sh` builds its root): `/` is an overlay of the host's `/` under a tmpfs,
so nothing the box installs reaches the host; host services (PostgreSQL, brokers ...) and
all generators are masked, so the box starts nothing but what a test asks for. The
network namespace is the host's: 127.0.0.1 is the same on both sides. The repository
is bind-mounted at its own path. `run()` executes a command inside, `stop()` powers the
box off (SIGKILL past a deadline) and removes its cgroups and mount points.

Containment of accidents, not a security boundary: the box is root, without a few
capabilities (modules, clock, raw I/O, network administration).
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

SYSTEMD = Path("/lib/systemd/systemd")
BOOT = Path(__file__).with_name("boot.sh")
TOOLS = ("unshare", "nsenter", "setpriv", "pivot_root", "mount", "umount", "hostname")
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
CAP_SYS_ADMIN = 21
DROP_CAPS = (
    "-sys_module,-sys_time,-sys_rawio,-net_admin,-syslog,-mac_admin,-mac_override,"
    "-audit_control,-wake_alarm,-block_suspend"
)
# Units the box must never start, even through a dependency: the host's databases, brokers
# and monitoring (they already run on the host and share its network), networking, time,
# hardware and periodic jobs.
MASKS = (
    "postgresql* pg_* mariadb* mysql* redis* rabbitmq* mosquitto* nats* epmd* memcached* mongod* "
    "prometheus* grafana* elasticsearch* docker* containerd* podman* ssh* cron* anacron* "
    "networking.service systemd-networkd* NetworkManager* wpa_supplicant* ifup* ifupdown* "
    "systemd-resolved.service systemd-timesyncd.service ntp* chrony* systemd-udev* "
    "systemd-modules-load.service systemd-sysctl.service systemd-binfmt.service proc-sys-fs-binfmt_misc.* "
    "systemd-remount-fs.service systemd-fsck* systemd-pstore.service systemd-hwdb-update.service "
    "systemd-journald-audit.socket sys-kernel-*.mount sys-fs-fuse-connections.mount dev-hugepages.mount "
    "getty@* serial-getty@* console-getty* container-getty@* apt-daily* dpkg-db-backup* fstrim* "
    "e2scrub* logrotate* man-db* unattended-upgrades*"
)
# What refusal() tries in new namespaces: an overlay over / with a tmpfs upper layer, thrown away.
PROBE = """d=$(mktemp -d) && mount -t tmpfs probe "$d" && mkdir "$d/u" "$d/w" "$d/m" &&
mount -t overlay -o "lowerdir=/,upperdir=$d/u,workdir=$d/w" probe "$d/m" && test -x "$d/m$1"
r=$?; umount -R "$d" 2>/dev/null; rmdir "$d"; exit $r"""


class BoxRefused(Exception):
    """This kernel or container cannot run a box; the message is one line saying why."""


class BoxError(RuntimeError):
    """The box failed to boot or to stop."""


@dataclass(frozen=True)
class Hierarchy:
    """One cgroup hierarchy the box gets: where it is mounted, how, and our cgroup in it."""

    mountpoint: str
    type: str  # "cgroup" (v1) or "cgroup2"
    options: str  # v1: its controllers as /proc/self/cgroup names them ("memory", "name=systemd")
    current: Path  # the cgroup this process is in, as a host directory


def cgroup_hierarchies() -> list[Hierarchy]:
    """The hierarchies mounted under /sys/fs/cgroup, v1 and v2 (not cpuset: systemd does
    not use it on v1, and a new cpuset cgroup needs cpus and mems set first)."""
    mounts = []  # (fstype, superblock options, root inside the hierarchy, mount point)
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        before, _, after = line.partition(" - ")
        fields, tail = before.split(), after.split()
        if len(tail) >= 3 and tail[0] in ("cgroup", "cgroup2") and fields[4].startswith("/sys/fs/cgroup"):
            mounts.append((tail[0], set(tail[2].split(",")), fields[3], fields[4]))
    found = []
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if "cpuset" in controllers.split(","):
            continue
        for fstype, options, root, mountpoint in mounts:
            v2 = fstype == "cgroup2"
            if (not controllers) == v2 and (v2 or set(controllers.split(",")) <= options):
                inside = path[len(root) :] if root != "/" and path.startswith(root) else path
                found.append(Hierarchy(mountpoint, fstype, controllers or "-", Path(mountpoint + inside.rstrip("/"))))
                break
    return found


def refusal(systemd: Path = SYSTEMD) -> str | None:
    """Why a box cannot start here (one line), or None when it can."""
    if os.geteuid() != 0:
        return f"needs root (running as uid {os.geteuid()})"
    caps = re.search(r"^CapEff:\s*([0-9a-f]+)$", Path("/proc/self/status").read_text(), re.MULTILINE)
    if caps is None or not int(caps.group(1), 16) >> CAP_SYS_ADMIN & 1:
        return "needs CAP_SYS_ADMIN (this container dropped it)"
    for tool in TOOLS:
        if shutil.which(tool) is None:
            return f"{tool} not found (install util-linux)"
    if not os.access(systemd, os.X_OK):
        return f"{systemd} not found (install systemd)"
    hierarchies = cgroup_hierarchies()
    if not hierarchies:
        return "no usable cgroup hierarchy under /sys/fs/cgroup"
    for hierarchy in hierarchies:
        if not os.access(hierarchy.current, os.W_OK):
            return f"cannot create cgroups in {hierarchy.current} (read-only or not ours)"
    try:
        probe = subprocess.run(
            [
                "unshare",
                "--pid",
                "--fork",
                "--mount",
                "--uts",
                "--ipc",
                "--cgroup",
                "--propagation",
                "private",
                "sh",
                "-c",
                PROBE,
                "probe",
                str(systemd),
            ],
            capture_output=True,
            text=True,
            timeout=20,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return "probing namespaces and overlayfs timed out"
    if probe.returncode != 0:
        why = (probe.stderr.strip().splitlines() or ["no message"])[0].strip()
        return f"the kernel or container refuses new namespaces or an overlay over /: {why}"
    return None


def _remove_tree(path: Path) -> bool:
    """rmdir a tree of empty directories (cgroups, mount points), deepest first; False if
    something is still in use."""
    try:
        for parent, _dirs, _files in sorted(os.walk(path), key=lambda w: -len(w[0])):
            os.rmdir(parent)
    except OSError:
        return not path.exists()
    return True


def sweep_stale() -> None:
    """Remove the empty cgroups and mount points of boxes whose test process was killed before
    it could stop them (their systemd died with it: the launcher has --pdeathsig)."""
    for state in Path("/run").glob("emag-live-*-*"):
        owner = state.name.split("-")[2]
        if owner.isdigit() and not Path(f"/proc/{owner}").exists():
            for hierarchy in cgroup_hierarchies():
                _remove_tree(hierarchy.current / state.name)
            _remove_tree(state)


def _child_of(parent: int) -> int | None:
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == parent:
                return int(entry.name)
    return None


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


class Box:
    """One throwaway systemd host. Names are unique per process and call, so parallel
    test runs never share state directories or cgroups."""

    def __init__(self, binds: Iterable[Path], log_dir: Path, masks: str = MASKS) -> None:
        self.name = f"emag-live-{os.getpid()}-{secrets.token_hex(3)}"
        self.binds = tuple(str(Path(b).resolve()) for b in binds)
        self.masks = masks
        self.state = Path("/run") / self.name
        self.console = log_dir / f"{self.name}.console.log"
        self.pid: int | None = None  # the box's systemd, as the host sees it
        self._launcher: subprocess.Popen[bytes] | None = None
        self._cgroups: list[Path] = []

    # --- lifecycle ------------------------------------------------------------------

    def start(self, timeout_s: float = 60) -> float:
        """Boot until `systemctl is-system-running` says running (or degraded); returns the
        seconds it took. Raises BoxRefused when this machine cannot run a box at all."""
        reason = refusal()
        if reason:
            raise BoxRefused(reason)
        sweep_stale()
        began = time.monotonic()
        deadline = began + timeout_s
        hierarchies = cgroup_hierarchies()
        for sub in ("root", "rw"):
            (self.state / sub).mkdir(parents=True)
        for hierarchy in hierarchies:
            cgroup = hierarchy.current / self.name
            cgroup.mkdir()
            self._cgroups.append(cgroup)
        env = {
            "PATH": PATH,
            "LANG": "C.UTF-8",
            "BOX_NAME": self.name,
            "BOX_STATE": str(self.state),
            "BOX_CGROUP_PROCS": " ".join(str(c / "cgroup.procs") for c in self._cgroups),
            "BOX_CGROUP_MOUNTS": "\n".join(f"{h.mountpoint} {h.type} {h.options}" for h in hierarchies),
            "BOX_BINDS": " ".join(self.binds),
            "BOX_MASKS": self.masks,
            "BOX_SYSTEMD": str(SYSTEMD),
            "BOX_DROP_CAPS": DROP_CAPS,
        }
        try:
            with open(self.console, "wb") as console:
                # --pdeathsig: should this process die without stop(), so does the box.
                self._launcher = subprocess.Popen(
                    ["setpriv", "--pdeathsig", "KILL", "--", "bash", str(BOOT), "launch"],
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=console,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            self.pid = self._wait_for_pid1(deadline)
            # The launcher goes back where it came from: the box's cgroups hold only the box.
            for hierarchy in hierarchies:
                (hierarchy.current / "cgroup.procs").write_text(str(self._launcher.pid))
            self._wait_until_running(deadline)
        except BaseException:
            self.stop()
            raise
        return time.monotonic() - began

    def _wait_for_pid1(self, deadline: float) -> int:
        assert self._launcher is not None
        while time.monotonic() < deadline:
            if self._launcher.poll() is not None:
                raise BoxError(f"the box's launcher exited with {self._launcher.returncode}\n{self.console_tail()}")
            unshare = self._launcher.pid if _comm(self._launcher.pid) == "unshare" else None
            child = _child_of(unshare) if unshare else None
            if child and _comm(child) == "systemd":
                return child
            time.sleep(0.05)
        raise BoxError(f"systemd did not become PID 1 of the box\n{self.console_tail()}")

    def _wait_until_running(self, deadline: float) -> None:
        state = ""
        while time.monotonic() < deadline:
            state = self.run("systemctl", "is-system-running", timeout=10).stdout.strip()
            if state in ("running", "degraded"):
                return
            if state in ("maintenance", "stopping", "offline") or self.pid is None or _comm(self.pid) != "systemd":
                break
            time.sleep(0.1)
        raise BoxError(f"the box did not boot (system state {state or 'unknown'!r})\n{self.console_tail()}")

    def stop(self, timeout_s: float = 30) -> None:
        """Power off (what `systemctl poweroff` sends PID 1), SIGKILL past `timeout_s`, then
        remove the cgroups and mount points. Every mount lived in the box's namespace only."""
        launcher = self._launcher
        if launcher is not None and launcher.poll() is None:
            if self.pid is not None and _comm(self.pid) == "systemd":
                os.kill(self.pid, signal.SIGRTMIN + 4)
            try:
                launcher.wait(timeout_s)
            except subprocess.TimeoutExpired:
                # unshare --kill-child: its death takes PID 1, and with it the whole box
                launcher.kill()
                launcher.wait(10)
        self.pid = None
        deadline = time.monotonic() + 10  # the last processes may take a moment to be reaped
        for cgroup in self._cgroups:
            while not _remove_tree(cgroup):
                if time.monotonic() > deadline:
                    raise BoxError(f"cannot remove the box's cgroup {cgroup}: processes left in it")
                time.sleep(0.1)
        self._cgroups.clear()
        _remove_tree(self.state)

    # --- inside ---------------------------------------------------------------------

    def run(
        self,
        *argv: str,
        timeout: float = 60,
        input: str | None = None,
        env: Mapping[str, str] | None = None,
        check: bool = False,
    ) -> subprocess.CompletedProcess[str]:
        """Run a command as root inside the box (a clean environment plus `env`). Past
        `timeout` the command is killed and subprocess.TimeoutExpired raised."""
        if self.pid is None:
            raise BoxError("the box is not running")
        variables = {
            "PATH": PATH,
            "HOME": "/root",
            "USER": "root",
            "LOGNAME": "root",
            "LANG": "C.UTF-8",
            "TERM": "dumb",
            "SYSTEMD_PAGER": "",
            "SYSTEMD_COLORS": "0",
            **(env or {}),
        }
        command = [
            "nsenter",
            "--target",
            str(self.pid),
            "--mount",
            "--uts",
            "--ipc",
            "--pid",
            "--cgroup",
            "--root",
            "--wd",
            "--",
            "env",
            "-i",
            *(f"{k}={v}" for k, v in variables.items()),
            *argv,
        ]
        proc = subprocess.Popen(
            command,
            stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        try:
            out, err = proc.communicate(input, timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # nsenter and the command it forked
            out, err = proc.communicate()
            raise subprocess.TimeoutExpired(list(argv), timeout, out, err) from None
        result = subprocess.CompletedProcess(list(argv), proc.returncode, out, err)
        if check:
            result.check_returncode()
        return result

    def console_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.console.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""
