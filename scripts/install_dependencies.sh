#!/usr/bin/env bash
# Installs, from Debian's packages, whatever gsq's build and tests need and this machine lacks.
# The CUDA toolkit is optional: when /usr/local/cuda (nvcc) is present the CUDA build is compiled
# too, and Thrust/CUB come from it; otherwise Thrust comes from libthrust-dev.
set -euo pipefail
packages=(cmake make g++ libeigen3-dev libboost-program-options-dev catch2 nlohmann-json3-dev libthrust-dev
          clang libclang-rt-14-dev python3-matplotlib openmpi-bin libopenmpi-dev libpcre2-dev libicu-dev)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "installing: ${missing[*]}"
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" > /dev/null
fi
