//! Images: import from an OCI layout, verification, our layer assembly against umoci's,
//! and boxes that run an image (its Env and WorkingDir applied, its base disk built once).
//! The busybox test image comes from scripts/build-test-images.sh (scripts/test.sh runs it).

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use boxlite::runtime::images::disk;
use boxlite::{BoxOptions, BoxliteRuntime, EngineChoice, Error, ExecCommand, RuntimeOptions};
use common::RunDir;
use sha2::{Digest, Sha256};

const NAME: &str = "localhost/boxlite/busybox:latest";

fn busybox_layout() -> PathBuf {
    let path = boxlite::runtime::helpers::cache_dir().join("test-images/busybox");
    assert!(path.join("index.json").is_file(), "{} is missing: run scripts/build-test-images.sh (scripts/test.sh does)", path.display());
    path
}

fn runtime(dir: &RunDir) -> BoxliteRuntime {
    BoxliteRuntime::new(RuntimeOptions { home: Some(dir.0.join("home")), engine: EngineChoice::Qemu, ..Default::default() }).unwrap()
}

#[test]
fn an_oci_layout_imports_with_its_config() {
    let dir = RunDir::new("img-import");
    let rt = runtime(&dir);
    let image = rt.images().import_layout(&busybox_layout(), Some("latest"), NAME).unwrap();
    assert_eq!(image.reference, NAME);
    assert_eq!(image.config.working_dir, "/srv");
    assert!(image.config.env.contains(&"BOXLITE_IMAGE=busybox".to_string()));
    assert_eq!(image.config.cmd, vec!["sh"]);
    assert_eq!(rt.images().get("localhost/boxlite/busybox").unwrap().unwrap().manifest_digest, image.manifest_digest);
    assert_eq!(rt.images().list().unwrap().len(), 1);
    // Unknown tags and layouts are clear errors.
    let missing = rt.images().import_layout(&busybox_layout(), Some("nope"), NAME).unwrap_err();
    assert!(matches!(missing, Error::NotFound { .. }), "{missing}");
    let not_layout = rt.images().import_layout(&dir.0, None, NAME).unwrap_err();
    assert!(not_layout.to_string().contains("not an OCI image layout"), "{not_layout}");
    // Malformed references fail before anything is read.
    assert!(rt.images().import_layout(&busybox_layout(), None, "Bad Name!").is_err());
    // Nothing references a blob after untag: gc removes them all.
    rt.remove_image(NAME, false).unwrap();
    assert!(rt.images().gc().unwrap() >= 4);
    assert!(rt.images().store().blobs().unwrap().is_empty());
}

#[test]
fn a_corrupted_blob_is_rejected_and_leaves_nothing_in_the_cache() {
    let dir = RunDir::new("img-corrupt");
    let layout = dir.0.join("layout");
    let status = Command::new("cp").arg("-a").arg(busybox_layout()).arg(&layout).status().unwrap();
    assert!(status.success());
    // Flip one byte in the biggest blob (the first layer), keeping its name and size.
    let biggest =
        std::fs::read_dir(layout.join("blobs/sha256")).unwrap().flatten().max_by_key(|e| e.metadata().unwrap().len()).unwrap().path();
    let mut bytes = std::fs::read(&biggest).unwrap();
    bytes[1000] ^= 0xff;
    std::fs::write(&biggest, bytes).unwrap();

    let rt = runtime(&dir);
    let error = rt.images().import_layout(&layout, Some("latest"), NAME).unwrap_err();
    assert!(error.to_string().contains("failed verification"), "{error}");
    let bad = format!("sha256:{}", biggest.file_name().unwrap().to_string_lossy());
    assert!(!rt.images().store().blobs().unwrap().iter().any(|d| d.as_str() == bad), "the corrupt blob entered the cache");
    assert!(rt.images().list().unwrap().is_empty(), "a half import was tagged");
    let tmp = rt.home().join("images/tmp");
    assert_eq!(std::fs::read_dir(tmp).unwrap().count(), 0, "temp files left");
}

/// Paths, types, modes, owners, link targets and content hashes of a tree.
fn listing(root: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            let path = entry.path();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            let rel = path.strip_prefix(root).unwrap().display().to_string();
            let what = if meta.file_type().is_symlink() {
                format!("-> {}", std::fs::read_link(&path).unwrap().display())
            } else if meta.is_dir() {
                "dir".into()
            } else {
                format!("{:x}", Sha256::digest(std::fs::read(&path).unwrap()))
            };
            let mode = if meta.file_type().is_symlink() { 0 } else { meta.permissions().mode() & 0o7777 };
            out.push(format!("{rel} {mode:o} {}:{} {what}", meta.uid(), meta.gid()));
            if meta.is_dir() {
                walk(root, &path, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(root, root, &mut out);
    out.sort();
    out
}

#[test]
fn our_assembled_tree_equals_umocis() {
    let dir = RunDir::new("img-umoci");
    let rt = runtime(&dir);
    let image = rt.images().import_layout(&busybox_layout(), Some("latest"), NAME).unwrap();
    let ours = dir.0.join("ours");
    disk::assemble_rootfs(rt.images().store(), &image.manifest_digest, &ours).unwrap();

    let bundle = dir.0.join("bundle");
    let output = Command::new("umoci")
        .args(["unpack", "--image"])
        .arg(format!("{}:latest", busybox_layout().display()))
        .arg(&bundle)
        .output()
        .expect("umoci is installed by scripts/setup.sh");
    assert!(output.status.success(), "umoci unpack: {}", String::from_utf8_lossy(&output.stderr));
    let theirs = listing(&bundle.join("rootfs"));
    let mine = listing(&ours);
    assert!(mine.iter().any(|l| l.starts_with("opt/old/b ")), "the second layer's file is there");
    assert!(!mine.iter().any(|l| l.starts_with("opt/old/a ") || l.starts_with("etc/motd ")), "whiteouts applied");
    assert_eq!(mine, theirs, "our tree differs from umoci's");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn boxes_run_the_image_with_its_config_and_share_one_base_disk() {
    let dir = RunDir::new("img-boxes");
    let rt = runtime(&dir);
    rt.images().import_layout(&busybox_layout(), Some("latest"), NAME).unwrap();
    let options = |name: &str| BoxOptions { name: Some(name.into()), image: Some(NAME.into()), ..Default::default() };
    let (a, b) = (rt.create_box(options("a")).unwrap(), rt.create_box(options("b")).unwrap());
    assert_eq!(rt.images().disks_built(), 0, "nothing is built at create");

    // Both start at once: the base disk is built once.
    let (ra, rb) = tokio::join!(a.start(), b.start());
    ra.unwrap();
    rb.unwrap();
    assert_eq!(rt.images().disks_built(), 1);

    let os_release = a.exec_output(ExecCommand::new("cat").arg("/etc/os-release")).await.unwrap();
    assert!(String::from_utf8_lossy(&os_release.stdout).contains("ID=boxlite-busybox"));
    assert_eq!(a.exec_output(ExecCommand::new("pwd")).await.unwrap().stdout, b"/srv\n", "the image's WorkingDir");
    let env = String::from_utf8(a.exec_output(ExecCommand::new("env")).await.unwrap().stdout).unwrap();
    assert!(env.lines().any(|l| l == "BOXLITE_IMAGE=busybox"), "the image's Env: {env}");
    let overridden = a.exec_output(ExecCommand::new("sh").args(["-c", "echo $BOXLITE_IMAGE"]).env("BOXLITE_IMAGE", "mine")).await.unwrap();
    assert_eq!(overridden.stdout, b"mine\n", "exec env overrides the image's");
    let layers = a.exec_output(ExecCommand::new("ls").args(["/opt/old", "/etc/motd"])).await.unwrap();
    assert_eq!(layers.stdout, b"/opt/old:\nb\n", "whiteouts: {:?}", String::from_utf8_lossy(&layers.stderr));
    // No program: the image's Cmd (sh) reading an empty stdin.
    assert_eq!(a.exec_output(ExecCommand::default()).await.unwrap().status.code, Some(0));

    // Each box writes to its own overlay; the base stays shared and unchanged.
    a.exec_output(ExecCommand::new("sh").args(["-c", "echo only-a > /srv/mark; sync"])).await.unwrap();
    let in_b = b.exec_output(ExecCommand::new("cat").arg("/srv/mark")).await.unwrap();
    assert_ne!(in_b.status.code, Some(0), "b sees a's write");
    a.stop().await.unwrap();
    a.start().await.unwrap();
    assert_eq!(a.exec_output(ExecCommand::new("cat").arg("/srv/mark")).await.unwrap().stdout, b"only-a\n", "a's write survives a restart");
    assert_eq!(rt.images().disks_built(), 1);

    let error = rt.remove_image(NAME, false).unwrap_err();
    assert!(matches!(error, Error::InvalidState { .. }), "an image in use is not removed: {error}");
    a.stop().await.unwrap();
    b.stop().await.unwrap();
}

#[test]
fn an_uncached_image_is_pulled_at_start_and_an_unreachable_registry_is_a_clear_error() {
    let dir = RunDir::new("img-missing");
    let rt = runtime(&dir);
    // Nothing listens on 127.0.0.1:9 (discard): the lazy pull at start fails fast.
    let lite_box = rt.create_box(BoxOptions { image: Some("127.0.0.1:9/nothing:here".into()), ..Default::default() }).unwrap();
    let error = tokio::runtime::Runtime::new().unwrap().block_on(lite_box.start()).unwrap_err();
    assert!(matches!(error, Error::Pull { .. }), "{error}");
    let text = error.to_string();
    assert!(text.contains("127.0.0.1:9/nothing:here") && text.contains("cannot connect"), "{text}");
    let bad = rt.create_box(BoxOptions { image: Some("UPPER/case:bad tag".into()), ..Default::default() });
    assert!(matches!(bad, Err(Error::InvalidOption { field: "image", .. })));
}

#[test]
fn oci_and_docker_archives_import_to_the_same_tree() {
    let dir = RunDir::new("img-archives");
    let rt = runtime(&dir);
    let from_layout = rt.images().import_layout(&busybox_layout(), Some("latest"), NAME).unwrap();

    let oci_tar = dir.0.join("busybox-oci.tar");
    assert!(Command::new("tar").arg("-C").arg(busybox_layout()).arg("-cf").arg(&oci_tar).arg(".").status().unwrap().success());
    let from_oci = rt.images().import_archive(&oci_tar, Some("latest"), "localhost/from-oci-archive").unwrap();
    assert_eq!(from_oci.manifest_digest, from_layout.manifest_digest, "the same blobs, the same manifest");

    let docker_tar = dir.0.join("busybox-docker.tar");
    let output = Command::new("skopeo")
        .args(["copy", "--quiet"])
        .arg(format!("oci:{}:latest", busybox_layout().display()))
        .arg(format!("docker-archive:{}:localhost/boxlite/busybox:v1", docker_tar.display()))
        .output()
        .expect("skopeo is installed by scripts/setup.sh");
    assert!(output.status.success(), "skopeo: {}", String::from_utf8_lossy(&output.stderr));
    let from_docker = rt.images().import_archive(&docker_tar, Some("v1"), "localhost/from-docker-archive").unwrap();
    assert_eq!(from_docker.config, from_layout.config, "Env, Cmd and WorkingDir survive docker save");
    let missing = rt.images().import_archive(&docker_tar, Some("v2"), "localhost/x").unwrap_err();
    assert!(matches!(missing, Error::NotFound { .. }), "{missing}");

    let (a, b) = (dir.0.join("tree-layout"), dir.0.join("tree-docker"));
    disk::assemble_rootfs(rt.images().store(), &from_layout.manifest_digest, &a).unwrap();
    disk::assemble_rootfs(rt.images().store(), &from_docker.manifest_digest, &b).unwrap();
    assert_eq!(listing(&a), listing(&b));

    let not_archive = dir.0.join("not-an-archive.tar");
    assert!(Command::new("tar").arg("-C").arg(&a).arg("-cf").arg(&not_archive).arg("etc").status().unwrap().success());
    let error = rt.images().import_archive(&not_archive, None, "localhost/x").unwrap_err();
    assert!(error.to_string().contains("neither an OCI archive"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_runs_in_a_box_of_the_debootstrapped_python_image() {
    let dir = RunDir::new("img-python");
    let rt = common::qemu_runtime_with_python(&dir);
    let python = rt.create_box(BoxOptions { image: Some(common::PYTHON_IMAGE.into()), memory_mib: 512, ..Default::default() }).unwrap();
    let out = python
        .exec_output(ExecCommand::new("python3").args(["-c", "import sys, os; print(sum(range(10)), sys.version_info[0], os.getcwd())"]))
        .await
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "45 3 /root\n", "stderr: {}", String::from_utf8_lossy(&out.stderr));
    python.stop().await.unwrap();
}
