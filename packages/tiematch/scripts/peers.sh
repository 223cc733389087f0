#!/usr/bin/env bash
# Installs the benchmark's peers from Debian (libann-dev, libflann-dev, python3-faiss) the first
# time, and builds the harnesses into build/peers/. Idempotent; needs root for the install.
# Usage: peers.sh [PEERS], PEERS a comma list of libann, flann, faiss (default: all three).
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
out="$here/build/peers"
want=",${1:-libann,flann,faiss},"
wants() { [[ $want == *",$1,"* ]]; }
need=()
if wants libann; then [[ -f /usr/include/ANN/ANN.h ]] || need+=(libann-dev); fi
if wants flann; then [[ -f /usr/include/flann/flann.hpp ]] || need+=(libflann-dev liblz4-dev); fi
if wants faiss; then
  /usr/bin/python3 -c "import faiss, numpy" 2>/dev/null || need+=(python3-faiss python3-numpy)
  # faiss flat search is BLAS: Debian's reference BLAS is ~30x slower than OpenBLAS.
  [[ -e /usr/lib/x86_64-linux-gnu/openblas-pthread/libblas.so.3 ]] || need+=(libopenblas0-pthread)
fi
command -v g++ >/dev/null || need+=(g++)
command -v make >/dev/null || need+=(make)
if ((${#need[@]})); then
  if [[ $(id -u) != 0 ]]; then echo "tiematch bench: run as root to install ${need[*]}" >&2; exit 1; fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq "${need[@]}" >/dev/null || { apt-get update -qq && apt-get install -y -qq "${need[@]}" >/dev/null; }
fi
mkdir -p "$out"
src="$here/bench/peers"
build() { # name, extra flags
  local bin="$out/$1"
  if [[ ! -x $bin || $src/$1.cpp -nt $bin || $src/common.h -nt $bin ]]; then
    g++ -O3 -march=native -std=c++17 -o "$bin" "$src/$1.cpp" "${@:2}"
  fi
}
if wants libann; then build ann_harness -lann; fi
if wants flann; then build flann_harness -fopenmp -llz4; fi
echo "$out"
