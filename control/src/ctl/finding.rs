//! One problem `meshctl check` found: an error the control service would refuse the file for,
//! or a warning about something valid that hurts.

use serde::Serialize;

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The control service refuses the file.
    Error,
    /// Valid, but probably not what was meant.
    Warning,
}

/// A problem at a field path (`services[0].routes[1].rules[2]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// Error or warning.
    pub severity: Severity,
    /// Where, in the control file's own spelling; empty for the file as a whole.
    pub path: String,
    /// What is wrong, in one line.
    pub message: String,
    /// 1-based line, for syntax errors that know it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
    /// 1-based column, likewise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub column: Option<usize>,
}

impl Finding {
    /// A warning at `path`.
    pub fn warning(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            severity: Severity::Warning,
            path: path.into(),
            message: message.into(),
            line: None,
            column: None,
        }
    }

    /// An error at `path`.
    pub fn error(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            severity: Severity::Error,
            ..Self::warning(path, message)
        }
    }
}
