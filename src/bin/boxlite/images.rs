//! The verbs on images: pull, images, rmi, import; and getting an image ready for a new
//! box (pulled with progress bars, its disk built under a spinner) before the box exists.

use std::path::Path;

use boxlite::{BoxliteRuntime, Error};
use serde_json::json;

use crate::args::Format;
use crate::exit::{CliResult, Hint};
use crate::progress::{spin, PullBars};

fn pull_hint(error: &Error) -> Option<String> {
    matches!(error, Error::Pull { .. })
        .then(|| "check the reference and the registry, or import the image: boxlite import LAYOUT_OR_ARCHIVE NAME".into())
}

/// The image for a new box, cached and with its base disk built; its normalised reference.
/// Done here rather than lazily at the box's first start, so that both show progress.
pub async fn prepare_image(runtime: &BoxliteRuntime, reference: &str) -> CliResult<String> {
    let image = match runtime.images().get(reference)? {
        Some(image) => image,
        None => {
            let bars = PullBars::new();
            runtime.images().pull(reference, Some(bars.callback())).await.hint(pull_hint)?
        }
    };
    if !runtime.images().store().disk_path(&image.manifest_digest).is_file() {
        spin(format!("building the disk of {}", image.reference), runtime.images().base_disk(&image)).await?;
    }
    Ok(image.reference)
}

pub async fn pull(runtime: &BoxliteRuntime, reference: &str) -> CliResult<i32> {
    let bars = PullBars::new();
    let image = runtime.images().pull(reference, Some(bars.callback())).await.hint(pull_hint)?;
    drop(bars);
    println!("{} {}", image.reference, image.manifest_digest);
    Ok(0)
}

pub fn list(runtime: &BoxliteRuntime, format: Format) -> CliResult<i32> {
    let images = runtime.images().list()?;
    match format {
        Format::Json => {
            let list: Vec<_> = images
                .iter()
                .map(|i| json!({ "reference": i.reference, "manifest_digest": i.manifest_digest.as_str(), "size": i.size }))
                .collect();
            println!("{}", serde_json::to_string_pretty(&list).expect("JSON values serialize"));
        }
        Format::Table => {
            println!("{:<50} {:<12} {:>10}", "IMAGE", "DIGEST", "SIZE");
            for image in images {
                println!("{:<50} {:<12} {:>7.1} MB", image.reference, &image.manifest_digest.hex()[..12], image.size as f64 / 1e6);
            }
        }
    }
    Ok(0)
}

/// Removes images; as docker's rmi, each one given is tried and printed when gone.
pub fn remove(runtime: &BoxliteRuntime, references: &[String], force: bool) -> CliResult<i32> {
    let mut code = 0;
    for reference in references {
        let removed = runtime.remove_image(reference, force).hint(|e| match e {
            Error::NotFound { .. } => Some("list the images with: boxlite images".into()),
            Error::InvalidState { .. } => Some("remove those boxes first (boxlite rm), or use rmi -f".into()),
            _ => None,
        });
        match removed {
            Ok(()) => println!("{reference}"),
            Err(failure) => {
                eprintln!("boxlite: {}", failure.line());
                if code == 0 {
                    code = failure.code();
                }
            }
        }
    }
    // Blobs and disks no reference needs any more; not while a box runs an image removed
    // with -f (gc would take its base disk, which its overlay needs).
    let orphaned_box = runtime.list_boxes().iter().any(|b| b.image().is_some_and(|i| !matches!(runtime.images().get(i), Ok(Some(_)))));
    if !orphaned_box {
        runtime.images().gc()?;
    }
    Ok(code)
}

pub fn import(runtime: &BoxliteRuntime, path: &Path, name: &str, tag: Option<&str>) -> CliResult<i32> {
    let image = if path.is_dir() {
        runtime.images().import_layout(path, tag, name)?
    } else if path.is_file() {
        runtime.images().import_archive(path, tag, name)?
    } else {
        return Err(Error::NotFound { what: format!("{}", path.display()) })
            .hint(|_| Some("give an OCI layout directory or an archive (OCI layout tar, docker save tar)".into()));
    };
    println!("{} {}", image.reference, image.manifest_digest);
    Ok(0)
}
