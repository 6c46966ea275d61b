//! Whether a committed document is still the one the code describes: what a contracts crate's
//! test and `msgkit asyncapi --check` ask, with the first difference to show when it is not.

/// A committed document that differs from the one the code generates now.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("first difference at line {line}: {committed:?}, the code has {current:?}")]
pub struct Outdated {
    /// The first line that differs, from 1.
    pub line: usize,
    /// That line in the committed document (`<end of file>` when it is shorter).
    pub committed: String,
    /// That line in the document the code generates.
    pub current: String,
}

/// `Ok` when `committed` is `current`, else where they first differ.
pub fn compare(committed: &str, current: &str) -> Result<(), Outdated> {
    if committed == current {
        return Ok(());
    }
    let index = committed
        .lines()
        .zip(current.lines())
        .position(|(old, new)| old != new)
        .unwrap_or_else(|| committed.lines().count().min(current.lines().count()));
    let shown = |text: &str| {
        text.lines()
            .nth(index)
            .unwrap_or("<end of file>")
            .to_owned()
    };
    Err(Outdated {
        line: index + 1,
        committed: shown(committed),
        current: shown(current),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_differing_line_is_named_and_a_shorter_file_ends_early() {
        assert_eq!(compare("a\nb\n", "a\nb\n"), Ok(()));
        let changed = compare("a\nb\nc\n", "a\nB\nc\n").unwrap_err();
        assert_eq!((changed.line, changed.committed.as_str()), (2, "b"));
        assert_eq!(changed.current, "B");
        let shorter = compare("a\n", "a\nb\n").unwrap_err();
        assert_eq!(
            (shorter.line, shorter.committed.as_str()),
            (2, "<end of file>")
        );
    }
}
