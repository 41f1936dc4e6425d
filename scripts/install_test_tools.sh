#!/usr/bin/env bash
# The tools some tests need beyond Python packages: qemu-user (tests/test_cpu_matrix.py runs a slice of the suite
# on emulated CPUs this machine is not) and an aarch64 cross compiler (tests/test_aarch64_build.py). Installed with
# apt-get where this user can; elsewhere those tests skip and say what is missing.
set -u
missing=()
command -v qemu-x86_64 >/dev/null || missing+=(qemu-user)
command -v aarch64-linux-gnu-g++ >/dev/null || missing+=(g++-aarch64-linux-gnu)
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    echo "not installed (needs root and apt-get): ${missing[*]}; the tests that need them will skip"
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get install -y -q "${missing[@]}" >/dev/null 2>&1 ||
    { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q "${missing[@]}" >/dev/null 2>&1; } ||
    echo "apt-get could not install ${missing[*]}; the tests that need them will skip"
exit 0
