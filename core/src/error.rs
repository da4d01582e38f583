//! How an error reads where only one line of text can go (a status condition, an Event, a log
//! field): its own message, then each cause once.
//!
//! wapipe's error types name the action that failed and leave the cause to
//! [`std::error::Error::source`], so `anyhow`'s `{:#}` prints every cause once. A place that
//! holds the error itself renders it with [`Causes`] instead of `Display`, which alone would
//! drop the cause.

use std::error::Error;
use std::fmt;

/// Displays an error followed by its causes, `": "`-separated. A cause whose text the line
/// already ends with is left out: some libraries' errors repeat their source in their own
/// message.
pub struct Causes<'a>(pub &'a (dyn Error + 'static));

impl fmt::Display for Causes<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut previous = self.0.to_string();
        f.write_str(&previous)?;
        let mut source = self.0.source();
        while let Some(cause) = source {
            let text = cause.to_string();
            if !previous.ends_with(&text) {
                write!(f, ": {text}")?;
            }
            previous = text;
            source = cause.source();
        }
        Ok(())
    }
}

/// The error and its causes as one line (see [`Causes`]).
pub fn with_causes(error: &(dyn Error + 'static)) -> String {
    Causes(error).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("reading the password")]
    struct Outer(#[source] std::io::Error);

    #[derive(Debug, thiserror::Error)]
    #[error("wrapped: {0}")]
    struct Repeats(#[source] std::io::Error);

    #[test]
    fn each_cause_follows_the_message_once() {
        let error = Outer(std::io::Error::other("permission denied"));
        assert_eq!(
            with_causes(&error),
            "reading the password: permission denied"
        );
    }

    #[test]
    fn a_cause_the_message_already_ends_with_is_not_repeated() {
        let error = Repeats(std::io::Error::other("permission denied"));
        assert_eq!(with_causes(&error), "wrapped: permission denied");
    }
}
