use std::fmt;

/// A group/resource, parsed and printed exactly as `schema.ParseGroupResource` and
/// `GroupResource.String()` do, so names in findings match what admins write in the config.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
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
}
