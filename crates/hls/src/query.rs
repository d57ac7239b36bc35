//! The query of a playlist request: `_HLS_msn`, `_HLS_part`, `_HLS_skip` (RFC 8216bis §6.2.5).

/// What a playlist request asks for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Query {
    /// Hold the answer until this segment is in the playlist.
    pub msn: Option<u64>,
    /// …and this part of it.
    pub part: Option<u64>,
    /// A delta update.
    pub skip: bool,
}

/// A query the server must answer with 400.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    /// Not a non-negative integer.
    #[error("{0} must be a non-negative integer")]
    NotANumber(&'static str),
    /// `_HLS_part` without `_HLS_msn`.
    #[error("_HLS_part needs _HLS_msn")]
    PartWithoutMsn,
    /// `_HLS_skip` other than YES or v2.
    #[error("_HLS_skip must be YES or v2")]
    BadSkip,
}

impl Query {
    /// Parses a raw query string; unknown parameters are ignored (CDNs add their own).
    pub fn parse(raw: Option<&str>) -> Result<Query, QueryError> {
        let mut q = Query::default();
        for kv in raw.unwrap_or("").split('&').filter(|s| !s.is_empty()) {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            match k {
                "_HLS_msn" => {
                    q.msn = Some(v.parse().map_err(|_| QueryError::NotANumber("_HLS_msn"))?);
                }
                "_HLS_part" => {
                    q.part = Some(v.parse().map_err(|_| QueryError::NotANumber("_HLS_part"))?);
                }
                "_HLS_skip" => match v {
                    "YES" | "v2" => q.skip = true,
                    _ => return Err(QueryError::BadSkip),
                },
                _ => {}
            }
        }
        if q.part.is_some() && q.msn.is_none() {
            return Err(QueryError::PartWithoutMsn);
        }
        Ok(q)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocking_queries_parse_and_bad_ones_are_refused() {
        assert_eq!(Query::parse(None), Ok(Query::default()));
        assert_eq!(
            Query::parse(Some("_HLS_msn=12&_HLS_part=3&_HLS_skip=YES&cdn=1")),
            Ok(Query {
                msn: Some(12),
                part: Some(3),
                skip: true
            })
        );
        assert_eq!(
            Query::parse(Some("_HLS_msn=-1")),
            Err(QueryError::NotANumber("_HLS_msn"))
        );
        assert_eq!(
            Query::parse(Some("_HLS_msn=99999999999999999999999")),
            Err(QueryError::NotANumber("_HLS_msn"))
        );
        assert_eq!(
            Query::parse(Some("_HLS_part=1")),
            Err(QueryError::PartWithoutMsn)
        );
        assert_eq!(
            Query::parse(Some("_HLS_skip=maybe")),
            Err(QueryError::BadSkip)
        );
    }
}
