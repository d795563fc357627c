#!/usr/bin/env bash
# Builds the boxlite guest kernel (ELF vmlinux) from Debian's linux-source-6.12 with
# tinyconfig + config.fragment + the patches below, and caches it by a hash of
# (source package version, fragment, this script) under $BOXLITE_CACHE/kernel/<hash>/.
# Prints the path of the cached vmlinux on its last line. Built once per machine.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
: "${BOXLITE_CACHE:=${XDG_CACHE_HOME:-$HOME/.cache}/boxlite}"

version=$(dpkg-query -W -f='${Version}' linux-source-6.12 2>/dev/null) || {
  echo "build-kernel: linux-source-6.12 is not installed; run scripts/setup.sh (it installs it from bookworm-backports)" >&2
  exit 1
}
hash=$( { echo "$version"; cat "$here/config.fragment" "$here/build-kernel.sh"; } | sha256sum | cut -c1-16)
out="$BOXLITE_CACHE/kernel/$hash"
if [ -f "$out/vmlinux" ]; then
  echo "$out/vmlinux"; exit 0
fi

tarball=$(ls /usr/src/linux-source-6.12*.tar.xz | head -n1)
work="$BOXLITE_CACHE/kernel/build-$hash"
rm -rf "$work"; mkdir -p "$work"
echo "build-kernel: extracting $tarball (package $version)" >&2
tar -xf "$tarball" -C "$work" --strip-components=1

cd "$work"
# Patch 1 (boot time): do not poison freed __init memory. Under TCG the poisoned pages are
# re-translated code; skipping the memset saves ~400 ms of boot. Nothing reads that memory.
# (The call spans two lines in 6.12: `free_reserved_area(..., end,\n POISON_FREE_INITMEM, what)`.)
sed -i 's/^\(\s*\)POISON_FREE_INITMEM, what);/\1-1, what);/' arch/x86/mm/init.c
grep -q 'POISON_FREE_INITMEM' arch/x86/mm/init.c \
  && { echo "build-kernel: the init-memory patch no longer applies to arch/x86/mm/init.c" >&2; exit 1; }

export BOXLITE_LAPIC_PATCH='static bool boxlite_lapic_tsc_cal __initdata;
static int __init boxlite_lapic_tsc_cal_setup(char *arg)
{
	boxlite_lapic_tsc_cal = true;
	return 0;
}
early_param("lapic_tsc_calibrate", boxlite_lapic_tsc_cal_setup);

/* Bus clocks per jiffy from the APIC count over 2 ms of TSC (boxlite patch 2). */
static void __init boxlite_lapic_tsc_calibrate(void)
{
	u64 start, cycles = (u64)tsc_khz * 2;
	u32 before = 0, after = 0;
	int pass;

	if (!boxlite_lapic_tsc_cal || !tsc_khz || lapic_timer_period)
		return;
	__setup_APIC_LVTT(0xffffffff, 0, 0);
	/* Twice: under TCG the first pass also pays for translating this code (measured 30% long). */
	for (pass = 0; pass < 2; pass++) {
		before = apic_read(APIC_TMCCT);
		start = rdtsc();
		while (rdtsc() - start < cycles)
			cpu_relax();
		after = apic_read(APIC_TMCCT);
	}
	lapic_timer_period = div_u64((u64)(before - after) * APIC_DIVISOR * 1000, 2 * HZ);
	pr_info("APIC timer: %u bus clocks per jiffy, measured against the TSC\n", lapic_timer_period);
}

'
# Patch 2 (idle cost): `lapic_tsc_calibrate` measures the local APIC timer against the TSC
# (whose rate the command line gives, tsc_early_khz) over 2 ms instead of over 25 PIT ticks,
# which take ~370 ms under TCG. Without it the boot needs `noapictimer` to be fast, and the
# only clock event left is the PIT, whose 15-bit one-shot counter wakes an idle guest at
# least every 27 ms (~55 wakeups/s measured while idle); the APIC timer sleeps for seconds.
perl -0pi -e 's/(static int __init calibrate_APIC_clock\(void\)\n)/$ENV{BOXLITE_LAPIC_PATCH}$1/' arch/x86/kernel/apic/apic.c
perl -0pi -e 's/(\tif \(boot_cpu_has\(X86_FEATURE_TSC_DEADLINE_TIMER\)\)\n\t\treturn 0;\n)/$1\tboxlite_lapic_tsc_calibrate();\n/' arch/x86/kernel/apic/apic.c
grep -q 'boxlite_lapic_tsc_calibrate();' arch/x86/kernel/apic/apic.c \
  && grep -q 'early_param("lapic_tsc_calibrate"' arch/x86/kernel/apic/apic.c \
  || { echo "build-kernel: the APIC calibration patch no longer applies to arch/x86/kernel/apic/apic.c" >&2; exit 1; }

# Patch 3 (memory per box): the vsock driver fills its whole receive ring with 4 KiB
# buffers, and qemu's vhost-user-vsock ring has 1024 entries: 4 MiB of slab in every guest
# (kmalloc-4k, seen in /proc/slabinfo). 64 buffers (256 KiB in flight from the host) move
# stdin as fast as the full ring did (200 MB through `cat`: 5.4-6.1 s against 6.2-6.6 s).
perl -0pi -e 's/(\t\tvsock->rx_buf_nr\+\+;\n\t\} while \(vq->num_free)\);/$1 \&\& vsock->rx_buf_nr < 64);/' net/vmw_vsock/virtio_transport.c
grep -q 'vsock->rx_buf_nr < 64);' net/vmw_vsock/virtio_transport.c \
  || { echo "build-kernel: the vsock receive-ring patch no longer applies to net/vmw_vsock/virtio_transport.c" >&2; exit 1; }

# Patch 4 (idle cost): no fair server. 6.12's deadline server for CFS tasks arms a 1 s timer
# whenever a CFS task wakes on an idle CPU; the deferrable timers that run when it fires
# (vmstat, neighbour tables, ...) wake a kworker, which arms it again: an idle guest woke
# every second for good (traced: dl_task_timer at 1 Hz). A box runs no real-time tasks, and
# the classic RT throttling (sched_rt_runtime_us) still bounds them. Runtime 0 is the
# server's documented "off" (the debugfs knob this kernel does not have).
sed -i 's/^\t\tu64 runtime =  50 \* NSEC_PER_MSEC;$/\t\tu64 runtime = 0; \/* boxlite patch 4 *\//' kernel/sched/deadline.c
grep -q 'u64 runtime = 0; /\* boxlite patch 4' kernel/sched/deadline.c \
  || { echo "build-kernel: the fair-server patch no longer applies to kernel/sched/deadline.c" >&2; exit 1; }

# Patch 5 (streaming): vsock packets stay linear. 6.12 allocates a packet over ~32 KiB
# (PAGE_ALLOC_COSTLY_ORDER) as a paged skb, sent as a header plus several data descriptors;
# vhost-device-vsock 0.3 (virtio-vsock 0.10) reads one data descriptor and drops such a
# packet without returning it, so the sender's credit runs out and the stream stops for good.
# Capping a packet at what fits linearly lets any guest writer use any write size.
perl -0pi -e 's/\tu32 max_skb_len = VIRTIO_VSOCK_MAX_PKT_BUF_SIZE;\n/\tu32 max_skb_len = min_t(u32, VIRTIO_VSOCK_MAX_PKT_BUF_SIZE, \/* boxlite patch 5 *\/\n\t\t\t\t  SKB_WITH_OVERHEAD(PAGE_SIZE << PAGE_ALLOC_COSTLY_ORDER) -\n\t\t\t\t  VIRTIO_VSOCK_SKB_HEADROOM);\n/' net/vmw_vsock/virtio_transport_common.c
grep -q 'boxlite patch 5' net/vmw_vsock/virtio_transport_common.c \
  || { echo "build-kernel: the linear-packet patch no longer applies to net/vmw_vsock/virtio_transport_common.c" >&2; exit 1; }

make -s ARCH=x86_64 tinyconfig >/dev/null
scripts/kconfig/merge_config.sh -m .config "$here/config.fragment" >/dev/null
make -s ARCH=x86_64 olddefconfig >/dev/null
# Every option the fragment asks for must have stuck (a dependency we missed shows up here).
missing=0
while IFS= read -r line; do
  case "$line" in CONFIG_*=n) opt=${line%%=*}; grep -q "^$opt=" .config && { echo "build-kernel: $opt still set" >&2; missing=1; } ;;
                  CONFIG_*=*) grep -qx "$line" .config || { echo "build-kernel: $line did not stick" >&2; missing=1; } ;; esac
done < "$here/config.fragment"
[ "$missing" = 0 ] || exit 1

echo "build-kernel: make vmlinux with $(nproc) jobs (about 10 min on 2 cores)" >&2
make -s ARCH=x86_64 -j"$(nproc)" vmlinux >&2
mkdir -p "$out.tmp"
cp vmlinux "$out.tmp/vmlinux"; cp .config "$out.tmp/config"
echo "$version" > "$out.tmp/source-version"
rm -rf "$out"; mv "$out.tmp" "$out"
cd /; rm -rf "$work"
echo "$out/vmlinux"
