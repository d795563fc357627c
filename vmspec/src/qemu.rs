//! The qemu engine's command lines: `qemu-system-x86_64 -M microvm` with virtio-mmio devices,
//! and `vhost-device-vsock` as its vsock backend. The shim runs both; building the argv here
//! keeps it testable without a VM.

use std::ffi::OsString;

use crate::network::GUEST_MAC;
use crate::spec::{DiskFormat, VmSpec, GUEST_CID};

/// The descriptor qemu gets its end of the network frame socket on (`-netdev stream`).
pub const QEMU_NET_FD: i32 = 3;

/// The TCG translation cache bound in MiB (`-accel tcg,tb-size=`).
pub const TCG_TB_SIZE_MIB: u32 = 16;

/// Arguments for vhost-device-vsock serving this VM's vsock.
pub fn vhost_vsock_args(spec: &VmSpec) -> Vec<OsString> {
    vec![
        "--guest-cid".into(),
        GUEST_CID.to_string().into(),
        "--socket".into(),
        spec.vhost_user_socket().into(),
        "--uds-path".into(),
        spec.vsock_socket().into(),
    ]
}

/// Arguments for qemu-system-x86_64.
pub fn qemu_args(spec: &VmSpec) -> Vec<OsString> {
    let mut args: Vec<OsString> = Vec::new();
    let mut push = |items: &[&str]| args.extend(items.iter().map(OsString::from));
    let memory = format!("{}M", spec.memory_mib);
    push(&["-nodefaults", "-no-user-config", "-nographic", "-no-reboot"]);
    // qemu's own seccomp filter: no obsolete syscalls, no privilege changes, no fork/exec,
    // no resource-control calls (qemu needs none of them to run a microvm).
    push(&["-sandbox", "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny"]);
    // microvm: virtio-mmio only, no PCI, no firmware tables to build. vhost-user needs the
    // guest RAM in a shared memfd, else the backend cannot reach the rings and vsock is dead.
    push(&["-M", "microvm,acpi=off,memory-backend=mem"]);
    if spec.hardware_acceleration {
        push(&["-accel", "kvm", "-cpu", "host"]);
    } else {
        // The translation cache is the largest part of an idle TCG box's own memory: qemu's
        // default lets it grow to 1 GiB (an idle box had touched ~26 MiB of it). Bounded,
        // it is flushed and refilled when full (docs/boot.md: the size against exec speed).
        push(&["-accel", &format!("tcg,tb-size={TCG_TB_SIZE_MIB}")]);
    }
    push(&["-object", &format!("memory-backend-memfd,id=mem,size={memory},share=on")]);
    push(&["-m", &memory, "-smp", &spec.vcpus.to_string()]);
    push(&["-chardev", &format!("file,id=console,path={}", spec.console_log().display())]);
    push(&["-serial", "chardev:console"]);
    push(&["-kernel", &spec.kernel.to_string_lossy()]);
    push(&["-initrd", &spec.initramfs.to_string_lossy()]);
    push(&["-append", &spec.cmdline]);
    push(&["-chardev", &format!("socket,id=vsock,path={}", spec.vhost_user_socket().display())]);
    push(&["-device", "vhost-user-vsock-device,chardev=vsock"]);
    // Free page reporting: the guest reports the pages it frees and qemu punches them out of
    // the guest RAM memfd, so an idle box holds what it uses, not what it ever touched.
    push(&["-device", "virtio-balloon-device,free-page-reporting=on"]);
    for disk in &spec.disks {
        let format = match disk.format {
            DiskFormat::Raw => "raw",
            DiskFormat::Qcow2 => "qcow2",
        };
        let read_only = if disk.read_only { "on" } else { "off" };
        push(&[
            "-drive",
            &format!("id={},file={},format={format},if=none,read-only={read_only},cache=unsafe", disk.id, disk.path.display()),
        ]);
        push(&["-device", &format!("virtio-blk-device,drive={},serial={}", disk.id, disk.id)]);
    }
    if spec.network.is_some() {
        // The gateway's frames (4-byte length, then the Ethernet frame) on an inherited,
        // already connected socket: no path for the jailed VMM to reach.
        push(&["-netdev", &format!("stream,id=net0,server=off,addr.type=fd,addr.str={QEMU_NET_FD}")]);
        let mac = GUEST_MAC.map(|b| format!("{b:02x}")).join(":");
        push(&["-device", &format!("virtio-net-device,netdev=net0,mac={mac}")]);
    }
    // One vhost-user-fs device per share, each served by its own virtiofsd on a socket the
    // shim listens on (guest RAM is the shared memfd above, which virtiofsd maps).
    for (index, share) in spec.shares.iter().enumerate() {
        push(&["-chardev", &format!("socket,id=fs{index},path={}", spec.share_socket(index).display())]);
        push(&["-device", &format!("vhost-user-fs-device,chardev=fs{index},tag={}", share.tag)]);
    }
    args
}

/// The descriptor virtiofsd gets its listening vhost-user socket on (`--fd`).
pub const VIRTIOFSD_LISTEN_FD: i32 = 3;

/// Arguments for the virtiofsd serving share `index`, running as host uid `uid` and gid
/// `gid` (the shared directory's owner, or the shim's own ids when it does not switch).
///
/// Every guest uid and gid is squashed to that one owner (the only ids an unprivileged
/// server can create files as), and the owner shows in the guest as root. The server gets
/// its listening socket as a descriptor, runs with no sandbox of its own (the shim's jail is
/// the sandbox) and without its own seccomp filter (the shim installs ours), keeps no file
/// handles (those need CAP_DAC_READ_SEARCH), and leaves its descriptor limit as set.
pub fn virtiofsd_args(spec: &VmSpec, index: usize, uid: u32, gid: u32) -> Vec<OsString> {
    let share = &spec.shares[index];
    let mut args: Vec<OsString> = vec![
        format!("--fd={VIRTIOFSD_LISTEN_FD}").into(),
        "--shared-dir".into(),
        share.host_path.clone().into(),
        format!("--tag={}", share.tag).into(),
        "--sandbox=none".into(),
        "--seccomp=none".into(),
        "--inode-file-handles=never".into(),
        "--cache=auto".into(),
        "--rlimit-nofile=0".into(),
        format!("--translate-uid=squash-guest:0:{uid}:4294967295").into(),
        format!("--translate-gid=squash-guest:0:{gid}:4294967295").into(),
        format!("--translate-uid=host:{uid}:0:1").into(),
        format!("--translate-gid=host:{gid}:0:1").into(),
    ];
    if uid == 0 {
        // As uid 0 virtiofsd keeps a set of capabilities it asks for; it gets none from us,
        // so ask for none (else its capng_apply fails).
        args.push("--modcaps=-chown:-dac_override:-fowner:-fsetid:-setgid:-setuid:-mknod:-setfcap".into());
    }
    if share.read_only {
        args.push("--readonly".into());
    }
    args
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::EngineKind;
    use crate::spec::DiskSpec;
    use std::path::PathBuf;

    fn spec(hw: bool) -> VmSpec {
        VmSpec {
            engine: EngineKind::Qemu,
            hardware_acceleration: hw,
            kernel: "/k/vmlinux".into(),
            initramfs: "/k/initramfs.cpio".into(),
            cmdline: "quiet console=ttyS0".into(),
            vcpus: 2,
            memory_mib: 256,
            disks: vec![DiskSpec { id: "root".into(), path: PathBuf::from("/b/root.qcow2"), format: DiskFormat::Qcow2, read_only: false }],
            host_to_guest_ports: vec![1024],
            guest_to_host_ports: vec![1025],
            run_dir: "/b".into(),
            qemu: None,
            vhost_vsock: None,
            virtiofsd: None,
            detached: false,
            jail: Default::default(),
            network: None,
            shares: Vec::new(),
        }
    }

    fn joined(args: Vec<OsString>) -> String {
        args.into_iter().map(|a| a.into_string().unwrap()).collect::<Vec<_>>().join(" ")
    }

    #[test]
    fn tcg_microvm_with_shared_memory_and_vsock() {
        let line = joined(qemu_args(&spec(false)));
        assert!(line.contains("-M microvm,acpi=off,memory-backend=mem"), "{line}");
        assert!(line.contains(&format!("-accel tcg,tb-size={TCG_TB_SIZE_MIB}")), "{line}");
        assert!(line.contains("-device virtio-balloon-device,free-page-reporting=on"), "{line}");
        assert!(!line.contains("-cpu host"), "{line}");
        assert!(line.contains("memory-backend-memfd,id=mem,size=256M,share=on"), "{line}");
        assert!(line.contains("-device vhost-user-vsock-device,chardev=vsock"), "{line}");
        assert!(line.contains("-append quiet console=ttyS0"), "{line}");
        assert!(line.contains("file=/b/root.qcow2,format=qcow2"), "{line}");
        assert!(line.contains("path=/b/vmm/console.log"), "{line}");
        assert!(line.contains("-sandbox on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny"), "{line}");
    }

    #[test]
    fn kvm_when_hardware_acceleration() {
        let line = joined(qemu_args(&spec(true)));
        assert!(line.contains("-accel kvm -cpu host"), "{line}");
        assert!(!line.contains("tb-size"), "{line}");
    }

    #[test]
    fn network_device_only_with_a_network() {
        assert!(!joined(qemu_args(&spec(false))).contains("netdev"));
        let mut with_network = spec(false);
        with_network.network = Some(crate::network::NetworkSpec {
            egress: crate::network::EgressPolicy::DenyAll,
            dns_upstreams: Vec::new(),
            forwards: Vec::new(),
            gateway: "/g/boxlite-netgw".into(),
        });
        let line = joined(qemu_args(&with_network));
        assert!(line.contains("-netdev stream,id=net0,server=off,addr.type=fd,addr.str=3"), "{line}");
        assert!(line.contains("-device virtio-net-device,netdev=net0,mac=52:54:00:12:34:56"), "{line}");
    }

    #[test]
    fn one_vhost_user_fs_device_per_share() {
        assert!(!joined(qemu_args(&spec(false))).contains("vhost-user-fs"));
        let mut shared = spec(false);
        shared.shares = vec![
            crate::spec::ShareSpec { tag: "vol0".into(), host_path: "/data".into(), read_only: false },
            crate::spec::ShareSpec { tag: "vol1".into(), host_path: "/ro".into(), read_only: true },
        ];
        let line = joined(qemu_args(&shared));
        assert!(line.contains("-chardev socket,id=fs0,path=/b/vmm/fs-0.sock -device vhost-user-fs-device,chardev=fs0,tag=vol0"), "{line}");
        assert!(line.contains("-chardev socket,id=fs1,path=/b/vmm/fs-1.sock -device vhost-user-fs-device,chardev=fs1,tag=vol1"), "{line}");
        let rw = joined(virtiofsd_args(&shared, 0, 4242, 4343));
        assert!(rw.contains("--fd=3 --shared-dir /data --tag=vol0 --sandbox=none"), "{rw}");
        assert!(rw.contains("--translate-uid=squash-guest:0:4242:4294967295"), "{rw}");
        assert!(rw.contains("--translate-gid=host:4343:0:1"), "{rw}");
        assert!(!rw.contains("--readonly") && !rw.contains("--modcaps"), "{rw}");
        let ro = joined(virtiofsd_args(&shared, 1, 0, 0));
        assert!(ro.ends_with("--readonly") && ro.contains("--modcaps=-chown"), "{ro}");
        assert!(shared.socket_files().contains(&PathBuf::from("/b/vmm/fs-1.sock")));
    }

    #[test]
    fn vhost_backend_uses_the_box_sockets() {
        let line = joined(vhost_vsock_args(&spec(false)));
        assert_eq!(line, "--guest-cid 3 --socket /b/vmm/vhost-vsock.sock --uds-path /b/vmm/vsock.sock");
    }
}
