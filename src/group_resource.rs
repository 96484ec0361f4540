use std::fmt;

/// A group/resource, parsed and printed exactly as `schema.ParseGroupResource` and
/// `GroupResource.String()` do, so names in findings match what admins write in the config.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GroupResource {
    /// The API group; empty for the core group (`secrets`, `configmaps`). `*` in a config rule
    /// means every group.
    pub group: String,
    /// The resource's plural name (`secrets`, `deployments`); `*` in a config rule means every
    /// resource of the group.
    pub resource: String,
}

impl GroupResource {
    /// Builds one from its parts, unchecked.
    pub fn new(group: impl Into<String>, resource: impl Into<String>) -> Self {
        Self {
            group: group.into(),
            resource: resource.into(),
        }
    }

    /// Splits at the first `.`: `secrets` → {"", secrets}, `*.` → {"", *},
    /// `foos.cr.bar.com` → {cr.bar.com, foos}.
    pub fn parse(s: &str) -> Self {
        match s.split_once('.') {
            Some((resource, group)) => Self::new(group, resource),
            None => Self::new("", s),
        }
    }

    /// Core `secrets`, which atrest always covers whether or not the config names them.
    pub fn secrets() -> Self {
        Self::new("", "secrets")
    }

    /// Whether this is a wildcard rule (`*.`, `*.apps`, `*.*`) rather than one resource.
    pub fn is_wildcard(&self) -> bool {
        self.resource == "*"
    }

    /// The name as an admin writes it in the config (`*.` for every core resource).
    pub fn config_name(&self) -> String {
        if self.group.is_empty() && self.resource == "*" {
            "*.".to_string()
        } else {
            self.to_string()
        }
    }
}

impl fmt::Display for GroupResource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.group.is_empty() {
            f.write_str(&self.resource)
        } else {
            write!(f, "{}.{}", self.resource, self.group)
        }
    }
}

/// Stored as the name an admin writes (`secrets`, `deployments.apps`, `*.`), so state files,
/// checkpoints and maps keyed by resource keep their JSON form and read back typed.
impl serde::Serialize for GroupResource {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&self.config_name())
    }
}

impl<'de> serde::Deserialize<'de> for GroupResource {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        if name.is_empty() {
            return Err(serde::de::Error::custom("an empty resource name"));
        }
        Ok(Self::parse(&name))
    }
}

/// The names joined with `, `, as a message lists resources.
pub fn join(resources: &[GroupResource]) -> String {
    resources
        .iter()
        .map(GroupResource::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_like_the_apiserver() {
        assert_eq!(
            GroupResource::parse("secrets"),
            GroupResource::new("", "secrets")
        );
        assert_eq!(GroupResource::parse("*."), GroupResource::new("", "*"));
        assert_eq!(GroupResource::parse("*.*"), GroupResource::new("*", "*"));
        assert_eq!(
            GroupResource::parse("pandas.awesome.bears.example"),
            GroupResource::new("awesome.bears.example", "pandas")
        );
        assert_eq!(GroupResource::parse("*.").config_name(), "*.");
        assert_eq!(
            GroupResource::parse("deployments.apps").to_string(),
            "deployments.apps"
        );
    }

    #[test]
    fn stored_as_its_name_and_read_back() {
        let map = std::collections::BTreeMap::from([
            (GroupResource::secrets(), 1),
            (GroupResource::parse("*."), 2),
            (GroupResource::parse("deployments.apps"), 3),
        ]);
        let json = serde_json::to_string(&map).unwrap();
        assert_eq!(json, r#"{"*.":2,"secrets":1,"deployments.apps":3}"#);
        let back: std::collections::BTreeMap<GroupResource, u32> =
            serde_json::from_str(&json).unwrap();
        assert_eq!(back, map);
        assert!(serde_json::from_str::<GroupResource>("\"\"").is_err());
    }
}
