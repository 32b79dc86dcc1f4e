//! The import report: every construct of the document, mapped, approximated
//! (with why) or refused (with why), by its place in the document.

use std::fmt;

/// What became of one construct.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// Imported with the same behaviour.
    Mapped,
    /// Imported with a behaviour that differs in a way the note explains,
    /// or deliberately left out (documentation, AWS-only settings).
    Approximated,
    /// Not importable: the import stops and names it.
    Refused,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Mapped => "mapped",
            Outcome::Approximated => "approximated",
            Outcome::Refused => "refused",
        }
    }
}

/// One line of the report.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Note {
    /// Where in the document: `paths./pets.get.x-amazon-apigateway-integration`.
    pub path: String,
    pub outcome: Outcome,
    /// What it became, or why not.
    pub detail: String,
}

impl fmt::Display for Note {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:<12} {}: {}", self.outcome.as_str(), self.path, self.detail)
    }
}

/// Every note, in document order.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Report {
    pub notes: Vec<Note>,
}

impl Report {
    pub fn mapped(&mut self, path: impl Into<String>, detail: impl Into<String>) {
        self.push(path, Outcome::Mapped, detail);
    }

    pub fn approximated(&mut self, path: impl Into<String>, detail: impl Into<String>) {
        self.push(path, Outcome::Approximated, detail);
    }

    pub fn refused(&mut self, path: impl Into<String>, detail: impl Into<String>) {
        self.push(path, Outcome::Refused, detail);
    }

    fn push(&mut self, path: impl Into<String>, outcome: Outcome, detail: impl Into<String>) {
        self.notes.push(Note {
            path: path.into(),
            outcome,
            detail: detail.into(),
        });
    }

    /// The notes with this outcome.
    pub fn with(&self, outcome: Outcome) -> impl Iterator<Item = &Note> {
        self.notes.iter().filter(move |n| n.outcome == outcome)
    }

    pub fn has_refusals(&self) -> bool {
        self.with(Outcome::Refused).next().is_some()
    }

    /// How many notes of each outcome: (mapped, approximated, refused).
    pub fn counts(&self) -> (usize, usize, usize) {
        (
            self.with(Outcome::Mapped).count(),
            self.with(Outcome::Approximated).count(),
            self.with(Outcome::Refused).count(),
        )
    }
}

impl fmt::Display for Report {
    /// One note per line, refusals first.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for outcome in [Outcome::Refused, Outcome::Approximated, Outcome::Mapped] {
            for note in self.with(outcome) {
                writeln!(f, "{note}")?;
            }
        }
        let (mapped, approximated, refused) = self.counts();
        write!(
            f,
            "{mapped} mapped, {approximated} approximated, {refused} refused"
        )
    }
}
