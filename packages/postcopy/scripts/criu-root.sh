#!/usr/bin/env bash
# CRIU for postcopy: Debian 12's criu 3.17 cannot dump on kernels >= 6.x (vDSO bounds), so we run
# Debian trixie's criu 4.x inside a trixie root built with debootstrap.
#
#   criu-root.sh ensure            build the root if it is missing (idempotent, locked), print its
#                                  path, and (re)build our workloads (bench/workloads/*.c) into it
#   criu-root.sh exec CMD [ARG...] run CMD inside the root: a private mount namespace with proc,
#                                  sysfs, dev, a fresh devpts and tmpfs /run, then pivot_root
#   criu-root.sh check             `criu check` inside the root
#
# Env: POSTCOPY_CRIU_ROOT (default /var/cache/postcopy/trixie; / means the host's own criu and runc,
# run as they are), POSTCOPY_DEBIAN_MIRROR, POSTCOPY_CRIU_SUITE (default trixie: criu 4.1.1; sid or
# forky have criu 4.2, which dumps INET sockets on kernels >= 6.16), POSTCOPY_ROOT_BINDS (opt-in,
# `exec`: "SRC=DST ..." host paths bind-mounted at DST inside the root).
# Needs root; `ensure` needs Debian's mirror once.
set -euo pipefail
ROOT=${POSTCOPY_CRIU_ROOT:-/var/cache/postcopy/trixie}
PKGS=criu,redis-server,redis-tools,iproute2,procps,runc,iptables,nginx-light
# added to roots built before they were in PKGS (see extras)
EXTRAS="runc iptables nginx-light"
MARK="$ROOT/.postcopy-root-ok"

die() { echo "criu-root: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "needs root (debootstrap, mount namespaces)"

mirror() {
  if [ -n "${POSTCOPY_DEBIAN_MIRROR:-}" ]; then echo "$POSTCOPY_DEBIAN_MIRROR"; return; fi
  local m=
  m=$(awk '/^URIs:/ && $2 !~ /security/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
  [ -n "$m" ] || m=$(awk '$1=="deb" && $0 !~ /security/ {print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
  echo "${m:-http://deb.debian.org/debian}"
}

ensure() {
  [ "$ROOT" = / ] && { echo /; return; }  # the host's own tools: nothing to build
  [ -e "$MARK" ] && { echo "$ROOT"; return; }
  mkdir -p "$(dirname "$ROOT")"
  exec 8>"$ROOT.lock"
  flock 8
  [ -e "$MARK" ] && { echo "$ROOT"; return; }  # built while we waited
  if ! command -v debootstrap >/dev/null; then
    apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >&2 || die "cannot install debootstrap"
  fi
  local script=
  [ -e /usr/share/debootstrap/scripts/trixie ] || script=/usr/share/debootstrap/scripts/sid
  local tmp="$ROOT.partial"
  rm -rf "$tmp"
  local log="$ROOT.debootstrap.log"
  echo "criu-root: building $ROOT from $(mirror) (debootstrap ${POSTCOPY_CRIU_SUITE:-trixie}, about a minute)" >&2
  local suite=${POSTCOPY_CRIU_SUITE:-trixie}
  [ "$suite" = trixie ] || script=/usr/share/debootstrap/scripts/sid
  if ! debootstrap --variant=minbase --include=$PKGS "$suite" "$tmp" "$(mirror)" $script >"$log" 2>&1; then
    tail -20 "$log" >&2
    die "debootstrap failed (log: $log)"
  fi
  [ -x "$tmp/usr/sbin/criu" ] || die "the root has no criu"
  rm -rf "$ROOT"
  mv "$tmp" "$ROOT"
  touch "$MARK"
  echo "$ROOT"
}

# Packages added to PKGS since a root was built: installed into it once (idempotent, locked).
extras() {
  local missing=
  for p in $EXTRAS; do [ -e "$ROOT/var/lib/dpkg/info/$p.list" ] || missing="$missing $p"; done
  [ -z "$missing" ] && return 0
  exec 8>"$ROOT.lock"
  flock 8
  echo "criu-root: installing$missing into $ROOT" >&2
  enter /bin/sh -c "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq$missing" >&2 || die "cannot install$missing into the root"
}

# Our test workloads, static so that they run in the root whatever libc it has.
workloads() {
  local src
  src="$(cd "$(dirname "$0")/.." && pwd)/bench/workloads"
  for c in "$src"/*.c; do
    local bin="$ROOT/usr/local/bin/$(basename "$c" .c)"
    if [ ! -x "$bin" ] || [ "$c" -nt "$bin" ]; then
      # A temporary name of its own: two runs of `ensure` may build at once.
      cc -O2 -static -o "$bin.tmp.$$" "$c" && mv "$bin.tmp.$$" "$bin" || die "cannot build $c (needs gcc and libc6-dev)"
    fi
  done
}

enter() {
  if [ "$ROOT" = / ]; then
    # The host's own criu and runc (postcopy chose them: criu >= 4.0 whose check passes, runc >= 1.1).
    export CRIU_FAULT="${CRIU_FAULT:-130}"
    exec "$@"
  fi
  [ -e "$MARK" ] || die "no root at $ROOT: run '$0 ensure' first"
  export CRIU_ROOT_DIR="$ROOT"
  # Step with PTRACE_SYSCALL, not hardware breakpoints (they never fire in some VMs): see src/criu/root.ts.
  export CRIU_FAULT="${CRIU_FAULT:-130}"
  local cgns=
  if [ -n "${POSTCOPY_ROOT_CGROUPS:-}" ]; then
    # POSTCOPY_ROOT_CGROUPS=NAME: runc and CRIU run in a cgroup namespace rooted at the v2 cgroup
    # postcopy/NAME, one per host name. Two "hosts" on one kernel (tests) then keep their
    # containers' cgroups apart, and a dump names cgroups from that root, as a restore on another
    # host expects.
    [[ "$POSTCOPY_ROOT_CGROUPS" =~ ^[A-Za-z0-9._-]+$ ]] || die "POSTCOPY_ROOT_CGROUPS: a host name, not $POSTCOPY_ROOT_CGROUPS"
    # The v2 hierarchy is mounted in a throwaway mount namespace (`ip netns exec` hides the host's
    # /sys/fs/cgroup), and this shell moved into postcopy/NAME through it.
    local mnt
    mnt=$(mktemp -d)
    unshare -m --propagation private sh -c 'mount -t cgroup2 cgroup2 "$1" && mkdir -p "$1/postcopy/$2" && echo "$3" > "$1/postcopy/$2/cgroup.procs"' \
      sh "$mnt" "$POSTCOPY_ROOT_CGROUPS" $$ || { rmdir "$mnt"; die "cannot enter cgroup postcopy/$POSTCOPY_ROOT_CGROUPS of the v2 hierarchy (runc here needs one)"; }
    rmdir "$mnt"
    cgns=-C
  fi
  exec unshare -m $cgns --propagation private bash -c '
set -e
R=$CRIU_ROOT_DIR
mount --bind "$R" "$R"
mount -t proc proc "$R/proc"
mount -t sysfs sysfs "$R/sys"
# runc (containers) needs a cgroup hierarchy; plain CRIU runs do without one (their images then
# carry no cgroup state to restore). It gets a cgroup v2 namespace of its own (see below).
if [ -n "${POSTCOPY_ROOT_CGROUPS:-}" ]; then mount -t cgroup2 cgroup2 "$R/sys/fs/cgroup"; fi
mount -t devtmpfs devtmpfs "$R/dev" 2>/dev/null || mount --rbind /dev "$R/dev"
mkdir -p "$R/dev/pts"
mount -t devpts -o newinstance,ptmxmode=0666 devpts "$R/dev/pts"
mount -t tmpfs tmpfs "$R/run"
mount -t tmpfs tmpfs "$R/tmp"
# Opt-in: POSTCOPY_ROOT_BINDS="SRC=DST ..." bind-mounts host paths at DST inside the root (made if
# missing; under /run or /tmp they leave nothing in the root). Unset: no extra mounts.
for b in ${POSTCOPY_ROOT_BINDS:-}; do
  s=${b%%=*} d=$R/${b#*=}
  if [ -d "$s" ]; then mkdir -p "$d"; else mkdir -p "$(dirname "$d")" && { [ -e "$d" ] || : >"$d"; }; fi
  mount --bind "$s" "$d"
done
cd "$R"
mkdir -p oldroot
pivot_root . oldroot
umount -l /oldroot
cd /
# CRIU probes the kernel on each run (25 ms of a dump, as much of a restore) unless /run/criu.kdat
# holds the result, and our /run is new on each entry: keep the result per boot, as CRIU itself does
# on a tmpfs /run (the kernel cannot change without a reboot).
K=/var/lib/postcopy-kdat/$(cat /proc/sys/kernel/random/boot_id)
if [ ! -s "$K" ]; then
  criu check >/dev/null 2>&1 || true
  if [ -s /run/criu.kdat ]; then
    rm -rf /var/lib/postcopy-kdat && mkdir -p /var/lib/postcopy-kdat
    cp /run/criu.kdat "$K.$$" && mv "$K.$$" "$K"
  fi
fi
[ -s "$K" ] && cp "$K" /run/criu.kdat
exec "$@"' criu-root "$@"
}

case "${1:-}" in
  ensure) ensure; [ "$ROOT" = / ] || { (extras); workloads; } ;;
  exec) shift; [ $# -gt 0 ] || die "exec needs a command"; enter "$@" ;;
  check) enter criu check ;;
  *) die "usage: $0 ensure | exec CMD [ARG...] | check" ;;
esac
