//! Scopes: what a scoped token may do to which secret paths.
//!
//! Grammar: `secrets:<action>:<path-pattern>` with action ∈ `read`, `write`, `delete`, `list`.
//! A pattern is written like a [`SecretPath`] and obeys the same length limits, except that
//!
//! * a segment that is exactly `*` matches exactly one segment, and
//! * a *final* segment that is exactly `**` matches zero or more segments
//!   (`production/**` covers `production` itself and everything below it).
//!
//! Nothing else is a wildcard, and everything is case-sensitive. `**` anywhere but last, and
//! `*` mixed with other characters in a segment (`prod*`, `*.key`, `***`), are errors rather than
//! literals: an operator who writes `prod*` means a wildcard, and silently matching nothing (or
//! the literal name) would hide the mistake until a request is denied in production. Every
//! malformed scope is rejected at parse time, so `matches` never has to guess.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::path::{self, PathError, SecretPath};

/// Longest snippet of user input echoed back in an error message.
const MAX_ECHO: usize = 64;

/// What a scope allows doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Read,
    Write,
    Delete,
    List,
}

/// A validated path pattern; see the module docs.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ScopePattern {
    raw: String,
    segments: Vec<PatternSegment>,
    /// The pattern ends in `**`.
    any_tail: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum PatternSegment {
    Literal(String),
    /// `*`: exactly one segment.
    Any,
}

/// One grant: an action on the paths a pattern matches.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Scope {
    pub action: Action,
    pub pattern: ScopePattern,
}

/// Why a scope string is malformed. Messages name the offending part; scopes are not secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScopeError {
    #[error("scope is empty")]
    Empty,
    #[error("scope `{0}` must have the form `secrets:<action>:<path-pattern>`")]
    BadShape(String),
    #[error("unknown resource `{0}` (scopes start with `secrets:`)")]
    UnknownResource(String),
    #[error("unknown action `{0}` (expected read, write, delete or list)")]
    UnknownAction(String),
    #[error("`**` may only be the last segment of a scope pattern")]
    MisplacedDoubleStar,
    #[error("segment `{0}` mixes `*` with other characters; a wildcard must be a whole segment")]
    PartialWildcard(String),
    #[error("invalid scope pattern: {0}")]
    Pattern(#[from] PathError),
}

impl ScopeError {
    /// The API error code for every scope error.
    pub fn code(&self) -> &'static str {
        "invalid_scope"
    }
}

impl Action {
    pub const ALL: [Action; 4] = [Action::Read, Action::Write, Action::Delete, Action::List];

    pub fn as_str(self) -> &'static str {
        match self {
            Action::Read => "read",
            Action::Write => "write",
            Action::Delete => "delete",
            Action::List => "list",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Action {
    type Err = ScopeError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Action::ALL
            .into_iter()
            .find(|a| a.as_str() == s)
            .ok_or_else(|| ScopeError::UnknownAction(echo(s)))
    }
}

impl ScopePattern {
    /// Parse a pattern such as `production/openai/*` or `staging/**`.
    pub fn parse(s: &str) -> Result<ScopePattern, ScopeError> {
        path::check_length(s)?;
        let parts: Vec<(usize, &str)> = path::segments_with_offsets(s).collect();
        if parts.len() > path::MAX_SEGMENTS {
            return Err(PathError::TooManySegments.into());
        }
        let last = parts.len() - 1;
        let mut segments = Vec::with_capacity(parts.len());
        let mut any_tail = false;
        for (i, (offset, part)) in parts.into_iter().enumerate() {
            match parse_segment(part, offset)? {
                Parsed::Segment(seg) => segments.push(seg),
                Parsed::AnyTail if i == last => any_tail = true,
                Parsed::AnyTail => return Err(ScopeError::MisplacedDoubleStar),
            }
        }
        Ok(ScopePattern {
            raw: s.to_owned(),
            segments,
            any_tail,
        })
    }

    /// True if `path` is one of the paths this pattern names.
    pub fn matches(&self, path: &SecretPath) -> bool {
        let mut path_segments = path.segments();
        for pattern_segment in &self.segments {
            match path_segments.next() {
                Some(seg) if pattern_segment.accepts(seg) => {}
                _ => return false,
            }
        }
        self.any_tail || path_segments.next().is_none()
    }

    /// True if some path equal to or below `prefix` could match, used to filter listings.
    /// It is exact about segments and ignores the length limits, so it may say `true` for a
    /// prefix whose only candidates would be too long to be valid paths.
    pub fn could_match_under(&self, prefix: &SecretPath) -> bool {
        let mut pattern_segments = self.segments.iter();
        for seg in prefix.segments() {
            match pattern_segments.next() {
                Some(p) if p.accepts(seg) => {}
                Some(_) => return false,
                None => return self.any_tail,
            }
        }
        true
    }

    /// The leading literal segments as a path: every path the pattern matches lies at or below
    /// it, so a listing can start there. `None` when the first segment is a wildcard.
    pub fn literal_prefix(&self) -> Option<SecretPath> {
        let literal: Vec<&str> = self
            .segments
            .iter()
            .map_while(|s| match s {
                PatternSegment::Literal(l) => Some(l.as_str()),
                PatternSegment::Any => None,
            })
            .collect();
        if literal.is_empty() {
            return None;
        }
        SecretPath::parse(&literal.join("/")).ok()
    }

    /// True if every path `other` matches, this pattern matches too: `other` lies within it.
    /// Decided on the patterns alone, exactly (no path is enumerated): how an agent's ceiling
    /// bounds the scopes it may be granted, so `prod/**` includes `prod/db/*` and `prod`, and
    /// `prod/*` includes `prod/db` but not `prod/**` (which also names `prod` itself).
    pub fn includes(&self, other: &ScopePattern) -> bool {
        for (i, theirs) in other.segments.iter().enumerate() {
            let Some(ours) = self.segments.get(i) else {
                // Our fixed part is used up; only a `**` of ours takes the rest.
                return self.any_tail;
            };
            let fits = match (ours, theirs) {
                (PatternSegment::Any, _) => true,
                (PatternSegment::Literal(a), PatternSegment::Literal(b)) => a == b,
                (PatternSegment::Literal(_), PatternSegment::Any) => false,
            };
            if !fits {
                return false;
            }
        }
        // `other` names paths of exactly its length (and longer ones with its `**`): ours
        // must not need more segments, and must take longer paths whenever `other` does.
        self.segments.len() == other.segments.len() && (self.any_tail || !other.any_tail)
    }

    pub fn as_str(&self) -> &str {
        &self.raw
    }
}

enum Parsed {
    Segment(PatternSegment),
    AnyTail,
}

fn parse_segment(part: &str, offset: usize) -> Result<Parsed, ScopeError> {
    match part {
        "*" => Ok(Parsed::Segment(PatternSegment::Any)),
        "**" => Ok(Parsed::AnyTail),
        _ if part.contains('*') => Err(ScopeError::PartialWildcard(echo(part))),
        _ => {
            path::validate_segment(part, offset)?;
            Ok(Parsed::Segment(PatternSegment::Literal(part.to_owned())))
        }
    }
}

impl PatternSegment {
    fn accepts(&self, segment: &str) -> bool {
        match self {
            PatternSegment::Literal(lit) => lit == segment,
            PatternSegment::Any => true,
        }
    }
}

impl Scope {
    /// Parse `secrets:<action>:<path-pattern>`.
    pub fn parse(s: &str) -> Result<Scope, ScopeError> {
        if s.is_empty() {
            return Err(ScopeError::Empty);
        }
        let mut parts = s.splitn(3, ':');
        let (resource, action, pattern) = match (parts.next(), parts.next(), parts.next()) {
            (Some(r), Some(a), Some(p)) => (r, a, p),
            _ => return Err(ScopeError::BadShape(echo(s))),
        };
        if resource != "secrets" {
            return Err(ScopeError::UnknownResource(echo(resource)));
        }
        Ok(Scope {
            action: action.parse()?,
            pattern: ScopePattern::parse(pattern)?,
        })
    }

    /// True if this scope allows `action` on `path`.
    pub fn covers(&self, action: Action, path: &SecretPath) -> bool {
        self.action == action && self.pattern.matches(path)
    }
}

impl Scope {
    /// True if every grant of `other` is also a grant of this scope.
    pub fn includes(&self, other: &Scope) -> bool {
        self.action == other.action && self.pattern.includes(&other.pattern)
    }
}

/// True if some scope of `ceiling` includes `scope` whole. A scope straddling two ceiling
/// entries (`a/**` against `a/x/**` plus `a/y/**`) is outside: the ceiling bounds each grant,
/// and proving a union cover would need enumerating paths.
pub fn within_ceiling(ceiling: &[Scope], scope: &Scope) -> bool {
    ceiling.iter().any(|allowed| allowed.includes(scope))
}

/// True if any of `scopes` allows `action` on `path`.
pub fn scopes_cover(scopes: &[Scope], action: Action, path: &SecretPath) -> bool {
    scopes.iter().any(|scope| scope.covers(action, path))
}

/// Truncate user input for an error message, on a character boundary.
fn echo(s: &str) -> String {
    match s.char_indices().nth(MAX_ECHO) {
        Some((end, _)) => format!("{}…", &s[..end]),
        None => s.to_owned(),
    }
}

impl fmt::Display for ScopePattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

impl fmt::Debug for ScopePattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ScopePattern({:?})", self.raw)
    }
}

impl FromStr for ScopePattern {
    type Err = ScopeError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ScopePattern::parse(s)
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "secrets:{}:{}", self.action, self.pattern)
    }
}

impl fmt::Debug for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Scope({:?})", self.to_string())
    }
}

impl FromStr for Scope {
    type Err = ScopeError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Scope::parse(s)
    }
}

impl Serialize for Scope {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Scope {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        Scope::parse(&s).map_err(serde::de::Error::custom)
    }
}

impl Serialize for ScopePattern {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.raw)
    }
}

impl<'de> Deserialize<'de> for ScopePattern {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        ScopePattern::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests;
