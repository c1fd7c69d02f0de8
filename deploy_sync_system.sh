#!/usr/bin/env bash
# deploy_sync_system.sh - install, upgrade, roll back or remove emag-sync under systemd
# (Debian/Ubuntu), or run the local demo against the sandbox marketplace.
set -euo pipefail

usage() {
    cat <<'EOF'
Usage: deploy_sync_system.sh [OPTIONS]

  --local            the demo on this machine: .venv, PostgreSQL, sandbox, migrate, one sync
  (no mode)          install or upgrade (idempotent): user, venv, /etc/emag-sync, units, start
  --rollback         point /opt/emag-sync/venv back at the previous venv and restart
  --uninstall        remove units and venvs; keep /etc/emag-sync and the database
  --purge            with --uninstall: also remove /etc/emag-sync (secrets), the user and its group;
                     the database is never dropped
  --dry-run          print every step ("+ command") and change nothing
  --root DIR         install under DIR (DIR/opt/emag-sync, DIR/etc/...); no useradd, chown,
                     systemctl, migrate or health check (staging trees, tests)
  --venv-from PATH   copy the venv at PATH instead of building one (tests; not relocated)
  -h, --help         this text

Environment:
  EMAG_SYNC_DEPLOY_PIP_ARGS    extra pip arguments, e.g. "--no-index --find-links /srv/wheels"
  EMAG_SYNC_HEALTH_URL         default: /healthz at the configuration's [monitor].listen
  EMAG_SYNC_HEALTH_TIMEOUT_S   default 30
  EMAG_SYNC_DEPLOY_HEALTH_CMD  replaces the systemctl/curl health probe (tests)
  DATABASE_URL                 --local: use this PostgreSQL instead of 127.0.0.1:5432
  PYTHON                       the interpreter for new venvs (default python3, >= 3.11)
EOF
}

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PROG="deploy_sync_system.sh"
SERVICE_USER="emag-sync"
UNITS=(emag-sync.service emag-sync-monitor.service)
PYTHON="${PYTHON:-python3}"
HEALTH_URL="${EMAG_SYNC_HEALTH_URL:-}"  # empty: from [monitor].listen (health_url)
HEALTH_TIMEOUT_S="${EMAG_SYNC_HEALTH_TIMEOUT_S:-30}"
HEALTH_CMD="${EMAG_SYNC_DEPLOY_HEALTH_CMD:-}"
read -r -a PIP_ARGS <<<"${EMAG_SYNC_DEPLOY_PIP_ARGS:-}"
# The tested set of every package (constraints.txt, refreshed by .ci/refresh-constraints):
# a deploy installs what the suite passed on, not whatever the index has that day.
PIP_ARGS+=(-c "$REPO/constraints.txt")

ROOT=""
DRY_RUN=0
MODE="install"
PURGE=0
VENV_FROM=""

say() { printf '==> %s\n' "$*"; }
warn() { printf '%s: warning: %s\n' "$PROG" "$*" >&2; }
die() { printf '%s: %s\n' "$PROG" "$*" >&2; exit 1; }

# Every step that changes the system goes through run: printed, and skipped under --dry-run.
run() {
    printf '+'; printf ' %q' "$@"; printf '\n'
    if [ "$DRY_RUN" -eq 0 ]; then "$@"; fi
}

while [ $# -gt 0 ]; do
    case "$1" in
        --local) MODE="local" ;;
        --uninstall) MODE="uninstall" ;;
        --rollback) MODE="rollback" ;;
        --purge) PURGE=1 ;;
        --dry-run) DRY_RUN=1 ;;
        --root) [ $# -ge 2 ] || die "--root needs a directory"; ROOT="$2"; shift ;;
        --venv-from) [ $# -ge 2 ] || die "--venv-from needs a path"; VENV_FROM="$2"; shift ;;
        -h|--help) usage; exit 0 ;;
        *) die "unknown option: $1 (see --help)" ;;
    esac
    shift
done
[ "$PURGE" -eq 0 ] || [ "$MODE" = "uninstall" ] || die "--purge only goes with --uninstall"
[ "$MODE" != "local" ] || [ "$DRY_RUN" -eq 0 ] || die "--local has no --dry-run; it only touches .venv and .local/"
if [ -n "$ROOT" ]; then
    case "$ROOT" in /*) ;; *) ROOT="$PWD/$ROOT" ;; esac
    ROOT="${ROOT%/}"
    [ -n "$ROOT" ] || die "--root / is the real system: leave --root out"
fi
[ -z "$VENV_FROM" ] || [ -x "$VENV_FROM/bin/emag-sync" ] || die "--venv-from $VENV_FROM: no bin/emag-sync there"

OPT="$ROOT/opt/emag-sync"
ETC="$ROOT/etc/emag-sync"
UNIT_DIR="$ROOT/etc/systemd/system"
BIN_DIR="$ROOT/usr/local/bin"
CONFIG="$ETC/emag-sync.toml"
# The real system: users, ownership, systemctl, migrate and the health check happen only here.
SYSTEM=0
[ -n "$ROOT" ] || SYSTEM=1

need_python() {
    command -v "$1" >/dev/null || die "$1 not found: install python3 (>= 3.11) and python3-venv"
    "$1" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
        || die "$1 is $("$1" -V 2>&1); emag-sync needs Python >= 3.11"
}

# The venv runs the interpreter it was made from, as the service user, under ProtectHome=yes:
# one in /root or /home (pyenv, conda, ~/.local) cannot work, whatever its permissions.
service_python_ok() {
    local real
    [ "$SYSTEM" -eq 1 ] || return 0  # a staging tree (--root) may be for another machine
    real="$(readlink -f "$(command -v "$PYTHON")")"
    case "$real" in
        /root/*|/home/*|/run/user/*)
            die "$PYTHON is $real, under a home directory: the units run with ProtectHome=yes, so the service
    user $SERVICE_USER could never start it. Choose a system interpreter, e.g.:
    sudo PYTHON=/usr/bin/python3 $0" ;;
    esac
    [ "$DRY_RUN" -eq 0 ] || return 0
    runuser -u "$SERVICE_USER" -- "$real" -c 'import venv' 2>/dev/null \
        || die "$PYTHON ($real) cannot be run by the service user $SERVICE_USER (permissions, or no venv module).
    Choose another interpreter, e.g.: sudo PYTHON=/usr/bin/python3 $0"
}

# ===================================================================== the local demo ===

# The programs the test suite drives that PyPI does not ship (shellcheck comes with the test
# extra): promtool and prometheus (alert rules, a real scrape), systemd (the live tests boot
# it), curl and Debian's python3 with venv (the installer inside those tests). Installed
# from Debian's packages when this runs as root, else named.
test_tools() {
    local need=()
    command -v promtool >/dev/null && command -v prometheus >/dev/null || need+=(prometheus)
    command -v systemd-analyze >/dev/null || need+=(systemd)
    command -v curl >/dev/null || need+=(curl)
    /usr/bin/python3 -c 'import ensurepip, venv' 2>/dev/null || need+=(python3-venv)
    [ "${#need[@]}" -gt 0 ] || return 0
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
        say "installing what the test suite drives, from Debian: ${need[*]}"
        export DEBIAN_FRONTEND=noninteractive
        run apt-get update -qq
        run apt-get install -y -qq --no-install-recommends "${need[@]}"
    else
        warn "the test suite needs ${need[*]}: sudo apt-get install ${need[*]} (tests that drive them fail until then)"
    fi
}

local_demo() {
    local venv="$REPO/.venv" state="$REPO/.local" stamp url db="emag_sync_demo" cluster rc=0
    need_python "$PYTHON"
    stamp="$venv/.emag-sync-installed"
    test_tools
    if [ ! -x "$venv/bin/emag-sync" ] || [ ! -e "$stamp" ] || [ "$REPO/pyproject.toml" -nt "$stamp" ] \
        || [ "$REPO/constraints.txt" -nt "$stamp" ]; then
        say "installing emag-sync into $venv (editable, with test extras)"
        [ -x "$venv/bin/python" ] || run "$PYTHON" -m venv "$venv"
        run "$venv/bin/pip" install -q --disable-pip-version-check "${PIP_ARGS[@]}" -e "${REPO}[test]"
        run touch "$stamp"
    else
        say "$venv is up to date"
    fi
    mkdir -p "$state"

    if [ -n "${DATABASE_URL:-}" ]; then
        url="$DATABASE_URL"
        say "using \$DATABASE_URL"
    else
        if ! pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then
            if ! command -v pg_ctlcluster >/dev/null || [ ! -d /etc/postgresql ]; then
                die "no PostgreSQL answers on 127.0.0.1:5432: start it or set DATABASE_URL"
            fi
            cluster="$(find /etc/postgresql -mindepth 1 -maxdepth 1 -printf '%f\n' | sort -V | tail -n 1)"
            say "starting the local PostgreSQL $cluster cluster"
            run pg_ctlcluster --skip-systemctl-redirect "$cluster" main start
            for _ in $(seq 1 30); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 1; done
        fi
        pg_isready -q -h 127.0.0.1 -p 5432 || die "PostgreSQL on 127.0.0.1:5432 does not answer; set DATABASE_URL"
        local psql=(psql -X -q -h 127.0.0.1 -p 5432 -U postgres -d postgres)
        local exists
        exists="$("${psql[@]}" -tAc "SELECT 1 FROM pg_database WHERE datname = '$db'")" \
            || die "cannot log in as postgres on 127.0.0.1:5432; set DATABASE_URL=postgresql://USER:PASS@HOST:PORT/DB"
        [ "$exists" = "1" ] || run "${psql[@]}" -c "CREATE DATABASE $db"
        url="postgresql://postgres@127.0.0.1:5432/$db"
    fi

    say "starting the sandbox marketplace on 127.0.0.1 (1275 offers, 300 orders)"
    rm -f "$state/sandbox.url"
    "$venv/bin/emag-sandbox" --host 127.0.0.1 --port 0 --offers 1275 --orders 300 \
        --ready-file "$state/sandbox.url" >"$state/sandbox.log" 2>&1 &
    SANDBOX_PID=$!
    trap 'kill "$SANDBOX_PID" 2>/dev/null && wait "$SANDBOX_PID" 2>/dev/null; true' EXIT
    for _ in $(seq 1 150); do
        [ -s "$state/sandbox.url" ] && break
        kill -0 "$SANDBOX_PID" 2>/dev/null || die "the sandbox exited (see $state/sandbox.log)"
        sleep 0.1
    done
    [ -s "$state/sandbox.url" ] || die "the sandbox did not start within 15 s (see $state/sandbox.log)"
    local base
    base="$(cat "$state/sandbox.url")"

    say "writing $state/emag-sync.toml"
    (umask 077 && cat >"$state/emag-sync.toml" <<EOF
# Demo configuration written by deploy_sync_system.sh --local: the sandbox's default logins.
# The sandbox's port changes on every start: re-run --local, or edit base_url below.
[database]
url = "$url"

[accounts.main]
base_url = "$base"
username = "main@sandbox.test"
password = "sandbox-main"

[accounts.fbe]
base_url = "$base"
username = "fbe@sandbox.test"
password = "sandbox-fbe"
order_type = 2
EOF
    )
    local es=("$venv/bin/emag-sync" --config "$state/emag-sync.toml")
    run "${es[@]}" migrate
    say "one sync: accounts main and fbe, offers and orders"
    run "${es[@]}" once --resource all --mode full || rc=$?
    run "${es[@]}" history --limit 10
    run "${es[@]}" status
    cat <<EOF

Config:  $state/emag-sync.toml   (database $url)
Sandbox: $base  (stopped now that the demo ends; its log: $state/sandbox.log)

Run the daemon and the monitor against a sandbox yourself (three terminals):
  .venv/bin/emag-sandbox --host 127.0.0.1 --port 0 --ready-file .local/sandbox.url --offers 1275 --orders 300
  sed -i "s|^base_url = .*|base_url = \"\$(cat .local/sandbox.url)\"|" .local/emag-sync.toml
  .venv/bin/emag-sync --config .local/emag-sync.toml run                 # Ctrl-C stops it cleanly
  .venv/bin/emag-sync-monitor --config .local/emag-sync.toml run         # http://127.0.0.1:9108/metrics
Tests:   .venv/bin/python -m pytest
EOF
    [ "$rc" -eq 0 ] || printf '%s: "emag-sync once" exited %s\n' "$PROG" "$rc" >&2
    return "$rc"
}

# ============================================================ install / upgrade / rollback ===

preflight() {
    need_python "$PYTHON"
    if [ -r /etc/os-release ]; then
        local id id_like
        id="$(sed -n 's/^ID=//p' /etc/os-release | tr -d '"')"
        id_like="$(sed -n 's/^ID_LIKE=//p' /etc/os-release | tr -d '"')"
        case " $id $id_like " in
            *" debian "*|*" ubuntu "*) ;;
            *) warn "this script is made for Debian and Ubuntu; $id may need other steps" ;;
        esac
    fi
    if [ "$SYSTEM" -eq 1 ] && [ "$DRY_RUN" -eq 0 ]; then
        [ "$(id -u)" -eq 0 ] || die "run as root (sudo), or use --dry-run / --root DIR"
        [ -d /run/systemd/system ] || die "systemd is not running here (not PID 1); use --root DIR to stage a tree"
        command -v curl >/dev/null || die "curl is needed for the health check: apt-get install curl"
    fi
}

# Serialize deploys: two at once would race on the venv symlink.
take_lock() {
    [ "$DRY_RUN" -eq 0 ] || return 0
    [ -d "$OPT" ] || return 0
    exec 9>"$OPT/.deploy.lock"
    flock -n 9 || die "another deploy_sync_system.sh is running"
}

as_service_user() {  # as_service_user CREDENTIALS_DIR COMMAND...
    local creds="$1"; shift
    if [ "$SYSTEM" -eq 1 ]; then
        run runuser -u "$SERVICE_USER" -- env -C / CREDENTIALS_DIRECTORY="$creds" "$@"
    else
        run env CREDENTIALS_DIRECTORY="$creds" "$@"
    fi
}

# The LoadCredential= sources of emag-sync.service as systemd will see them: the unit, then
# its drop-ins in order (an empty "LoadCredential=" resets the list). Prints "ID:PATH" lines.
credentials() {
    local files=("$REPO/systemd/emag-sync.service") f line
    for f in "$UNIT_DIR/emag-sync.service.d"/*.conf; do [ -e "$f" ] && files+=("$f"); done
    local list=()
    for f in "${files[@]}"; do
        while IFS= read -r line; do
            line="${line#"${line%%[![:space:]]*}"}"
            case "$line" in
                LoadCredential=) list=() ;;
                LoadCredential=*) list+=("${line#LoadCredential=}") ;;
            esac
        done <"$f"
    done
    [ "${#list[@]}" -eq 0 ] || printf '%s\n' "${list[@]}"
}

credential_paths() { credentials | sed 's|^[^:]*:||'; }  # the files, without their names

# A copy of the credentials in a private directory owned by the service user: exactly what
# systemd hands the unit in $CREDENTIALS_DIRECTORY, so check-config sees what the daemon sees.
stage_credentials() {
    local dir="$1" cred id path missing=()
    run install -d -m 0700 "$dir"
    while IFS= read -r cred; do
        id="${cred%%:*}"; path="${cred#*:}"
        if [ ! -e "$ROOT$path" ]; then missing+=("$ROOT$path"); continue; fi
        run install -m 0400 "$ROOT$path" "$dir/$id"
    done < <(credentials)
    if [ "${#missing[@]}" -gt 0 ]; then
        die "emag-sync.service loads ${missing[*]} (LoadCredential=), which does not exist: create it (0600), or
    list your accounts' credentials in a drop-in: systemctl edit emag-sync  ->  an empty 'LoadCredential=' line,
    then one 'LoadCredential=NAME.password:/etc/emag-sync/NAME.password' per account"
    fi
    [ "$SYSTEM" -eq 0 ] || run chown -R "$SERVICE_USER:$SERVICE_USER" "$dir"
}

link() {  # link TARGET NAME: atomically point $OPT/NAME at TARGET (a name inside $OPT)
    run ln -sfn "$1" "$OPT/.$2.tmp"
    run mv -T "$OPT/.$2.tmp" "$OPT/$2"
}

target_of() { if [ -L "$OPT/$1" ]; then basename "$(readlink "$OPT/$1")"; fi; }

# Keep the current venv and the previous one (the rollback target); remove older ones.
prune_venvs() {
    local current previous dir name
    current="$(target_of venv)"; previous="$(target_of venv.previous)"
    for dir in "$OPT"/venv-*; do
        [ -d "$dir" ] || continue
        name="$(basename "$dir")"
        [ "$name" = "$current" ] || [ "$name" = "$previous" ] || run rm -rf "$dir"
    done
}

# Both units active ("is-active A B" would succeed if either were), the daemon past waiting
# for the database, and the monitor's /healthz answering 200.
probe() {
    local unit
    if [ -n "$HEALTH_CMD" ]; then bash -c "$HEALTH_CMD"; return; fi
    for unit in "${UNITS[@]}"; do systemctl is-active --quiet "$unit" || return 1; done
    # READY=1 comes before the database: the daemon is up once its STATUS= says it schedules
    case "$(systemctl show -p StatusText --value "${UNITS[0]}")" in
        ""|connecting*|"waiting for database"*) return 1 ;;
    esac
    curl -fsS --max-time 3 -o /dev/null "$HEALTH_URL" 2>/dev/null
}

healthy() {
    local deadline=$((SECONDS + HEALTH_TIMEOUT_S))
    until probe; do
        [ "$SECONDS" -lt "$deadline" ] || return 1
        sleep 2
    done
}

restart_units() {
    if [ "$SYSTEM" -eq 1 ]; then
        run systemctl reset-failed "${UNITS[@]}"
        run systemctl restart --no-block "${UNITS[@]}"
    fi
}

# The monitor's /healthz where the configuration puts it ([monitor].listen, as check-config
# prints it), so a monitor moved off 9108 is probed, not whatever else answers there.
health_url() {
    local listen host port
    listen="$(runuser -u "$SERVICE_USER" -- "$OPT/venv/bin/emag-sync" --config "$CONFIG" check-config 2>/dev/null \
        | sed -n 's/^listen = "\(.*\)"$/\1/p')"
    host="${listen%:*}" port="${listen##*:}"
    case "$host" in ""|0.0.0.0|::) host=127.0.0.1 ;; *:*) host="[$host]" ;; esac
    printf 'http://%s:%s/healthz\n' "$host" "${port:-9108}"
}

health_check() {  # prints the probe under --dry-run; returns non-zero when unhealthy
    if [ "$DRY_RUN" -eq 1 ]; then
        if [ "$SYSTEM" -eq 1 ]; then
            printf '+ %s\n' "systemctl is-active ${UNITS[0]}" "systemctl is-active ${UNITS[1]}" \
                "curl -fsS ${HEALTH_URL:-http://[monitor].listen/healthz}   (retried for up to ${HEALTH_TIMEOUT_S}s)"
        fi
        return 0
    fi
    [ "$SYSTEM" -eq 1 ] || [ -n "$HEALTH_CMD" ] || return 0
    [ -n "$HEALTH_URL" ] || [ "$SYSTEM" -eq 0 ] || HEALTH_URL="$(health_url)"
    say "health check: both units active and $HEALTH_URL answering (up to ${HEALTH_TIMEOUT_S}s)"
    if healthy; then say "healthy"; return 0; fi
    if [ "$SYSTEM" -eq 1 ]; then
        systemctl --no-pager --lines=15 status "${UNITS[@]}" >&2 || true
    fi
    return 1
}

# Removes what an interrupted install leaves: the unswitched venv, the source copy, staged secrets.
NEW_VENV="" SRC_DIR="" CREDS_DIR=""
cleanup() {
    local path
    [ "$DRY_RUN" -eq 0 ] || return 0
    for path in "$NEW_VENV" "$SRC_DIR" "$CREDS_DIR"; do
        if [ -n "$path" ]; then rm -rf "$path"; fi
    done
}

install_or_upgrade() {
    preflight
    umask 022  # the venv must be readable by the service user whatever root's umask is
    if [ "$SYSTEM" -eq 1 ] && ! id -u "$SERVICE_USER" >/dev/null 2>&1; then
        local group=(--user-group)  # a group left over (an older purge, made by hand) is reused
        ! getent group "$SERVICE_USER" >/dev/null || group=(--gid "$SERVICE_USER")
        run useradd --system "${group[@]}" --no-create-home --home-dir /nonexistent \
            --shell /usr/sbin/nologin --comment "emag-sync daemon" "$SERVICE_USER"
    fi
    service_python_ok
    run install -d -m 0755 "$OPT" "$UNIT_DIR"
    run install -d -m 0750 "$ETC"
    take_lock

    # --- configuration: created once, never overwritten; only modes and owners are fixed
    local fresh=0 secret
    if [ ! -e "$CONFIG" ]; then
        run install -m 0640 "$REPO/config/emag-sync.toml.example" "$CONFIG"
        fresh=1
    elif cmp -s "$CONFIG" "$REPO/config/emag-sync.toml.example"; then
        fresh=1  # still the untouched example: a first install that was interrupted, or run twice
    fi
    run chmod 0750 "$ETC"
    run chmod 0640 "$CONFIG"
    [ "$SYSTEM" -eq 0 ] || run chown root:"$SERVICE_USER" "$ETC" "$CONFIG"
    # The unit's credentials (the eMAG passwords) are root's alone: systemd hands them over.
    # Another secret file (webhook.secret; database.password, 0640 root:emag-sync so that the group's
    # operators can run `emag-sync status`) only loses what the world could read.
    local loaded
    loaded="$(credential_paths)"
    for secret in "$ETC"/*.password "$ETC"/*.secret; do
        [ -e "$secret" ] || continue
        if grep -qxF "${secret#"$ROOT"}" <<<"$loaded"; then
            run chmod 0600 "$secret"
            [ "$SYSTEM" -eq 0 ] || run chown root:root "$secret"
        else
            run chmod o-rwx "$secret"
        fi
    done

    # --- a new venv beside the current one
    local stamp name new previous older
    stamp="$(date -u +%Y%m%dT%H%M%SZ)"
    name="venv-$stamp"
    for n in 2 3 4 5 6 7 8 9; do [ -e "$OPT/$name" ] || break; name="venv-$stamp.$n"; done
    new="$OPT/$name"
    previous="$(target_of venv)"
    older="$(target_of venv.previous)"
    NEW_VENV="$new"
    trap cleanup EXIT  # a failed build or check leaves nothing behind
    say "building $new"
    if [ -n "$VENV_FROM" ]; then
        run cp -a "$VENV_FROM" "$new"
    else
        # Build from a clean copy of the sources: an in-tree build would write build/ and
        # *.egg-info into the checkout, and a stale build/lib could ship deleted modules.
        local src="$OPT/.src-$stamp"
        SRC_DIR="$src"
        run "$PYTHON" -m venv "$new"
        run mkdir -p "$src"
        printf '+ tar -C %q -c . | tar -C %q -x   (without .git, .venv, build, .local, caches)\n' "$REPO" "$src"
        if [ "$DRY_RUN" -eq 0 ]; then
            tar -C "$REPO" --exclude=./.git --exclude=./.venv --exclude='./.ci/*venv' --exclude=./build \
                --exclude=./.local --exclude='*.egg-info' --exclude=__pycache__ --exclude=.hypothesis \
                --exclude=.pytest_cache -cf - . | tar -C "$src" -xf -
        fi
        run "$new/bin/pip" install -q --disable-pip-version-check "${PIP_ARGS[@]}" "$src"
        run rm -rf "$src"
    fi
    run "$new/bin/emag-sync" --version

    if [ "$fresh" -eq 1 ]; then
        link "$name" venv
        NEW_VENV=""
        install_units
        [ "$SYSTEM" -eq 0 ] || run systemctl enable "${UNITS[@]}"
        local loaded
        loaded="$(credential_paths | sed "s|^|       $ROOT|")"
        cat <<EOF
==> first install: $CONFIG holds the example configuration; the units are installed and
    enabled but not started.
    1. edit $CONFIG (database url, accounts)
    2. put each account's eMAG password in its file (root:root, mode 0600); emag-sync.service
       already loads these:
$loaded
       other account names: list them in a drop-in (systemctl edit emag-sync; see README)
    3. run this script again: it checks the configuration, migrates, starts and checks health
EOF
        return 0
    fi

    # --- the new code checks the configuration and migrates before anything switches
    local creds
    if [ "$DRY_RUN" -eq 1 ]; then
        creds="/run/emag-sync-deploy.XXXXXX"  # what mktemp would create
        [ "$SYSTEM" -eq 1 ] || creds="${TMPDIR:-/tmp}/tmp.XXXXXXXXXX"
    elif [ "$SYSTEM" -eq 1 ]; then
        creds="$(mktemp -d /run/emag-sync-deploy.XXXXXX)"
    else
        creds="$(mktemp -d)"
    fi
    CREDS_DIR="$creds"
    stage_credentials "$creds"
    as_service_user "$creds" "$new/bin/emag-sync" --config "$CONFIG" check-config --secrets \
        || die "check-config failed with the new venv (above); nothing was switched"
    if [ "$SYSTEM" -eq 1 ]; then
        as_service_user "$creds" "$new/bin/emag-sync" --config "$CONFIG" migrate \
            || die "migrate failed (above); nothing was switched, the running version is untouched"
    fi
    run rm -rf "$creds"

    # --- switch, restart, check; roll back on failure
    say "switching $OPT/venv -> $name (previous: ${previous:-none})"
    link "$name" venv
    NEW_VENV=""
    [ -z "$previous" ] || link "$previous" venv.previous
    install_units
    if [ "$SYSTEM" -eq 1 ]; then
        if [ -z "$previous" ]; then
            run systemctl enable --now --no-block "${UNITS[@]}"
        else
            run systemctl enable --quiet "${UNITS[@]}"
            restart_units
        fi
    fi
    if ! health_check; then
        if [ -z "$previous" ] || [ ! -d "$OPT/$previous" ]; then
            die "the new install is not healthy and there is no previous venv to roll back to;
    see: journalctl -u emag-sync -u emag-sync-monitor -n 100"
        fi
        warn "$name failed the health check; rolling back to $previous"
        link "$previous" venv
        if [ -n "$older" ] && [ -d "$OPT/$older" ]; then link "$older" venv.previous; else run rm -f "$OPT/venv.previous"; fi
        run rm -rf "$new"
        restart_units
        health_check || warn "the previous venv is not healthy either"
        die "rolled back to $previous; see: journalctl -u emag-sync -u emag-sync-monitor -n 100"
    fi
    prune_venvs
    say "installed $name"
}

# The units, the README, the alert rules, the scrape example and the dashboard (in
# $OPT/share, where the README and the scrape example point), and the commands on PATH
# (through the venv symlink, so a rollback moves them too).
install_units() {
    local unit cmd
    run install -m 0644 "$REPO/README.md" "$OPT/README.md"
    run install -d -m 0755 "$OPT/share/prometheus" "$OPT/share/grafana" "$BIN_DIR"
    run install -m 0644 "$REPO/config/prometheus/alerts.yml" "$REPO/config/prometheus/prometheus.yml.example" \
        "$OPT/share/prometheus/"
    run install -m 0644 "$REPO/config/grafana/emag-sync.json" "$OPT/share/grafana/"
    for cmd in emag-sync emag-sync-monitor; do
        run ln -sfn "/opt/emag-sync/venv/bin/$cmd" "$BIN_DIR/$cmd"
    done
    for unit in "${UNITS[@]}"; do
        run install -m 0644 "$REPO/systemd/$unit" "$UNIT_DIR/$unit"
    done
    [ "$SYSTEM" -eq 0 ] || run systemctl daemon-reload
}

rollback() {
    preflight
    take_lock
    local current previous
    current="$(target_of venv)"; previous="$(target_of venv.previous)"
    if [ -z "$previous" ] || [ ! -d "$OPT/$previous" ]; then die "no previous venv in $OPT to roll back to"; fi
    say "rolling back $OPT/venv: $current -> $previous"
    link "$previous" venv
    link "$current" venv.previous  # so a second --rollback rolls forward again
    restart_units
    health_check || die "$previous is not healthy either; see: journalctl -u emag-sync -u emag-sync-monitor -n 100"
    say "running $previous"
}

uninstall() {
    if [ "$SYSTEM" -eq 1 ] && [ "$DRY_RUN" -eq 0 ]; then
        [ "$(id -u)" -eq 0 ] || die "run as root (sudo)"
    fi
    take_lock
    local unit
    if [ "$SYSTEM" -eq 1 ]; then
        run systemctl disable --now "${UNITS[@]}" || warn "could not stop/disable the units"
    fi
    for unit in "${UNITS[@]}"; do run rm -f "$UNIT_DIR/$unit"; done
    [ "$SYSTEM" -eq 0 ] || run systemctl daemon-reload
    for unit in emag-sync emag-sync-monitor; do
        [ "$(readlink "$BIN_DIR/$unit" 2>/dev/null)" != "/opt/emag-sync/venv/bin/$unit" ] || run rm -f "$BIN_DIR/$unit"
    done
    run rm -rf "$OPT"
    if [ "$PURGE" -eq 1 ]; then
        for unit in "${UNITS[@]}"; do run rm -rf "$UNIT_DIR/$unit.d"; done
        run rm -rf "$ETC"
        if [ "$SYSTEM" -eq 1 ]; then
            if id -u "$SERVICE_USER" >/dev/null 2>&1; then run userdel "$SERVICE_USER" 2>/dev/null; fi
            # userdel keeps a group that has members (operators added for `emag-sync status`)
            if getent group "$SERVICE_USER" >/dev/null; then
                say "removing the group $SERVICE_USER (members: $(getent group "$SERVICE_USER" | cut -d: -f4))"
                run groupdel "$SERVICE_USER"
            fi
        fi
        say "purged $ETC. The database is kept; to drop emag-sync's tables, as a PostgreSQL superuser:"
        say "  psql -d YOUR_DB -c 'DROP SCHEMA emag_sync CASCADE'   (the schema named in [database].schema)"
    elif [ -d "$ETC" ]; then
        say "kept $ETC (config and secrets) and the database; --uninstall --purge removes $ETC too"
    else
        say "removed; there is no $ETC to keep (purged before?), and the database is kept"
    fi
}

case "$MODE" in
    local) local_demo ;;
    install) install_or_upgrade ;;
    rollback) rollback ;;
    uninstall) uninstall ;;
esac
