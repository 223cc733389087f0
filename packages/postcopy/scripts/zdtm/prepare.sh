#!/bin/bash
# Runs inside the CRIU root (criu-root.sh exec): gets zdtm from Debian's source of the root's own
# criu, installs what zdtm needs to build and run, and builds it. Idempotent and locked; prints the
# test directory (where zdtm.py runs) on its last line.
#
# Debian's mirror is the only network there is: a deb-src line for the same mirror and suite, then
# `apt-get source --download-only criu=VERSION`. The orig tarball holds test/ (zdtm); the Debian
# tarball and .dsc are not needed (some mirrors answer 404 for them: that is not an error here).
set -euo pipefail
DIR=/var/lib/zdtm
mkdir -p "$DIR"
exec 9>"$DIR/.lock"
flock 9

DEBVER=$(dpkg-query -W -f '${Version}' criu)       # 4.1.1-1
UPVER=${DEBVER%-*}; UPVER=${UPVER#*:}              # 4.1.1
SRC=$DIR/criu-$UPVER
MARK=$SRC/.postcopy-zdtm-built
REV=2  # of this script: a new one redoes the steps below (each is idempotent)
# zdtm's build and run needs (Debian package names), and what the built marker records.
PKGS="gcc make libc6-dev pkg-config libaio-dev libcap-dev libnl-3-dev libnl-route-3-dev protobuf-c-compiler libprotobuf-c-dev python3 python3-yaml python3-protobuf python3-pycriu iproute2 procps kmod"
if [ -e "$MARK" ] && [ "$(cat "$MARK")" = "$REV $PKGS" ]; then echo "$SRC/test"; exit 0; fi

log() { echo "zdtm-prepare: $*" >&2; }
missing=
for p in $PKGS; do dpkg-query -W -f '${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing="$missing $p"; done

if [ -n "$missing" ] || ! ls "$DIR"/criu_"$UPVER".orig.tar.* >/dev/null 2>&1; then
  # The deb-src twin of the root's own deb line (same mirror, same suite).
  if [ ! -s /etc/apt/sources.list.d/zdtm-src.list ]; then
    line=$(awk '$1=="deb" {print; exit}' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null || true)
    [ -n "$line" ] || { log "no deb line in the root's apt sources"; exit 1; }
    echo "deb-src${line#deb}" >/etc/apt/sources.list.d/zdtm-src.list
  fi
  log "apt-get update (Debian's mirror)"
  apt-get update -qq >&2
fi
if [ -n "$missing" ]; then
  log "installing$missing"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >&2
fi
if ! ls "$DIR"/criu_"$UPVER".orig.tar.* >/dev/null 2>&1; then
  log "apt-get source --download-only criu=$DEBVER"
  (cd "$DIR" && apt-get source --download-only "criu=$DEBVER" >&2) || true
  ls "$DIR"/criu_"$UPVER".orig.tar.* >/dev/null 2>&1 || { log "no criu_$UPVER.orig tarball from the mirror"; exit 1; }
fi

if [ ! -d "$SRC/test/zdtm" ]; then
  log "unpacking criu_$UPVER.orig (test/ only)"
  rm -rf "$SRC.partial" && mkdir -p "$SRC.partial"
  tar -xf "$DIR"/criu_"$UPVER".orig.tar.* -C "$SRC.partial" --strip-components=1
  rm -rf "$SRC" && mv "$SRC.partial" "$SRC"
fi
# test/pycriu links to ../lib/pycriu, whose protobuf modules are made by criu's own build: zdtm.py
# takes Debian's python3-pycriu (same version) instead.
[ -L "$SRC/test/pycriu" ] && rm -f "$SRC/test/pycriu"
# zdtm runs a test that is not flagged suid as uid 18943. This machine's root lacks
# CAP_SYS_RESOURCE, so CRIU cannot read another uid's rlimits and every such dump fails ("Can't get
# rlimit"). ZDTM_AS_ROOT=1 (zdtm.mjs sets it) runs every test as root; unset, zdtm is unchanged.
if ! grep -q ZDTM_AS_ROOT "$SRC/test/zdtm.py"; then
  sed -i "s/^        if not test_flag(self.__desc, 'suid'):$/        if not test_flag(self.__desc, 'suid') and os.getenv('ZDTM_AS_ROOT') != '1':/" "$SRC/test/zdtm.py"
  grep -q ZDTM_AS_ROOT "$SRC/test/zdtm.py" || { log "cannot patch zdtm.py to run tests as root"; exit 1; }
fi

log "building zdtm (make -C test/zdtm, a few minutes on 2 cores)"
cd "$SRC/test"
if ! make -k -j"$(nproc)" -C zdtm >"$DIR/build.log" 2>&1; then
  grep -E 'error|Error' "$DIR/build.log" | head -20 >&2
  log "some zdtm tests did not build (see $DIR/build.log); they are reported as not built"
fi
make zdtm_ct umount2 >>"$DIR/build.log" 2>&1
echo "$REV $PKGS" >"$MARK"
echo "$SRC/test"
