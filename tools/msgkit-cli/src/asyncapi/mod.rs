//! `msgkit asyncapi`: the AsyncAPI 3.0 document of the example services, generated from the
//! contracts crate (event types, payload types, the topology's bindings, the publishers'
//! table), so that docs/asyncapi.yaml cannot drift from the code: `--check` compares the
//! committed file with what the code describes now (scripts/check-asyncapi.sh, and a test).

mod document;
mod headers;
#[cfg(test)]
mod tests;

use std::path::PathBuf;

use anyhow::Context;

use crate::CliError;

pub use document::document;

/// The command that rewrites the committed document: what `--check` tells a developer to run.
pub const REGENERATE: &str =
    "cargo run -q -p msgkit-cli --bin msgkit -- asyncapi --output docs/asyncapi.yaml";

/// Write or check the AsyncAPI document.
#[derive(Debug, clap::Args)]
pub struct AsyncApiArgs {
    /// Write the document to this file instead of standard output.
    #[arg(long, conflicts_with = "check")]
    output: Option<PathBuf>,
    /// Compare this file with the document instead of writing it: exit 1, naming the command
    /// that regenerates it, when they differ.
    #[arg(long)]
    check: Option<PathBuf>,
}

/// Run `msgkit asyncapi`.
pub fn run(args: AsyncApiArgs) -> Result<(), CliError> {
    let yaml = render().map_err(CliError::Other)?;
    match (args.output, args.check) {
        (Some(path), _) => std::fs::write(&path, yaml)
            .with_context(|| format!("writing {}", path.display()))
            .map_err(CliError::Other),
        (None, Some(path)) => {
            let committed = std::fs::read_to_string(&path)
                .with_context(|| format!("reading {}", path.display()))?;
            check(&committed, &yaml, &path.display().to_string()).map_err(CliError::Outdated)
        }
        (None, None) => {
            print!("{yaml}");
            Ok(())
        }
    }
}

/// The document as YAML, keys in a canonical (sorted) order so that a diff is a real change.
pub fn render() -> anyhow::Result<String> {
    let mut document = document();
    // A no-op while serde_json keeps maps sorted, which feature unification could change.
    document.sort_all_objects();
    let yaml = serde_norway::to_string(&document).context("writing the document as YAML")?;
    Ok(format!(
        "# Generated from the contracts crate by `msgkit asyncapi`: do not edit. Regenerate with\n\
         # {REGENERATE}\n{yaml}"
    ))
}

/// `Ok` when `committed` is `current`; otherwise what differs first and how to regenerate it.
pub fn check(committed: &str, current: &str, path: &str) -> Result<(), String> {
    if committed == current {
        return Ok(());
    }
    let line = committed
        .lines()
        .zip(current.lines())
        .position(|(old, new)| old != new)
        .unwrap_or_else(|| committed.lines().count().min(current.lines().count()));
    let shown = |text: &str| text.lines().nth(line).unwrap_or("<end of file>").to_owned();
    Err(format!(
        "{path} is not the document the code describes (first difference at line {}: {:?}, \
         the code has {:?}); regenerate it with\n  {REGENERATE}",
        line + 1,
        shown(committed),
        shown(current),
    ))
}
