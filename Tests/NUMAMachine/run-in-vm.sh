#!/usr/bin/env bash
# Runs a command inside a freshly booted emulated NUMA machine and exits with its status.
#
# The development machine has one NUMA node, so placement and migration cannot be tested on it.
# This boots Debian's kernel under qemu with N memory-backed nodes (one CPU each by default) and a
# busybox initramfs holding the given files at their own absolute paths (with every shared library
# `ldd` lists for them), runs COMMAND as root, prints its output live and exits with its status.
#
# Only COMMAND's output reaches the terminal, without terminal control sequences: the machine's
# firmware and kernel send its serial console ones that reset the terminal, clear the screen and turn
# line wrapping off. The whole console (firmware, boot, kernel messages) goes to --console FILE, or
# to a temporary file that is shown, cleaned, only if the machine stops without COMMAND's status.
#
#   run-in-vm.sh [--nodes N] [--memory-per-node MiB] [--cpus-per-node K] [--timeout S]
#                [--accel auto|kvm|tcg] [--console FILE] [--file PATH]... [--dir PATH]... -- COMMAND [ARGS...]
set -euo pipefail

nodes=2
memory_per_node=1024
cpus_per_node=1
timeout_seconds=600
accel=tcg
console=
files=()
dirs=()
while [ $# -gt 0 ]; do
  case "$1" in
    --nodes) nodes=$2; shift 2 ;;
    --memory-per-node) memory_per_node=$2; shift 2 ;;
    --cpus-per-node) cpus_per_node=$2; shift 2 ;;
    --timeout) timeout_seconds=$2; shift 2 ;;
    --accel) accel=$2; shift 2 ;;
    --console) console=$2; shift 2 ;;
    --file) files+=("$2"); shift 2 ;;
    --dir) dirs+=("$2"); shift 2 ;;
    --) shift; break ;;
    *) echo "run-in-vm: unknown option $1" >&2; exit 2 ;;
  esac
done
[ $# -gt 0 ] || { echo "run-in-vm: missing -- COMMAND" >&2; exit 2; }

missing=()
command -v qemu-system-x86_64 >/dev/null || missing+=(qemu-system-x86)
command -v cpio >/dev/null || missing+=(cpio)
[ -x /bin/busybox ] || missing+=(busybox-static)
command -v numactl >/dev/null || missing+=(numactl)
kernel=$(ls -1 /boot/vmlinuz-* 2>/dev/null | sort -V | tail -n 1 || true)
[ -n "$kernel" ] || missing+=(linux-image-amd64)
if [ ${#missing[@]} -gt 0 ]; then
  echo "run-in-vm: missing ${missing[*]}. Install: apt-get install -y ${missing[*]}" >&2
  exit 3
fi

work=$(mktemp -d /tmp/xpmem-vm-XXXXXX)
trap 'rm -rf "$work"' EXIT
root=$work/root
mkdir -p "$root"/{bin,sbin,etc,proc,sys,dev,tmp,run,root}

# Copies a file to the same path under the initramfs root, with the libraries it needs.
copy_with_libraries() {
  local path=$1
  mkdir -p "$root$(dirname "$path")"
  cp -L "$path" "$root$path"
  if [ -x "$path" ] && ldd "$path" >/dev/null 2>&1; then
    ldd "$path" | grep -o '/[^ ]*' | while read -r library; do
      if [ -e "$library" ] && [ ! -e "$root$library" ]; then
        mkdir -p "$root$(dirname "$library")"
        cp -L "$library" "$root$library"
      fi
    done
  fi
}

cp /bin/busybox "$root/bin/busybox"
copy_with_libraries "$(command -v numactl)"
for file in "${files[@]}"; do copy_with_libraries "$file"; done
for dir in "${dirs[@]}"; do
  find "$dir" -maxdepth 1 -type f | while read -r file; do copy_with_libraries "$file"; done
done

printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/sh\n' >"$root/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' >"$root/etc/group"

# The command, quoted for the init script.
quoted=$(printf '%q ' "$@")
cat >"$root/init" <<EOF
#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin:/sbin:/usr/bin:/usr/sbin HOME=/root
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
# No tmpfs over /tmp: the initramfs root is already writable memory, and the programs may live
# under /tmp (a checkout there) at their own paths.
chmod 1777 /tmp
mount -t tmpfs run /run
echo "XPMEM-VM-START"
$quoted
echo "XPMEM-VM-EXIT-STATUS=\$?"
poweroff -f
EOF
chmod +x "$root/init"
(cd "$root" && find . | cpio -o -H newc --quiet | gzip -1) >"$work/initramfs.gz"

if [ "$accel" = auto ]; then
  if [ -r /dev/kvm ] && [ -w /dev/kvm ]; then accel=kvm; else accel=tcg; fi
fi
machine=(-accel "$accel")
# Software emulation is the default: it is what CI machines have, and on this nested VM a KVM guest
# hung at boot (and -cpu host failed on MSR 0x10a). --accel kvm is there for machines where it works.

numa=()
for ((node = 0; node < nodes; node++)); do
  first=$((node * cpus_per_node))
  last=$((first + cpus_per_node - 1))
  numa+=(-object "memory-backend-ram,id=m$node,size=${memory_per_node}M"
         -numa "node,nodeid=$node,cpus=$first-$last,memdev=m$node")
done

# Removes terminal control sequences (CSI ones such as ESC[2J and ESC[?7l, OSC strings, two-byte
# ones such as ESC c) and the other control characters but tab, carriage returns included.
strip_terminal_controls() {
  LC_ALL=C sed -u -e 's|\x1b\[[0-?]*[ -/]*[@-~]||g' -e 's/\x1b[]P^_][^\x07\x1b]*\(\x07\|\x1b\\\)\{0,1\}//g' \
    -e 's/\x1b.//g' -e 's/[\x01-\x08\x0b-\x1f\x7f]//g'
}

# The lines COMMAND printed: those between the init script's markers.
command_output() {
  LC_ALL=C sed -u -n -e '/XPMEM-VM-START/,/XPMEM-VM-EXIT-STATUS=/{' -e '/XPMEM-VM-START\|XPMEM-VM-EXIT-STATUS=/d' -e 'p' -e '}'
}

echo "run-in-vm: $nodes nodes x ${memory_per_node} MiB, $((nodes * cpus_per_node)) CPUs, $accel, kernel $kernel"
log=${console:-$work/console.log}
mkdir -p "$(dirname "$log")"
status=0
# SIGTERM first (qemu exits on it); timeout then exits 124. SIGKILL only if qemu does not, since a
# KILL reaches timeout itself too and bash reports the job as killed.
timeout --kill-after=10 "$timeout_seconds" qemu-system-x86_64 "${machine[@]}" \
  -m "$((nodes * memory_per_node))M" -smp "$((nodes * cpus_per_node))" "${numa[@]}" \
  -kernel "$kernel" -initrd "$work/initramfs.gz" -nographic -no-reboot \
  -append "console=ttyS0 panic=-1 quiet loglevel=3" </dev/null 2>&1 \
  | tee "$log" | strip_terminal_controls | command_output || status=$?

exit_line=$(grep -a -o 'XPMEM-VM-EXIT-STATUS=[0-9]*' "$log" | tail -n 1 || true)
if [ -z "$exit_line" ]; then
  if [ -n "$console" ]; then
    echo "run-in-vm: the machine's console is in $console; its last lines:" >&2
  else
    echo "run-in-vm: the machine's console ended with:" >&2
  fi
  strip_terminal_controls <"$log" | tail -n 30 | sed 's/^/  | /' >&2
  if [ "$status" = 124 ] || [ "$status" = 137 ]; then
    echo "run-in-vm: the machine did not finish within $timeout_seconds s" >&2
    exit 124
  fi
  echo "run-in-vm: the machine stopped without reporting the command's status" >&2
  exit 1
fi
command_status=${exit_line#XPMEM-VM-EXIT-STATUS=}
if [ "$command_status" != 0 ]; then
  echo "run-in-vm: the command exited with status $command_status${console:+ (whole console: $console)}" >&2
fi
exit "$command_status"
