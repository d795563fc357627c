//! The runtime and its boxes: the home lock, options checked at create, lifecycle.

mod common;

use boxlite::{BoxOptions, BoxStatus, BoxliteRuntime, EngineChoice, Error, ExecCommand, RuntimeOptions};
use common::{busybox_root, RunDir};

fn runtime(dir: &RunDir) -> boxlite::Result<BoxliteRuntime> {
    BoxliteRuntime::new(RuntimeOptions { home: Some(dir.0.join("home")), engine: EngineChoice::Qemu, ..Default::default() })
}

#[test]
fn a_second_runtime_on_the_same_home_is_refused_until_the_first_is_gone() {
    let dir = RunDir::new("home-lock");
    let first = runtime(&dir).unwrap();
    let error = match runtime(&dir) {
        Ok(_) => panic!("two runtimes on one home"),
        Err(e) => e,
    };
    assert!(matches!(error, Error::HomeLocked { holder_pid: Some(pid), .. } if pid == std::process::id()), "{error}");
    assert!(error.to_string().contains(&format!("pid {}", std::process::id())), "{error}");
    drop(first);
    runtime(&dir).expect("the home is free again");
}

#[test]
fn every_bad_option_fails_at_create_with_its_own_error_and_leaves_nothing() {
    let dir = RunDir::new("bad-options");
    let rt = runtime(&dir).unwrap();
    let cores = std::thread::available_parallelism().unwrap().get();
    let named = |name: &str| BoxOptions { name: Some(name.into()), ..Default::default() };
    rt.create_box(named("taken")).unwrap();
    let cases: Vec<(BoxOptions, &str)> = vec![
        (BoxOptions { vcpus: 0, ..Default::default() }, "vcpus"),
        (BoxOptions { vcpus: (cores + 1) as u8, ..Default::default() }, "vcpus"),
        (BoxOptions { memory_mib: 1, ..Default::default() }, "memory_mib"),
        (BoxOptions { memory_mib: u32::MAX, ..Default::default() }, "memory_mib"),
        (named("taken"), "name"),
        (named("no spaces allowed"), "name"),
        (BoxOptions { image: Some("Not A/Reference!".into()), ..Default::default() }, "image"),
        (BoxOptions { image: Some("localhost/x".into()), disk_size_gib: Some(0), ..Default::default() }, "disk_size_gib"),
        (BoxOptions { image: Some("localhost/x".into()), disk_size_gib: Some(100_000), ..Default::default() }, "disk_size_gib"),
    ];
    let boxes_before = std::fs::read_dir(dir.0.join("home/boxes")).unwrap().count();
    for (options, field) in cases {
        match rt.create_box(options.clone()) {
            Err(Error::InvalidOption { field: f, reason }) => assert_eq!(f, field, "{options:?}: {reason}"),
            Err(other) => panic!("{options:?}: wrong error {other}"),
            Ok(_) => panic!("{options:?} was accepted"),
        }
    }
    assert_eq!(std::fs::read_dir(dir.0.join("home/boxes")).unwrap().count(), boxes_before, "a refused box left files");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_box_starts_lazily_stops_restarts_and_is_removed() {
    let dir = RunDir::new("lifecycle-box");
    let rt = runtime(&dir).unwrap();
    let options = BoxOptions { name: Some("worker".into()), root_disk: Some(busybox_root()), ..Default::default() };
    let lite_box = rt.create_box(options).unwrap();
    assert_eq!(lite_box.status(), BoxStatus::Configured);
    assert_eq!(rt.get_box("worker").unwrap().id(), lite_box.id());

    assert!(lite_box.protections().is_none(), "nothing ran yet");
    let out = lite_box.exec_output(ExecCommand::new("echo").arg("lazy")).await.unwrap();
    assert_eq!(out.stdout, b"lazy\n");
    assert_eq!(lite_box.status(), BoxStatus::Running);
    let protections = lite_box.protections().expect("the box records its protections");
    // A box has a network by default: its gateway installs the netgw policy on itself.
    assert_eq!(protections.seccomp, ["vhost_vsock", "qemu", "supervisor", "netgw"]);
    assert!(protections.uid.is_some() && !protections.namespaces.is_empty() && !protections.cgroups.is_empty());

    let error = rt.remove_box("worker", false).await.unwrap_err();
    assert!(matches!(error, Error::InvalidState { .. }), "{error}");
    lite_box.stop().await.unwrap();
    assert_eq!(lite_box.status(), BoxStatus::Stopped);
    lite_box.start().await.unwrap();
    assert_eq!(lite_box.exec_output(ExecCommand::new("true")).await.unwrap().status.code, Some(0));

    let box_dir = lite_box.dir().to_path_buf();
    rt.remove_box("worker", true).await.unwrap();
    assert_eq!(lite_box.status(), BoxStatus::Removed);
    assert!(!box_dir.exists(), "remove left {}", box_dir.display());
    assert!(rt.get_box("worker").is_none());
    assert!(lite_box.start().await.is_err(), "a removed box cannot start");
}
