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
# Env: POSTCOPY_CRIU_ROOT (default /var/cache/postcopy/trixie), POSTCOPY_DEBIAN_MIRROR.
# Needs root; `ensure` needs Debian's mirror once.
set -euo pipefail
ROOT=${POSTCOPY_CRIU_ROOT:-/var/cache/postcopy/trixie}
PKGS=criu,redis-server,redis-tools,iproute2,procps
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
  echo "criu-root: building $ROOT from $(mirror) (debootstrap trixie, about a minute)" >&2
  if ! debootstrap --variant=minbase --include=$PKGS trixie "$tmp" "$(mirror)" $script >"$log" 2>&1; then
    tail -20 "$log" >&2
    die "debootstrap failed (log: $log)"
  fi
  [ -x "$tmp/usr/sbin/criu" ] || die "the root has no criu"
  rm -rf "$ROOT"
  mv "$tmp" "$ROOT"
  touch "$MARK"
  echo "$ROOT"
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
  [ -e "$MARK" ] || die "no root at $ROOT: run '$0 ensure' first"
  export CRIU_ROOT_DIR="$ROOT"
  # Step with PTRACE_SYSCALL, not hardware breakpoints (they never fire in some VMs): see src/criu/root.ts.
  export CRIU_FAULT="${CRIU_FAULT:-130}"
  exec unshare -m --propagation private bash -c '
set -e
R=$CRIU_ROOT_DIR
mount --bind "$R" "$R"
mount -t proc proc "$R/proc"
mount -t sysfs sysfs "$R/sys"
# runc (containers) needs the cgroups of the host; plain CRIU runs do without them (their images then
# carry no cgroup state to restore).
if [ -n "${POSTCOPY_ROOT_CGROUPS:-}" ] && [ -d /sys/fs/cgroup ]; then mount --bind /sys/fs/cgroup/unified "$R/sys/fs/cgroup"; fi
mount -t devtmpfs devtmpfs "$R/dev" 2>/dev/null || mount --rbind /dev "$R/dev"
mkdir -p "$R/dev/pts"
mount -t devpts -o newinstance,ptmxmode=0666 devpts "$R/dev/pts"
mount -t tmpfs tmpfs "$R/run"
mount -t tmpfs tmpfs "$R/tmp"
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
  ensure) ensure; workloads ;;
  exec) shift; [ $# -gt 0 ] || die "exec needs a command"; enter "$@" ;;
  check) enter criu check ;;
  *) die "usage: $0 ensure | exec CMD [ARG...] | check" ;;
esac
