#!/usr/bin/env bash
# Makes keypoint pairs (.dat, MICMAC v0) from photographs that ship in Debian's opencv-doc, with
# python3-opencv's SIFT; installs both the first time (as root). Usage: make-pairs.sh [OUTDIR]
# With --views N: a MICMAC project of N homography warps of aloeL.jpg, about 30k points each
# (OUTDIR/Pastis/LBPpview_NN.jpg.dat), for tiematch bench --batch. Usage: make-pairs.sh --views N [OUTDIR]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
views=0
if [[ ${1:-} == --views ]]; then views="$2"; shift 2; fi
out="${1:-$here/../build/pairs}"
data=/usr/share/doc/opencv-doc/examples/data

if ! /usr/bin/python3 -c 'import cv2' 2>/dev/null || [ ! -d "$data" ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "make-pairs: needs python3-opencv and opencv-doc: apt-get install python3-opencv opencv-doc (as root)" >&2
    exit 1
  fi
  echo "make-pairs: installing python3-opencv and opencv-doc (first run only)" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq --no-install-recommends python3-opencv opencv-doc >/dev/null ||
    { apt-get update -qq && apt-get install -y -qq --no-install-recommends python3-opencv opencv-doc >/dev/null; }
fi

# The documentation may ship compressed images.
find_image() {
  local name="$1"
  if [ -f "$data/$name" ]; then echo "$data/$name"; return; fi
  if [ -f "$data/$name.gz" ]; then
    mkdir -p "$out/images"
    gunzip -c "$data/$name.gz" > "$out/images/$name"
    echo "$out/images/$name"
    return
  fi
  echo "make-pairs: $name is not in $data" >&2
  exit 1
}

mkdir -p "$out"
if ((views > 0)); then
  /usr/bin/python3 "$here/make_views.py" "$(find_image aloeL.jpg)" "$out" --views "$views" --upscale 1.5 --contrast 0.02 --features 30000
  echo "$out"
  exit 0
fi
# name, image 1, image 2, extra options
while read -r name a b opts; do
  [ -n "$name" ] || continue
  mkdir -p "$out/$name"
  # shellcheck disable=SC2086
  /usr/bin/python3 "$here/make_pair.py" "$(find_image "$a")" "$(find_image "$b")" "$out/$name/A.dat" "$out/$name/B.dat" $opts
done <<'PAIRS'
aloe aloeL.jpg aloeR.jpg --upscale 1.5 --contrast 0.02 --features 40345,38931
graffiti graf1.png graf3.png --upscale 1 --contrast 0.02
box box.png box_in_scene.png --upscale 2 --contrast 0.02
PAIRS
echo "$out"
