//! Where the apiserver stores each group resource in etcd (docs/design.md#layout), both ways: the key range
//! of a config resource, and the group resource of a key found under a wildcard.

use std::collections::HashMap;
use std::sync::LazyLock;

use crate::GroupResource;

/// Built-in kube-apiserver resources: (group, resource, key segment under the prefix).
/// From `test/integration/etcd/data.go` `ExpectedEtcdPath` of Kubernetes v1.37.2, plus the
/// non-REST allocators that `*.` and `*.*` still cover.
const BUILT_IN: &[(&str, &str, &str)] = &[
    ("", "configmaps", "configmaps"),
    ("", "endpoints", "services/endpoints"),
    ("", "events", "events"),
    ("", "limitranges", "limitranges"),
    ("", "namespaces", "namespaces"),
    ("", "nodes", "minions"),
    ("", "persistentvolumeclaims", "persistentvolumeclaims"),
    ("", "persistentvolumes", "persistentvolumes"),
    ("", "pods", "pods"),
    ("", "podtemplates", "podtemplates"),
    ("", "replicationcontrollers", "controllers"),
    ("", "resourcequotas", "resourcequotas"),
    ("", "secrets", "secrets"),
    ("", "serviceaccounts", "serviceaccounts"),
    ("", "services", "services/specs"),
    ("", "serviceipallocations", "ranges/serviceips"),
    ("", "servicenodeportallocations", "ranges/servicenodeports"),
    ("", "apiserveripinfo", "masterleases"),
    (
        "admissionregistration.k8s.io",
        "mutatingadmissionpolicies",
        "mutatingadmissionpolicies",
    ),
    (
        "admissionregistration.k8s.io",
        "mutatingadmissionpolicybindings",
        "mutatingadmissionpolicybindings",
    ),
    (
        "admissionregistration.k8s.io",
        "mutatingwebhookconfigurations",
        "mutatingwebhookconfigurations",
    ),
    (
        "admissionregistration.k8s.io",
        "validatingadmissionpolicies",
        "validatingadmissionpolicies",
    ),
    (
        "admissionregistration.k8s.io",
        "validatingadmissionpolicybindings",
        "validatingadmissionpolicybindings",
    ),
    (
        "admissionregistration.k8s.io",
        "validatingwebhookconfigurations",
        "validatingwebhookconfigurations",
    ),
    ("apps", "controllerrevisions", "controllerrevisions"),
    ("apps", "daemonsets", "daemonsets"),
    ("apps", "deployments", "deployments"),
    ("apps", "replicasets", "replicasets"),
    ("apps", "statefulsets", "statefulsets"),
    (
        "autoscaling",
        "horizontalpodautoscalers",
        "horizontalpodautoscalers",
    ),
    ("batch", "cronjobs", "cronjobs"),
    ("batch", "jobs", "jobs"),
    (
        "certificates.k8s.io",
        "certificatesigningrequests",
        "certificatesigningrequests",
    ),
    (
        "certificates.k8s.io",
        "clustertrustbundles",
        "clustertrustbundles",
    ),
    (
        "certificates.k8s.io",
        "podcertificaterequests",
        "podcertificaterequests",
    ),
    ("coordination.k8s.io", "leasecandidates", "leasecandidates"),
    ("coordination.k8s.io", "leases", "leases"),
    ("discovery.k8s.io", "endpointslices", "endpointslices"),
    ("flowcontrol.apiserver.k8s.io", "flowschemas", "flowschemas"),
    (
        "flowcontrol.apiserver.k8s.io",
        "prioritylevelconfigurations",
        "prioritylevelconfigurations",
    ),
    (
        "internal.apiserver.k8s.io",
        "storageversions",
        "storageversions",
    ),
    ("lifecycle.k8s.io", "evictionrequests", "evictionrequests"),
    ("lifecycle.k8s.io", "evictions", "evictions"),
    ("networking.k8s.io", "ingressclasses", "ingressclasses"),
    ("networking.k8s.io", "ingresses", "ingress"),
    ("networking.k8s.io", "ipaddresses", "ipaddresses"),
    ("networking.k8s.io", "networkpolicies", "networkpolicies"),
    ("networking.k8s.io", "servicecidrs", "servicecidrs"),
    ("node.k8s.io", "runtimeclasses", "runtimeclasses"),
    ("policy", "poddisruptionbudgets", "poddisruptionbudgets"),
    (
        "rbac.authorization.k8s.io",
        "clusterrolebindings",
        "clusterrolebindings",
    ),
    ("rbac.authorization.k8s.io", "clusterroles", "clusterroles"),
    ("rbac.authorization.k8s.io", "rolebindings", "rolebindings"),
    ("rbac.authorization.k8s.io", "roles", "roles"),
    ("resource.k8s.io", "deviceclasses", "deviceclasses"),
    ("resource.k8s.io", "devicetaintrules", "devicetaintrules"),
    ("resource.k8s.io", "resourceclaims", "resourceclaims"),
    (
        "resource.k8s.io",
        "resourceclaimtemplates",
        "resourceclaimtemplates",
    ),
    (
        "resource.k8s.io",
        "resourcepoolstatusrequests",
        "resourcepoolstatusrequests",
    ),
    ("resource.k8s.io", "resourceslices", "resourceslices"),
    (
        "scheduling.k8s.io",
        "compositepodgroups",
        "compositepodgroups",
    ),
    ("scheduling.k8s.io", "podgroups", "podgroups"),
    ("scheduling.k8s.io", "priorityclasses", "priorityclasses"),
    ("scheduling.k8s.io", "workloads", "workloads"),
    ("storage.k8s.io", "csidrivers", "csidrivers"),
    ("storage.k8s.io", "csinodes", "csinodes"),
    (
        "storage.k8s.io",
        "csistoragecapacities",
        "csistoragecapacities",
    ),
    ("storage.k8s.io", "storageclasses", "storageclasses"),
    ("storage.k8s.io", "volumeattachments", "volumeattachments"),
    (
        "storage.k8s.io",
        "volumeattributesclasses",
        "volumeattributesclasses",
    ),
    (
        "storagemigration.k8s.io",
        "storageversionmigrations",
        "storageversionmigrations",
    ),
];

/// Groups whose resources the kube-apiserver itself stores without the group in the key.
fn is_built_in_group(group: &str) -> bool {
    BUILT_IN.iter().any(|(g, _, _)| *g == group)
}

/// The etcd prefix root, normalised as the apiserver does: `path.Join("/", prefix) + "/"`.
pub fn normalize_prefix(prefix: &str) -> String {
    let trimmed = prefix.trim_matches('/');
    if trimmed.is_empty() {
        "/".to_string()
    } else {
        format!("/{trimmed}/")
    }
}

/// The key segment of a non-wildcard group resource (`secrets`, `services/specs`,
/// `cr.bar.com/foos`).
pub fn key_segment(gr: &GroupResource) -> String {
    // events.k8s.io events cohabit with core events.
    let group = if gr.group == "events.k8s.io" && gr.resource == "events" {
        ""
    } else {
        gr.group.as_str()
    };
    if let Some((_, _, seg)) = BUILT_IN
        .iter()
        .find(|(g, r, _)| *g == group && *r == gr.resource)
    {
        return (*seg).to_string();
    }
    if group.is_empty() || is_built_in_group(group) {
        // A built-in we do not list (newer release): lower-cased resource name, no group.
        gr.resource.to_lowercase()
    } else {
        format!("{}/{}", group, gr.resource)
    }
}

/// The full key prefix of a non-wildcard group resource: `/registry/secrets/`.
pub fn resource_prefix(etcd_prefix: &str, gr: &GroupResource) -> String {
    format!("{}{}/", normalize_prefix(etcd_prefix), key_segment(gr))
}

/// A key found under the prefix: its group resource, and the object part (`ns/name` or `name`;
/// empty for single-object keys such as `/registry/ranges/serviceips`).
pub fn resource_of_key<'k>(etcd_prefix: &str, key: &'k str) -> Option<(GroupResource, &'k str)> {
    let rest = strip_root(etcd_prefix, key)?;
    let (first, after) = rest.split_once('/').unwrap_or((rest, ""));
    if first.contains('.') {
        let (resource, object) = after.split_once('/')?;
        return Some((GroupResource::new(first, resource), object));
    }
    let Some(known) = BY_FIRST_SEGMENT.get(first) else {
        return Some((GroupResource::new("", first), after));
    };
    // Two-segment built-in prefixes first (services/specs, ranges/serviceips).
    for (g, r, second) in known {
        let Some(b) = second else { continue };
        if after == *b {
            return Some((GroupResource::new(*g, *r), ""));
        }
        if let Some(object) = after.strip_prefix(b).and_then(|o| o.strip_prefix('/')) {
            return Some((GroupResource::new(*g, *r), object));
        }
    }
    let gr = known
        .iter()
        .find(|(_, _, second)| second.is_none())
        .map(|(g, r, _)| GroupResource::new(*g, *r))
        .unwrap_or_else(|| GroupResource::new("", first));
    Some((gr, after))
}

/// [`BUILT_IN`] by the first segment of its key: (group, resource, second segment if any). A
/// scan maps every key it reads, so the table is split once, not per key.
static BY_FIRST_SEGMENT: LazyLock<HashMap<&'static str, Vec<BuiltIn>>> = LazyLock::new(|| {
    let mut m: HashMap<&'static str, Vec<BuiltIn>> = HashMap::new();
    for (g, r, seg) in BUILT_IN {
        let (first, second) = match seg.split_once('/') {
            Some((a, b)) => (a, Some(b)),
            None => (*seg, None),
        };
        m.entry(first).or_default().push((g, r, second));
    }
    m
});

/// A built-in resource as [`BY_FIRST_SEGMENT`] holds it.
type BuiltIn = (&'static str, &'static str, Option<&'static str>);

/// `key` without the normalised prefix root (`/registry/`), without allocating when the prefix
/// is already in its normal form.
fn strip_root<'k>(etcd_prefix: &str, key: &'k str) -> Option<&'k str> {
    let trimmed = etcd_prefix.trim_matches('/');
    if trimmed.is_empty() {
        return key.strip_prefix('/');
    }
    key.strip_prefix('/')?
        .strip_prefix(trimmed)?
        .strip_prefix('/')
}

/// The exclusive end of a prefix range: the prefix with its last byte incremented.
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_match_spec_table() {
        let p = |s: &str| resource_prefix("/registry", &GroupResource::parse(s));
        assert_eq!(p("secrets"), "/registry/secrets/");
        assert_eq!(p("services"), "/registry/services/specs/");
        assert_eq!(p("endpoints"), "/registry/services/endpoints/");
        assert_eq!(p("nodes"), "/registry/minions/");
        assert_eq!(p("replicationcontrollers"), "/registry/controllers/");
        assert_eq!(p("deployments.apps"), "/registry/deployments/");
        assert_eq!(p("ingresses.networking.k8s.io"), "/registry/ingress/");
        assert_eq!(p("leases.coordination.k8s.io"), "/registry/leases/");
        assert_eq!(
            p("apiservices.apiregistration.k8s.io"),
            "/registry/apiregistration.k8s.io/apiservices/"
        );
        assert_eq!(
            p("customresourcedefinitions.apiextensions.k8s.io"),
            "/registry/apiextensions.k8s.io/customresourcedefinitions/"
        );
        assert_eq!(p("foos.cr.bar.com"), "/registry/cr.bar.com/foos/");
        assert_eq!(
            resource_prefix("registry/", &GroupResource::parse("secrets")),
            "/registry/secrets/"
        );
        assert_eq!(
            resource_prefix("/custom/prefix", &GroupResource::parse("secrets")),
            "/custom/prefix/secrets/"
        );
    }

    #[test]
    fn keys_map_back_to_resources() {
        let r = |k: &str| {
            resource_of_key("/registry", k).map(|(gr, o)| (gr.to_string(), o.to_string()))
        };
        assert_eq!(
            r("/registry/secrets/ns/a"),
            Some(("secrets".into(), "ns/a".into()))
        );
        assert_eq!(
            r("/registry/services/specs/default/kubernetes"),
            Some(("services".into(), "default/kubernetes".into()))
        );
        assert_eq!(
            r("/registry/services/endpoints/ns/e"),
            Some(("endpoints".into(), "ns/e".into()))
        );
        assert_eq!(
            r("/registry/minions/node1"),
            Some(("nodes".into(), "node1".into()))
        );
        assert_eq!(
            r("/registry/deployments/ns/d"),
            Some(("deployments.apps".into(), "ns/d".into()))
        );
        assert_eq!(
            r("/registry/cr.bar.com/foos/ns/f"),
            Some(("foos.cr.bar.com".into(), "ns/f".into()))
        );
        assert_eq!(
            r("/registry/awesome.bears.com/pandas/p"),
            Some(("pandas.awesome.bears.com".into(), "p".into()))
        );
        assert_eq!(
            r("/registry/ranges/serviceips"),
            Some(("serviceipallocations".into(), "".into()))
        );
        assert_eq!(
            r("/registry/clustertrustbundles/example.com:signer:abc"),
            Some((
                "clustertrustbundles.certificates.k8s.io".into(),
                "example.com:signer:abc".into()
            ))
        );
        assert_eq!(r("/other/secrets/a"), None);
    }

    #[test]
    fn prefix_end_increments() {
        assert_eq!(
            prefix_end(b"/registry/secrets/"),
            b"/registry/secrets0".to_vec()
        );
        assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
    }
}
