//! Image pull + disk build: the boxes' image pushed to a loopback docker-registry
//! (tests/common/registry.rs), then pulled into an empty cache and its ext4 base disk built,
//! beside `skopeo copy` + `umoci unpack` of the same image from the same registry (which
//! builds no disk). `--image-runs` of each; medians.

use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use boxlite::runtime::images::pull::RegistryOptions;
use boxlite::{BoxliteRuntime, RuntimeOptions};
use serde_json::json;

use crate::boxes::Bench;
use crate::procfs;
use crate::registry::Registry;
use crate::report::{percentile, EngineReport};

const FIGURE: &str = "image";

pub async fn pull(bench: &Bench, home: &Path, report: &mut EngineReport) {
    let missing: Vec<&str> = ["docker-registry", "skopeo", "umoci"].into_iter().filter(|p| !procfs::on_path(p)).collect();
    if !missing.is_empty() {
        return report.unavailable(FIGURE, format!("not available: apt install {} (scripts/setup.sh)", missing.join(" ")));
    }
    let Some((layout, tag)) = bench.root.layout() else {
        return report.unavailable(FIGURE, "not available: needs the boxes' image as an OCI layout (--image DIR)");
    };
    let tag = tag.unwrap_or("latest");
    say!("image: pull + disk build of {} ({} runs), beside skopeo + umoci", layout.display(), bench.image_runs);
    let work = home.join("image-bench");
    let _ = std::fs::create_dir_all(&work);
    let result = measure(bench, layout, tag, &work).await;
    let _ = std::fs::remove_dir_all(&work);
    let (ours, theirs) = match result {
        Ok(result) => result,
        Err(e) => return report.unavailable(FIGURE, format!("failed: {e}")),
    };
    let (a, b) = (percentile(&ours, 50.0), percentile(&theirs, 50.0));
    report.add_vs(FIGURE, "pull + unpack + ext4 base disk, median (s)", a, "skopeo copy + umoci unpack", b);
    report.detail(
        FIGURE,
        json!({ "layout": layout, "boxlite_s": ours, "skopeo_umoci_s": theirs, "boxlite_median_s": a, "baseline_median_s": b }),
    );
}

async fn measure(bench: &Bench, layout: &Path, tag: &str, work: &Path) -> Result<(Vec<f64>, Vec<f64>), String> {
    // The registry helper is the tests' and asserts; here a failure is a row, not a crash.
    let (registry, reference) = std::panic::catch_unwind(AssertUnwindSafe(|| {
        let registry = Registry::start(work, false);
        let reference = registry.push(layout, tag, &format!("bench/image:{tag}"), false);
        (registry, reference)
    }))
    .map_err(|_| "the loopback registry did not start or take the image (see the message above)".to_string())?;
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for run in 0..bench.image_runs {
        let home = work.join(format!("home-{run}"));
        let registries = RegistryOptions { insecure: vec![registry.address.clone()], ..Default::default() };
        let runtime = BoxliteRuntime::new(RuntimeOptions { home: Some(home.clone()), registries, ..Default::default() })
            .map_err(|e| format!("runtime in {}: {e}", home.display()))?;
        let began = Instant::now();
        let image = runtime.images().pull(&reference, None).await.map_err(|e| format!("pull {reference}: {e}"))?;
        runtime.images().base_disk(&image).await.map_err(|e| format!("base disk of {reference}: {e}"))?;
        ours.push(began.elapsed().as_secs_f64());
        drop(runtime);
        let _ = std::fs::remove_dir_all(&home);
        theirs.push(baseline(work, &reference)?);
    }
    Ok((ours, theirs))
}

fn baseline(work: &Path, reference: &str) -> Result<f64, String> {
    let (layout, bundle) = (work.join("skopeo-layout"), work.join("umoci-bundle"));
    let _ = std::fs::remove_dir_all(&layout);
    let _ = std::fs::remove_dir_all(&bundle);
    let began = Instant::now();
    run(Command::new("skopeo")
        .args(["copy", "--quiet", "--src-tls-verify=false"])
        .arg(format!("docker://{reference}"))
        .arg(format!("oci:{}:bench", layout.display())))?;
    run(Command::new("umoci").args(["unpack", "--image"]).arg(format!("{}:bench", layout.display())).arg(&bundle))?;
    let seconds = began.elapsed().as_secs_f64();
    let _ = std::fs::remove_dir_all(&layout);
    let _ = std::fs::remove_dir_all(&bundle);
    Ok(seconds)
}

fn run(command: &mut Command) -> Result<(), String> {
    let output = command.output().map_err(|e| format!("{command:?}: {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!("{command:?}: {}", String::from_utf8_lossy(&output.stderr).trim()))
    }
}
