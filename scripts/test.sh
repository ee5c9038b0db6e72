#!/usr/bin/env bash
# The whole test suite on a fresh machine: system packages the interop tests need, pnpm,
# dependencies, build, then one vitest run over every package. Ends with "N passed, N failed".
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages for real third-party clients (qemu-img, qemu-io, nbdinfo, nbdcopy, nbdsh, fio,
# swift, curl)
# and for the RADOS tests (ceph-mon, ceph-osd, ceph-common, librados-dev).
need_pkgs=()
command -v qemu-img >/dev/null || need_pkgs+=(qemu-utils)
command -v nbdinfo >/dev/null || need_pkgs+=(libnbd-bin)
/usr/bin/python3 -c 'import nbd' 2>/dev/null || need_pkgs+=(python3-libnbd)
command -v fio >/dev/null || need_pkgs+=(fio)
command -v nbdkit >/dev/null || need_pkgs+=(nbdkit)
[ -x /usr/bin/swift ] || need_pkgs+=(python3-swiftclient)
command -v curl >/dev/null || need_pkgs+=(curl)
command -v systemd-analyze >/dev/null || need_pkgs+=(systemd)  # verifies packages/archipelago/systemd
# A throwaway single-node Ceph cluster (scripts/ceph-cluster.sh) and the librados headers for
# the RADOS blocker's native binding (installed before the build below).
command -v ceph-mon >/dev/null || need_pkgs+=(ceph-mon)
command -v ceph-osd >/dev/null || need_pkgs+=(ceph-osd)
command -v rados >/dev/null || need_pkgs+=(ceph-common)
[ -f /usr/include/rados/librados.h ] || need_pkgs+=(librados-dev)
# Two hosts on one machine (test-e2e/lib/hosts.ts): network namespaces, veth pairs and a bridge
# (ip), UTS namespaces and entering them (unshare, nsenter, flock), and the hosts' hostname.
command -v ip >/dev/null || need_pkgs+=(iproute2)
{ command -v nsenter && command -v unshare && command -v flock; } >/dev/null || need_pkgs+=(util-linux)
command -v hostname >/dev/null || need_pkgs+=(hostname)
# Loop devices over a volume's FUSE file (test-e2e/fuse, packages/fuse): losetup, mount, umount.
command -v losetup >/dev/null || need_pkgs+=(mount)
# A qemu guest for the live-migration tests (test-e2e/lib/guest.ts): qemu, a Debian kernel with
# its modules (the small cloud flavour), a static busybox for its initramfs, and e2fsprogs to make
# and check its ext4 disk.
command -v qemu-system-x86_64 >/dev/null || need_pkgs+=(qemu-system-x86)
have_kernel=no
for k in /boot/vmlinuz-*; do [ -f "/lib/modules/${k#/boot/vmlinuz-}/modules.dep" ] && have_kernel=yes; done
[ $have_kernel = yes ] || need_pkgs+=(linux-image-cloud-amd64)
dpkg-query -W -f='${Status}' busybox-static 2>/dev/null | grep -q 'ok installed' || need_pkgs+=(busybox-static)
{ [ -x /usr/sbin/debugfs ] || [ -x /sbin/debugfs ]; } || need_pkgs+=(e2fsprogs)
if [ ${#need_pkgs[@]} -gt 0 ]; then
  echo "== installing Debian packages: ${need_pkgs[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_pkgs[@]}" >/dev/null
fi

bash scripts/install.sh

echo "== tests"
rm -f .vitest-results.json
status=0
pnpm exec vitest run --reporter=default --reporter=json --outputFile=.vitest-results.json || status=$?
node scripts/summarize-tests.mjs .vitest-results.json || status=1
exit $status
