//! A real OCI registry on loopback for tests and benchmarks: Debian's docker-registry on
//! 127.0.0.1 (optionally with htpasswd basic auth), images pushed with skopeo.

use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const USER: &str = "boxlite";
pub const PASSWORD: &str = "s3cret-for-tests";

pub struct Registry {
    child: Child,
    pub address: String,
}

impl Registry {
    /// Starts docker-registry on a free loopback port, with htpasswd auth if `auth`.
    pub fn start(dir: &Path, auth: bool) -> Registry {
        // A free port can be taken by a registry another test starts at the same moment;
        // then ours fails to bind and exits, and we try again on another port.
        for _ in 0..5 {
            if let Some(registry) = Self::try_start(dir, auth) {
                return registry;
            }
        }
        panic!("docker-registry did not start on a free loopback port in 5 tries");
    }

    fn try_start(dir: &Path, auth: bool) -> Option<Registry> {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let address = format!("127.0.0.1:{port}");
        let storage = dir.join("registry-data");
        std::fs::create_dir_all(&storage).unwrap();
        let mut config = format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {address}\n",
            storage.display()
        );
        if auth {
            let output = Command::new("htpasswd").args(["-Bbn", USER, PASSWORD]).output().expect("htpasswd (apache2-utils)");
            assert!(output.status.success());
            let htpasswd = dir.join("htpasswd");
            std::fs::write(&htpasswd, output.stdout).unwrap();
            config.push_str(&format!("auth:\n  htpasswd:\n    realm: boxlite-test\n    path: {}\n", htpasswd.display()));
        }
        let config_path = dir.join("registry.yml");
        std::fs::write(&config_path, config).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config_path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("docker-registry is installed by scripts/setup.sh");
        let mut registry = Registry { child, address };
        let started = Instant::now();
        while TcpStream::connect(&registry.address).is_err() {
            assert!(started.elapsed() < Duration::from_secs(10), "docker-registry did not listen on {}", registry.address);
            if registry.exited() {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // The port answers; make sure it is ours (a registry that lost the port exits at once).
        std::thread::sleep(Duration::from_millis(200));
        (!registry.exited()).then_some(registry)
    }

    fn exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }

    /// Pushes the image tagged `tag` of an OCI layout as `repository` (e.g. "boxlite/busybox:latest");
    /// returns the full reference.
    pub fn push(&self, layout: &Path, tag: &str, repository: &str, auth: bool) -> String {
        let reference = format!("{}/{repository}", self.address);
        let mut command = Command::new("skopeo");
        command.args(["copy", "--quiet", "--dest-tls-verify=false"]);
        if auth {
            command.arg(format!("--dest-creds={USER}:{PASSWORD}"));
        }
        let output = command
            .arg(format!("oci:{}:{tag}", layout.display()))
            .arg(format!("docker://{reference}"))
            .output()
            .expect("skopeo is installed by scripts/setup.sh");
        assert!(output.status.success(), "skopeo copy: {}", String::from_utf8_lossy(&output.stderr));
        reference
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
