//! crdgen: writes the provider's CRDs, derived from the Rust types, to `config/crd/bases`.
//!
//! `crdgen` rewrites the files; `crdgen --check` changes nothing and exits 1, naming each file,
//! when the committed YAML differs from the types. `--dir` picks another output directory.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use capd::api::crds;
use clap::Parser;

/// Generate the CRD YAML under config/crd/bases from the Rust API types.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// Compare the files with the types instead of writing them; exit 1 on any difference.
    #[arg(long)]
    check: bool,
    /// The directory holding one file per CRD.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/config/crd/bases"))]
    dir: PathBuf,
}

fn main() -> anyhow::Result<ExitCode> {
    let args = Args::parse();
    let mut drifted = Vec::new();
    if !args.check {
        std::fs::create_dir_all(&args.dir)
            .with_context(|| format!("creating {}", args.dir.display()))?;
    }
    for crd in crds::all_crds()? {
        let path = args.dir.join(crds::file_name(&crd));
        let yaml = crds::to_yaml(&crd)?;
        if args.check {
            let committed = std::fs::read_to_string(&path).unwrap_or_default();
            if committed != yaml {
                drifted.push(path);
            }
        } else {
            std::fs::write(&path, yaml).with_context(|| format!("writing {}", path.display()))?;
            println!("wrote {}", path.display());
        }
    }
    if drifted.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    for path in &drifted {
        eprintln!(
            "{} differs from the Rust types (or is missing)",
            path.display()
        );
    }
    eprintln!("run `cargo run --bin crdgen` and commit the result");
    Ok(ExitCode::FAILURE)
}
