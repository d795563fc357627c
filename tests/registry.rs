//! Pulls from a real registry on loopback: Debian's docker-registry, started here (once
//! without auth, once with htpasswd basic auth), with the busybox test image pushed by
//! skopeo. Everything stays on 127.0.0.1.

mod common;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use boxlite::runtime::images::pull::{Credentials, RegistryOptions};
use boxlite::{BoxOptions, BoxliteRuntime, EngineChoice, Error, ExecCommand, PullErrorKind, RuntimeOptions};
use common::registry::{Registry, PASSWORD, USER};
use common::RunDir;

fn busybox_layout() -> PathBuf {
    let layout = boxlite::runtime::helpers::cache_dir().join("test-images/busybox");
    assert!(layout.join("index.json").is_file(), "run scripts/build-test-images.sh");
    layout
}

fn runtime(dir: &RunDir, registries: RegistryOptions) -> BoxliteRuntime {
    let home: PathBuf = dir.0.join("home");
    BoxliteRuntime::new(RuntimeOptions { home: Some(home), engine: EngineChoice::Qemu, registries, ..Default::default() }).unwrap()
}

fn insecure(registry: &Registry) -> RegistryOptions {
    RegistryOptions { insecure: vec![registry.address.clone()], ..Default::default() }
}

fn pull_error(result: boxlite::Result<boxlite::runtime::images::Image>) -> (PullErrorKind, String) {
    match result {
        Err(Error::Pull { kind, reason, .. }) => (kind, reason),
        Err(other) => panic!("expected a pull error, got {other}"),
        Ok(image) => panic!("pulled {}", image.reference),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_by_tag_and_by_digest_fetching_each_blob_once() {
    let dir = RunDir::new("pull-anon");
    let registry = Registry::start(&dir.0, false);
    let reference = registry.push(&busybox_layout(), "latest", "boxlite/busybox:latest", false);
    let rt = runtime(&dir, insecure(&registry));

    let seen = Arc::new(std::sync::Mutex::new(HashMap::<String, u64>::new()));
    let sink = seen.clone();
    let progress: boxlite::runtime::images::pull::ProgressFn = Arc::new(move |p| {
        sink.lock().unwrap().insert(p.digest.to_string(), p.done);
        true
    });
    let image = rt.images().pull(&reference, Some(progress)).await.unwrap();
    assert_eq!(image.config.working_dir, "/srv");
    let sizes = seen.lock().unwrap().clone();
    assert_eq!(sizes.len(), 3, "config and two layers reported: {sizes:?}");

    // By digest: the same manifest, and nothing fetched again.
    let by_digest = format!("{}/boxlite/busybox@{}", registry.address, image.manifest_digest);
    let blobs_before = rt.images().store().blobs().unwrap().len();
    let again = rt.images().pull(&by_digest, None).await.unwrap();
    assert_eq!(again.manifest_digest, image.manifest_digest);
    assert_eq!(rt.images().store().blobs().unwrap().len(), blobs_before);

    // A digest the registry does not have.
    let wrong = format!("{}/boxlite/busybox@sha256:{}", registry.address, "0".repeat(64));
    let (kind, reason) = pull_error(rt.images().pull(&wrong, None).await);
    assert_eq!(kind, PullErrorKind::NotFound, "{reason}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_images_and_http_registries_give_clear_errors() {
    let dir = RunDir::new("pull-errors");
    let registry = Registry::start(&dir.0, false);
    registry.push(&busybox_layout(), "latest", "boxlite/busybox:latest", false);

    let rt = runtime(&dir, insecure(&registry));
    let (kind, reason) = pull_error(rt.images().pull(&format!("{}/boxlite/nothing:latest", registry.address), None).await);
    assert_eq!(kind, PullErrorKind::NotFound, "{reason}");

    // Not marked insecure: HTTPS is tried, the registry answers HTTP.
    let dir2 = RunDir::new("pull-errors-https");
    let strict = runtime(&dir2, RegistryOptions::default());
    let started = Instant::now();
    let (kind, reason) = pull_error(strict.images().pull(&format!("{}/boxlite/busybox:latest", registry.address), None).await);
    assert_eq!(kind, PullErrorKind::InsecureRegistry, "{reason}");
    assert!(reason.contains("insecure"), "the error must say how to allow it: {reason}");
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_auth_registry_needs_the_right_credentials() {
    let dir = RunDir::new("pull-auth");
    let registry = Registry::start(&dir.0, true);
    let reference = registry.push(&busybox_layout(), "latest", "boxlite/busybox:latest", true);

    let anonymous = runtime(&RunDir::new("pull-auth-anon"), insecure(&registry));
    let (kind, reason) = pull_error(anonymous.images().pull(&reference, None).await);
    assert_eq!(kind, PullErrorKind::Unauthorized, "{reason}");

    let mut wrong = insecure(&registry);
    wrong.credentials.insert(registry.address.clone(), Credentials::Basic { username: USER.into(), password: "wrong".into() });
    let (kind, reason) = pull_error(runtime(&RunDir::new("pull-auth-wrong"), wrong).images().pull(&reference, None).await);
    assert_eq!(kind, PullErrorKind::Unauthorized, "{reason}");

    let mut right = insecure(&registry);
    right.credentials.insert(registry.address.clone(), Credentials::Basic { username: USER.into(), password: PASSWORD.into() });
    let rt = runtime(&dir, right);
    let image = rt.images().pull(&reference, None).await.unwrap();
    assert_eq!(image.reference, reference);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_boxes_of_an_uncached_image_start_with_one_pull_and_one_disk_build() {
    let dir = RunDir::new("pull-boxes");
    let registry = Registry::start(&dir.0, false);
    let reference = registry.push(&busybox_layout(), "latest", "boxlite/busybox:latest", false);
    let rt = runtime(&dir, insecure(&registry));
    let options = |name: &str| BoxOptions { name: Some(name.into()), image: Some(reference.clone()), ..Default::default() };
    let (a, b) = (rt.create_box(options("a")).unwrap(), rt.create_box(options("b")).unwrap());
    assert_eq!(rt.images().pulls(), 0, "creating a box pulls nothing");
    let (ra, rb) = tokio::join!(a.start(), b.start());
    ra.unwrap();
    rb.unwrap();
    assert_eq!((rt.images().pulls(), rt.images().disks_built()), (1, 1));
    let out = b.exec_output(ExecCommand::new("cat").arg("/etc/os-release")).await.unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("boxlite-busybox"));
    a.stop().await.unwrap();
    b.stop().await.unwrap();
}
