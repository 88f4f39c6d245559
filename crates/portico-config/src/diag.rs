//! Diagnostics: one positioned problem found while loading a config (reference §1, `portico check`).
//!
//! Owns the [`Diagnostic`] type, its text form (`FILE:LINE:COL: KIND/NAME: message`) and its JSON
//! form (`{file, line, column, kind, name, severity, message}`).

use std::fmt;

use serde::Serialize;

/// How bad a problem is: errors reject the config, warnings do not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

/// One problem, with the 1-based line and column of the offending key or value.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct Diagnostic {
    pub file: String,
    pub line: u32,
    pub column: u32,
    /// The resource kind (`Mapping`, ...), or `-` for file-level problems.
    pub kind: String,
    /// The resource's `metadata.name`, or `-` when unknown.
    pub name: String,
    pub severity: Severity,
    pub message: String,
}

impl Diagnostic {
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}/{}: ",
            self.file, self.line, self.column, self.kind, self.name
        )?;
        if self.severity == Severity::Warning {
            f.write_str("warning: ")?;
        }
        f.write_str(&self.message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(severity: Severity) -> Diagnostic {
        Diagnostic {
            file: "a.yaml".into(),
            line: 3,
            column: 5,
            kind: "Mapping".into(),
            name: "quote".into(),
            severity,
            message: "bad \"thing\"".into(),
        }
    }

    #[test]
    fn display_error_and_warning() {
        assert_eq!(
            sample(Severity::Error).to_string(),
            "a.yaml:3:5: Mapping/quote: bad \"thing\""
        );
        assert_eq!(
            sample(Severity::Warning).to_string(),
            "a.yaml:3:5: Mapping/quote: warning: bad \"thing\""
        );
    }

    #[test]
    fn json_form() {
        let v = serde_json::to_value(sample(Severity::Warning)).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"file":"a.yaml","line":3,"column":5,"kind":"Mapping","name":"quote",
                "severity":"warning","message":"bad \"thing\""})
        );
    }
}
