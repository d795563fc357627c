//! Image benchmark (a harness, not a test): pull + unpack + disk build of the Python image
//! (scripts/build-python-image.sh) from a loopback docker-registry, beside `skopeo copy` +
//! `umoci unpack` of the same image, over BOXLITE_BENCH_IMAGE_RUNS runs (default 3), each
//! from an empty cache. Printed as a table with the ratio, then as JSON.

#[path = "../tests/common/registry.rs"]
mod registry;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use boxlite::runtime::images::pull::RegistryOptions;
use boxlite::{BoxliteRuntime, EngineChoice, RuntimeOptions};

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn run(command: &mut Command) {
    let output = command.output().expect("running a baseline tool");
    assert!(output.status.success(), "{command:?}: {}", String::from_utf8_lossy(&output.stderr));
}

fn boxlite_once(work: &Path, reference: &str, address: &str) -> f64 {
    let home = work.join("home");
    let _ = std::fs::remove_dir_all(&home);
    let registries = RegistryOptions { insecure: vec![address.to_string()], ..Default::default() };
    let runtime =
        BoxliteRuntime::new(RuntimeOptions { home: Some(home), engine: EngineChoice::Qemu, registries, ..Default::default() }).unwrap();
    let tokio = tokio::runtime::Runtime::new().unwrap();
    let started = Instant::now();
    tokio.block_on(async {
        let image = runtime.images().pull(reference, None).await.unwrap();
        runtime.images().base_disk(&image).await.unwrap();
    });
    started.elapsed().as_secs_f64()
}

fn baseline_once(work: &Path, reference: &str) -> f64 {
    let (layout, bundle) = (work.join("skopeo-layout"), work.join("umoci-bundle"));
    let _ = std::fs::remove_dir_all(&layout);
    let _ = std::fs::remove_dir_all(&bundle);
    let started = Instant::now();
    run(Command::new("skopeo")
        .args(["copy", "--quiet", "--src-tls-verify=false"])
        .arg(format!("docker://{reference}"))
        .arg(format!("oci:{}:bench", layout.display())));
    run(Command::new("umoci").args(["unpack", "--image"]).arg(format!("{}:bench", layout.display())).arg(&bundle));
    started.elapsed().as_secs_f64()
}

fn main() {
    let runs: usize = std::env::var("BOXLITE_BENCH_IMAGE_RUNS").ok().and_then(|v| v.parse().ok()).unwrap_or(3).max(1);
    let layout = boxlite::runtime::helpers::cache_dir().join("test-images/python");
    if !layout.join("index.json").is_file() {
        eprintln!("{} is missing: run scripts/build-python-image.sh", layout.display());
        std::process::exit(1);
    }
    let work: PathBuf = std::env::temp_dir().join(format!("boxlite-bench-images-{}", std::process::id()));
    std::fs::create_dir_all(&work).unwrap();
    let registry = registry::Registry::start(&work, false);
    let reference = registry.push(&layout, "3", "boxlite/python:3", false);

    let mut ours = Vec::new();
    let mut theirs = Vec::new();
    for _ in 0..runs {
        ours.push(boxlite_once(&work, &reference, &registry.address));
        theirs.push(baseline_once(&work, &reference));
    }
    drop(registry);
    let _ = std::fs::remove_dir_all(&work);
    let (a, b) = (median(ours.clone()), median(theirs.clone()));
    println!("\nimage benchmark: Python image, {runs} runs each from an empty cache (median)\n");
    println!("{:<46}{:>10}", "pipeline", "seconds");
    println!("{:<46}{:>10.2}", "boxlite: pull + unpack + ext4 base disk", a);
    println!("{:<46}{:>10.2}", "skopeo copy + umoci unpack (no disk)", b);
    println!("{:<46}{:>10.2}", "ratio boxlite / baseline", a / b);
    println!(
        "\n{}",
        serde_json::json!({ "boxlite_s": ours, "skopeo_umoci_s": theirs, "boxlite_median_s": a, "baseline_median_s": b, "ratio": a / b })
    );
}
