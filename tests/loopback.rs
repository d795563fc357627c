//! Loopback in every box (docs/network.md): `lo` is up, and a server on 127.0.0.1 in the box
//! is reached by a client in the same box. Boxes have no other network device yet.

mod common;

use boxlite::ExecCommand;
use common::{boot_busybox, RunDir};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loopback_is_up_and_serves_local_connections() {
    let dir = RunDir::new("loopback");
    let vm = boot_busybox(&dir).await;

    let links = vm.exec_output(ExecCommand::new("ip").args(["-o", "link", "show"])).await.expect("exec ip link");
    let links = String::from_utf8_lossy(&links.stdout).into_owned();
    let names: Vec<&str> = links.lines().filter_map(|line| line.split(": ").nth(1)).collect();
    assert_eq!(names, ["lo"], "only the loopback device:\n{links}");
    let lo_flags = links.split('<').nth(1).and_then(|rest| rest.split('>').next()).unwrap_or_default();
    assert!(lo_flags.split(',').any(|flag| flag == "UP"), "lo is not up: {links}");

    let addresses = vm.exec_output(ExecCommand::new("ip").args(["-o", "-4", "addr", "show", "dev", "lo"])).await.expect("exec ip addr");
    let addresses = String::from_utf8_lossy(&addresses.stdout).into_owned();
    assert!(addresses.contains("inet 127.0.0.1/8"), "lo has no 127.0.0.1/8: {addresses}");

    // A web server bound to 127.0.0.1 and a client in the same box.
    let script = "mkdir -p /tmp/www && echo served-over-loopback > /tmp/www/index.html \
                  && httpd -p 127.0.0.1:8080 -h /tmp/www \
                  && wget -q -O - http://127.0.0.1:8080/index.html";
    let fetched = vm.exec_output(ExecCommand::new("sh").args(["-c", script])).await.expect("exec httpd and wget");
    assert!(fetched.status.success(), "fetch over loopback failed ({:?}): {}", fetched.status, String::from_utf8_lossy(&fetched.stderr));
    assert_eq!(fetched.stdout, b"served-over-loopback\n");
}
