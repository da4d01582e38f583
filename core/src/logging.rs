//! Whether the binaries' log lines may carry colour: only for a person at a terminal.

use std::ffi::OsStr;
use std::io::IsTerminal;

/// Colour only when the log goes to a terminal, and never when `NO_COLOR` is set to anything
/// but the empty string (the no-color.org convention). A log redirected to a file, as
/// `wapipe up` does, stays free of escape codes.
pub fn use_colour(is_terminal: bool, no_color: Option<&OsStr>) -> bool {
    is_terminal && no_color.is_none_or(OsStr::is_empty)
}

/// [`use_colour`] for a process that logs to its standard output, as tracing-subscriber's
/// `fmt()` does by default.
pub fn stdout_colour() -> bool {
    use_colour(
        std::io::stdout().is_terminal(),
        std::env::var_os("NO_COLOR").as_deref(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colour_only_for_a_terminal_without_a_non_empty_no_color() {
        let set = Some(OsStr::new("1"));
        let empty = Some(OsStr::new(""));
        assert!(use_colour(true, None));
        assert!(use_colour(true, empty), "an empty NO_COLOR counts as unset");
        assert!(!use_colour(true, set));
        assert!(
            !use_colour(false, None),
            "a file or a pipe gets no escape codes"
        );
        assert!(!use_colour(false, empty));
        assert!(!use_colour(false, set));
    }
}
