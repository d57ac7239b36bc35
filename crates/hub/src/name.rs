//! Stream names: paths such as `live/show` or `room/alice`.

use std::fmt;

use serde::Serialize;

/// Longest stream name accepted, in bytes.
pub const MAX_NAME_LEN: usize = 255;
/// Most path segments in a stream name.
pub const MAX_SEGMENTS: usize = 8;

/// A stream's name: one or more segments of `[A-Za-z0-9._-]` joined by `/`. A segment may not
/// be `.` or `..`, so a name can never walk out of a directory when a later feature (recording,
/// HLS) maps it onto a path.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct StreamName(String);

/// Why a text is not a stream name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NameError {
    /// Nothing at all.
    #[error("stream name is empty")]
    Empty,
    /// Over [`MAX_NAME_LEN`] bytes.
    #[error("stream name is {0} bytes long, the limit is {MAX_NAME_LEN}")]
    TooLong(usize),
    /// Over [`MAX_SEGMENTS`] segments.
    #[error("stream name has {0} segments, the limit is {MAX_SEGMENTS}")]
    TooManySegments(usize),
    /// `a//b`, a leading or a trailing `/`.
    #[error("stream name has an empty segment (a leading, trailing or doubled '/')")]
    EmptySegment,
    /// A `.` or `..` segment.
    #[error("stream name may not contain a '.' or '..' segment")]
    DotSegment,
    /// A character outside the alphabet.
    #[error("stream name may only contain A-Z a-z 0-9 . _ - and '/' between segments")]
    BadCharacter,
}

impl StreamName {
    /// Parses and checks a stream name.
    pub fn parse(s: &str) -> Result<StreamName, NameError> {
        if s.is_empty() {
            return Err(NameError::Empty);
        }
        if s.len() > MAX_NAME_LEN {
            return Err(NameError::TooLong(s.len()));
        }
        let segments = s.split('/').count();
        if segments > MAX_SEGMENTS {
            return Err(NameError::TooManySegments(segments));
        }
        for seg in s.split('/') {
            if seg.is_empty() {
                return Err(NameError::EmptySegment);
            }
            if seg == "." || seg == ".." {
                return Err(NameError::DotSegment);
            }
            if !seg
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
            {
                return Err(NameError::BadCharacter);
            }
        }
        Ok(StreamName(s.to_owned()))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for StreamName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for StreamName {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, NameError> {
        StreamName::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn good_names() {
        for n in ["live", "live/show", "a.b_c-d/E9", "x/y/z"] {
            assert_eq!(
                StreamName::parse(n).map(|s| s.to_string()),
                Ok(n.to_owned())
            );
        }
    }

    #[test]
    fn bad_names_say_why() {
        assert_eq!(StreamName::parse(""), Err(NameError::Empty));
        assert_eq!(StreamName::parse("a//b"), Err(NameError::EmptySegment));
        assert_eq!(StreamName::parse("/a"), Err(NameError::EmptySegment));
        assert_eq!(StreamName::parse("a/"), Err(NameError::EmptySegment));
        assert_eq!(StreamName::parse("a/../b"), Err(NameError::DotSegment));
        assert_eq!(StreamName::parse(".."), Err(NameError::DotSegment));
        assert_eq!(StreamName::parse("a/./b"), Err(NameError::DotSegment));
        assert_eq!(StreamName::parse("a b"), Err(NameError::BadCharacter));
        assert_eq!(StreamName::parse("a%2fb"), Err(NameError::BadCharacter));
        assert_eq!(StreamName::parse("é"), Err(NameError::BadCharacter));
        assert_eq!(
            StreamName::parse(&"a".repeat(300)),
            Err(NameError::TooLong(300))
        );
        assert_eq!(
            StreamName::parse("a/b/c/d/e/f/g/h/i"),
            Err(NameError::TooManySegments(9))
        );
        // Dots inside a segment are fine.
        assert!(StreamName::parse("..a/b..").is_ok());
    }
}
