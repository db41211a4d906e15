#!/usr/bin/env bash
# A Debian bookworm machine for the packages' test on a real systemd, built once (about two
# minutes) and cached outside the repo: a root file system made by debootstrap with the
# kernel, systemd as PID 1, BlueZ with btvirt (virtual Bluetooth controllers on the kernel's
# hci_vhci, so the box has an adapter to scan with), DHCP on the virtual network and root
# logged in on the serial console, which the test types its commands into. Needs root (the
# test machines are) and Debian's package mirror. Prints the image's directory: `vmlinuz`,
# `initrd.img` and `root.img` (raw ext4; the test boots a copy-on-write overlay of it).
set -euo pipefail
cd "$(dirname "$0")/.."

# Bump when the image's contents change.
version=1
cache="${XDG_CACHE_HOME:-$HOME/.cache}/tastesync/vm-bookworm-$version"
# The test boots the image with qemu-system and an overlay made by qemu-img, cached image
# or not, so both are checked every time. Debian's qemu-system may remove a qemu-utils of
# another version (a machine with a backported one lost qemu-img that way): qemu-img is
# checked again after it, and installed to match.
missing=()
command -v qemu-system-x86_64 >/dev/null 2>&1 || missing+=(qemu-system-x86)
if [ ! -f "$cache/ready" ]; then
    command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
    command -v mkfs.ext4 >/dev/null 2>&1 || missing+=(e2fsprogs)
fi
if [ "${#missing[@]}" -gt 0 ]; then
    bash scripts/apt-install.sh install-vm "${missing[@]}" >&2
fi
if ! command -v qemu-img >/dev/null 2>&1; then
    bash scripts/apt-install.sh install-vm qemu-utils >&2
fi
if [ -f "$cache/ready" ]; then
    echo "$cache"
    exit 0
fi

work="$cache.partial"
rm -rf "$work"
mkdir -p "$work"
root="$work/root"
echo "install-vm: debootstrap bookworm into $root" >&2
debootstrap --variant=minbase \
    --include=systemd-sysv,udev,dbus,linux-image-amd64,initramfs-tools,kmod,iproute2,procps,adduser,bluez,bluez-test-tools,curl,ca-certificates \
    bookworm "$root" http://deb.debian.org/debian >"$work/debootstrap.log" 2>&1 \
    || { tail -n 30 "$work/debootstrap.log" >&2; exit 1; }

echo tastesync-vm >"$root/etc/hostname"
echo "/dev/vda / ext4 defaults 0 1" >"$root/etc/fstab"
chroot "$root" passwd -d root >/dev/null
# Root on the serial console, no password: the test types into it.
mkdir -p "$root/etc/systemd/system/serial-getty@ttyS0.service.d"
cat >"$root/etc/systemd/system/serial-getty@ttyS0.service.d/autologin.conf" <<'EOF'
[Service]
ExecStart=
ExecStart=-/sbin/agetty --autologin root --noclear --keep-baud 115200 %I dumb
EOF
# DHCP from qemu's user network.
mkdir -p "$root/etc/systemd/network"
cat >"$root/etc/systemd/network/10-dhcp.network" <<'EOF'
[Match]
Name=en*

[Network]
DHCP=yes
EOF
chroot "$root" systemctl enable systemd-networkd.service >/dev/null 2>&1
# Virtual Bluetooth controllers before bluetoothd: hci0 scans (the box's), hci1 advertises.
cat >"$root/etc/systemd/system/btvirt.service" <<'EOF'
[Unit]
Description=Virtual Bluetooth controllers (btvirt on hci_vhci)
Before=bluetooth.service

[Service]
ExecStartPre=/sbin/modprobe hci_vhci
ExecStart=/usr/bin/btvirt -l2 -L
Restart=on-failure

[Install]
WantedBy=multi-user.target
EOF
chroot "$root" systemctl enable btvirt.service >/dev/null 2>&1
# Nothing the test does not need at boot.
chroot "$root" systemctl mask apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer \
    fstrim.timer >/dev/null 2>&1 || true
rm -rf "$root/var/cache/apt/archives/"*.deb

cp "$root"/boot/vmlinuz-* "$work/vmlinuz"
cp "$root"/boot/initrd.img-* "$work/initrd.img"
chmod 644 "$work/vmlinuz" "$work/initrd.img"
echo "install-vm: making the root image" >&2
mkfs.ext4 -q -L root -d "$root" "$work/root.img" 2G
rm -rf "$root"
touch "$work/ready"
rm -rf "$cache"
mv "$work" "$cache"
echo "$cache"
