//! One line for an error and its causes.
//!
//! The rule every error type of tally keeps: a message does not embed its
//! cause when the cause is its `source` (`#[source]`, `#[from]` or a field
//! named `source`); whoever shows the error shows the chain, with
//! [`ErrorChain`] (logs, run records, API answers) or anyhow's `{:#}`. So each
//! cause appears once, and the cause stays reachable by `source()`.

use std::error::Error;
use std::fmt;

/// Shows an error and every cause after it, `outer: cause: root cause`.
///
/// A cause whose text the line already ends with is left out: some errors
/// of other crates show their source as their own message.
///
/// ```
/// use tally_domain::ErrorChain;
/// #[derive(Debug, thiserror::Error)]
/// #[error("cannot open the store")]
/// struct Open(#[source] std::io::Error);
/// let err = Open(std::io::Error::other("disk full"));
/// assert_eq!(ErrorChain(&err).to_string(), "cannot open the store: disk full");
/// ```
pub struct ErrorChain<'a>(pub &'a (dyn Error + 'static));

impl fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut line = self.0.to_string();
        let mut cause = self.0.source();
        while let Some(err) = cause {
            let text = err.to_string();
            if !text.is_empty() && !line.ends_with(&text) {
                line.push_str(": ");
                line.push_str(&text);
            }
            cause = err.source();
        }
        f.write_str(&line)
    }
}

#[cfg(test)]
mod tests {
    use super::ErrorChain;

    #[derive(Debug, thiserror::Error)]
    #[error("cannot listen on {addr}")]
    struct Listen {
        addr: &'static str,
        source: std::io::Error,
    }

    #[derive(Debug, thiserror::Error)]
    #[error("reload refused")]
    struct Reload(#[from] Listen);

    /// Every cause once, in order; one that repeats its parent's text is not shown twice.
    #[test]
    fn each_cause_appears_once() {
        let listen = Listen {
            addr: "127.0.0.1:9470",
            source: std::io::Error::from(std::io::ErrorKind::AddrInUse),
        };
        let cause = std::io::Error::from(std::io::ErrorKind::AddrInUse).to_string();
        assert_eq!(
            ErrorChain(&Reload::from(listen)).to_string(),
            format!("reload refused: cannot listen on 127.0.0.1:9470: {cause}")
        );

        #[derive(Debug, thiserror::Error)]
        #[error("{0}")]
        struct Echo(#[source] std::io::Error);
        let echo = Echo(std::io::Error::other("disk full"));
        assert_eq!(ErrorChain(&echo).to_string(), "disk full");
    }
}
