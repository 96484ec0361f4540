//! Times in atrest's state files and reports: written as RFC 3339 in UTC to the second, as atrest
//! always has, and read back into [`Time`] (any RFC 3339 offset accepted). A time that does not
//! parse makes its file damaged instead of silently becoming "unknown".

use chrono::{DateTime, SecondsFormat, Utc};

/// A point in time, UTC.
pub type Time = DateTime<Utc>;

/// Now, to the second (what the files keep).
pub fn now() -> Time {
    let t = Utc::now();
    DateTime::from_timestamp(t.timestamp(), 0).unwrap_or(t)
}

/// `2026-12-04T01:00:00Z`.
pub fn format(t: &Time) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// Parses RFC 3339 (any offset) into UTC.
pub fn parse(s: &str) -> Option<Time> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// `#[serde(with = "rfc3339")]` for a [`Time`].
pub mod rfc3339 {
    use super::Time;

    /// Writes [`super::format`].
    pub fn serialize<S: serde::Serializer>(t: &Time, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::format(t))
    }

    /// Reads RFC 3339; anything else is an error naming the text.
    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Time, D::Error> {
        let s = <String as serde::Deserialize>::deserialize(d)?;
        super::parse(&s)
            .ok_or_else(|| serde::de::Error::custom(format!("{s:?} is not an RFC 3339 time")))
    }
}

/// `#[serde(default, with = "rfc3339_opt")]` for an `Option<Time>` (`null` or missing: `None`).
pub mod rfc3339_opt {
    use super::Time;

    /// Writes [`super::format`], or `null`.
    pub fn serialize<S: serde::Serializer>(t: &Option<Time>, s: S) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => s.serialize_some(&super::format(t)),
            None => s.serialize_none(),
        }
    }

    /// Reads RFC 3339 or `null`.
    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Time>, D::Error> {
        match <Option<String> as serde::Deserialize>::deserialize(d)? {
            None => Ok(None),
            Some(s) => super::parse(&s)
                .map(Some)
                .ok_or_else(|| serde::de::Error::custom(format!("{s:?} is not an RFC 3339 time"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
    struct T {
        #[serde(with = "rfc3339")]
        at: Time,
        #[serde(default, with = "rfc3339_opt")]
        maybe: Option<Time>,
    }

    #[test]
    fn times_keep_their_text_form_and_a_bad_one_is_an_error() {
        let json = r#"{"at":"2026-11-27T00:00:00Z","maybe":null}"#;
        let t: T = serde_json::from_str(json).unwrap();
        assert_eq!(serde_json::to_string(&t).unwrap(), json);
        let old: T = serde_json::from_str(r#"{"at":"2026-11-27T01:00:00+01:00"}"#).unwrap();
        assert_eq!(old.at, t.at);
        assert_eq!(old.maybe, None);
        let e = serde_json::from_str::<T>(r#"{"at":"yesterday"}"#).unwrap_err();
        assert!(
            e.to_string()
                .contains("\"yesterday\" is not an RFC 3339 time"),
            "{e}"
        );
        assert_eq!(format(&now()).len(), "2026-11-27T00:00:00Z".len());
    }
}
