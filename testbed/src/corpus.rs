//! Config corpus shared by the parser tests and the apiserver-as-oracle test: each case is a
//! config, and either `None` (valid) or the field path and message the apiserver gives.

/// A 16-byte key.
pub const K16: &str = "MDEyMzQ1Njc4OWFiY2RlZg=="; // 16 bytes
/// A 20-byte key (a length no provider accepts).
pub const K20: &str = "MDEyMzQ1Njc4OWFiY2RlZmdoaWo="; // 20 bytes
/// A 24-byte key.
pub const K24: &str = "MDEyMzQ1Njc4OWFiY2RlZmdoaWprbG1u"; // 24 bytes
/// A 32-byte key.
pub const K32: &str = "MDEyMzQ1Njc4OWFiY2RlZmdoaWprbG1ub3BxcnN0dXY="; // 32 bytes

/// One config case: its YAML and the first error expected, if any.
pub struct Case {
    /// A short name for failure messages.
    pub name: &'static str,
    /// The config text.
    pub yaml: String,
    /// (field path, message fragment) of the first expected error; `None` = valid.
    pub error: Option<(&'static str, &'static str)>,
    /// The real apiserver can judge it at startup (no KMS plugin needed).
    pub oracle: bool,
}

fn doc(resources: &str) -> String {
    format!(
        "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n{resources}"
    )
}

fn case(name: &'static str, resources: &str, error: Option<(&'static str, &'static str)>) -> Case {
    Case {
        name,
        yaml: doc(resources),
        error,
        oracle: true,
    }
}

/// Every case, valid ones and invalid ones.
pub fn cases() -> Vec<Case> {
    let mut v = vec![
        case(
            "all providers valid",
            &format!("- resources: [secrets]\n  providers:\n  - aesgcm: {{keys: [{{name: g, secret: {K16}}}]}}\n  - aescbc: {{keys: [{{name: 'c:1', secret: {K24}}}, {{name: c2, secret: {K32}}}]}}\n  - secretbox: {{keys: [{{name: s, secret: {K32}}}]}}\n  - identity: {{}}\n"),
            None,
        ),
        case(
            "specific before wildcard is allowed",
            &format!("- resources: [events]\n  providers: [{{identity: {{}}}}]\n- resources: ['*.apps']\n  providers: [{{aescbc: {{keys: [{{name: a, secret: {K32}}}]}}}}]\n- resources: ['*.*']\n  providers: [{{secretbox: {{keys: [{{name: s, secret: {K32}}}]}}}}]\n"),
            None,
        ),
        case(
            "same resource twice concatenates",
            &format!("- resources: [secrets]\n  providers: [{{aescbc: {{keys: [{{name: a, secret: {K32}}}]}}}}]\n- resources: [secrets, configmaps]\n  providers: [{{aescbc: {{keys: [{{name: b, secret: {K32}}}]}}}}]\n"),
            None,
        ),
        Case {
            name: "no resources",
            yaml: "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources: []\n".into(),
            error: Some(("resources", "at least one resources is required")),
            oracle: true,
        },
        case(
            "entry without resources",
            "- providers: [{identity: {}}]\n",
            Some(("resources[0].resources", "at least one resources[0].resources is required")),
        ),
        case(
            "entry without providers",
            "- resources: [secrets]\n",
            Some(("resources[0].providers", "at least one resources[0].providers is required")),
        ),
        case(
            "empty provider element",
            "- resources: [secrets]\n  providers: [{}]\n",
            Some(("resources[0].providers[0]", "provider does not contain any of the expected providers")),
        ),
        case(
            "two providers in one element",
            &format!("- resources: [secrets]\n  providers: [{{identity: {{}}, aescbc: {{keys: [{{name: a, secret: {K32}}}]}}}}]\n"),
            Some(("resources[0].providers[0]", "more than one provider specified in a single element")),
        ),
        case(
            "no keys",
            "- resources: [secrets]\n  providers: [{aescbc: {keys: []}}]\n",
            Some(("resources[0].providers[0].aescbc.keys", "at least one keys is required")),
        ),
        case(
            "key without name",
            &format!("- resources: [secrets]\n  providers: [{{aescbc: {{keys: [{{secret: {K32}}}]}}}}]\n"),
            Some(("resources[0].providers[0].aescbc.keys[0].name", "name is a mandatory field for a key")),
        ),
        case(
            "key without secret",
            "- resources: [secrets]\n  providers: [{aescbc: {keys: [{name: a}]}}]\n",
            Some(("resources[0].providers[0].aescbc.keys[0].secret", "secret is a mandatory field for a key")),
        ),
        case(
            "secret not base64",
            "- resources: [secrets]\n  providers: [{secretbox: {keys: [{name: a, secret: 'this-is-not-base64-at-all!'}]}}]\n",
            Some(("resources[0].providers[0].secretbox.keys[0].secret", "secrets must be base64 encoded")),
        ),
        case(
            "aesgcm 20-byte key",
            &format!("- resources: [secrets]\n  providers: [{{aesgcm: {{keys: [{{name: a, secret: {K20}}}]}}}}]\n"),
            Some(("resources[0].providers[0].aesgcm.keys[0].secret", "secret is not of the expected length, got 20, expected one of [16 24 32]")),
        ),
        case(
            "secretbox 16-byte key",
            &format!("- resources: [secrets]\n  providers: [{{secretbox: {{keys: [{{name: a, secret: {K16}}}]}}}}]\n"),
            Some(("resources[0].providers[0].secretbox.keys[0].secret", "got 16, expected one of [32]")),
        ),
        case(
            "capital letters",
            "- resources: [Secrets]\n  providers: [{identity: {}}]\n",
            Some(("resources[0].resources[0]", "resource name should not contain capital letters")),
        ),
        case(
            "bare star",
            "- resources: ['*']\n  providers: [{identity: {}}]\n",
            Some(("resources[0].resources[0]", "use '*.' to encrypt all the resources from core API group")),
        ),
        case(
            "non-REST resource",
            "- resources: [serviceipallocations]\n  providers: [{identity: {}}]\n",
            Some(("resources[0].resources[0]", "resources which do not have REST API/s cannot be encrypted")),
        ),
        case(
            "events.k8s.io group",
            "- resources: [events.events.k8s.io]\n  providers: [{identity: {}}]\n",
            Some(("resources[0].resources[0]", "objects are stored using the 'events' API group in etcd")),
        ),
        case(
            "extensions group",
            "- resources: [deployments.extensions]\n  providers: [{identity: {}}]\n",
            Some(("resources[0].resources[0]", "'extensions' group has been removed")),
        ),
        case(
            "resource across groups",
            "- resources: ['secrets.*']\n  providers: [{identity: {}}]\n",
            Some(("resources[0].resources[0]", "encrypting the same resource across groups is not supported")),
        ),
        case(
            "duplicate in one list",
            "- resources: [secrets, secrets]\n  providers: [{identity: {}}]\n",
            Some(("resources[0].resources", "the same resource cannot be specified multiple times")),
        ),
        case(
            "overlap in one list",
            "- resources: [secrets, '*.']\n  providers: [{identity: {}}]\n",
            Some(("resources[0].resources", "using overlapping resources such as 'secrets' and '*.' in the same resource list is not allowed")),
        ),
        case(
            "masked by earlier group wildcard",
            "- resources: ['*.']\n  providers: [{identity: {}}]\n- resources: [secrets]\n  providers: [{identity: {}}]\n",
            Some(("resources[1].resources[0]", "resource \"secrets\" is masked by earlier rule \"*.\"")),
        ),
        case(
            "masked by earlier all wildcard",
            "- resources: ['*.*']\n  providers: [{identity: {}}]\n- resources: [deployments.apps]\n  providers: [{identity: {}}]\n",
            Some(("resources[1].resources[0]", "resource \"deployments.apps\" is masked by earlier rule \"*.*\"")),
        ),
        case(
            "unknown field",
            "- resources: [secrets]\n  providers: [{identity: {}, pandas: 1}]\n",
            Some(("resources[0].providers[0].pandas", "unknown field \"resources[0].providers[0].pandas\"")),
        ),
        case(
            "unknown top-level field",
            "- resources: [secrets]\n  providers: [{identity: {}}]\nextra: true\n",
            Some(("extra", "unknown field \"extra\"")),
        ),
    ];
    // KMS cases: validation fails before any plugin is dialled, so the apiserver can judge them.
    let kms = |name: &'static str,
               body: &str,
               error: Option<(&'static str, &'static str)>,
               oracle: bool| Case {
        name,
        yaml: doc(&format!("- resources: [secrets]\n  providers:\n{body}")),
        error,
        oracle,
    };
    v.extend([
        kms(
            "kms v2 name with colon",
            "  - kms: {apiVersion: v2, name: 'a:b', endpoint: 'unix:///tmp/kms.sock'}\n",
            Some(("resources[0].providers[0].kms.name", "invalid KMS provider name a:b, must not contain ':'")),
            true,
        ),
        kms(
            "kms duplicate names",
            "  - kms: {apiVersion: v2, name: k, endpoint: 'unix:///tmp/kms.sock'}\n  - kms: {apiVersion: v2, name: k, endpoint: 'unix:///tmp/kms2.sock'}\n",
            Some(("resources[0].providers[1].kms.name", "duplicate KMS provider name k, names must be unique")),
            true,
        ),
        kms(
            "kms http endpoint",
            "  - kms: {apiVersion: v2, name: k, endpoint: 'http://127.0.0.1:1'}\n",
            Some(("resources[0].providers[0].kms.endpoint", "unsupported scheme \"http\" for KMS provider, only unix is supported")),
            true,
        ),
        kms(
            "kms without endpoint",
            "  - kms: {apiVersion: v2, name: k}\n",
            Some(("resources[0].providers[0].kms.endpoint", "endpoint is a mandatory field for a kms")),
            true,
        ),
        kms(
            "kms v2 cachesize",
            "  - kms: {apiVersion: v2, name: k, endpoint: 'unix:///tmp/kms.sock', cachesize: 10}\n",
            Some(("resources[0].providers[0].kms.cachesize", "cachesize is not supported in v2")),
            true,
        ),
        kms(
            "kms v1 cachesize zero",
            "  - kms: {name: k, endpoint: 'unix:///tmp/kms.sock', cachesize: 0}\n",
            Some(("resources[0].providers[0].kms.cachesize", "cachesize should be a positive value, or negative to disable")),
            true,
        ),
        kms(
            "kms zero timeout",
            "  - kms: {apiVersion: v2, name: k, endpoint: 'unix:///tmp/kms.sock', timeout: 0s}\n",
            Some(("resources[0].providers[0].kms.timeout", "timeout should be a positive value")),
            true,
        ),
        kms(
            "kms unknown apiVersion",
            "  - kms: {apiVersion: v3, name: k, endpoint: 'unix:///tmp/kms.sock'}\n",
            Some(("resources[0].providers[0].kms.apiVersion", "only v1 and v2 are supported")),
            true,
        ),
        kms(
            "kms v2 valid",
            "  - kms: {apiVersion: v2, name: k, endpoint: 'unix:///@atrest-test', timeout: 1s}\n  - identity: {}\n",
            None,
            false,
        ),
    ]);
    v.push(Case {
        name: "legacy EncryptionConfig",
        yaml: format!("kind: EncryptionConfig\napiVersion: v1\nresources:\n- resources: [secrets]\n  providers:\n  - aescbc:\n      keys:\n      - name: key1\n        secret: {K32}\n  - identity: {{}}\n"),
        error: None,
        oracle: true,
    });
    v.push(Case {
        name: "json form",
        yaml: format!(
            r#"{{"apiVersion":"apiserver.config.k8s.io/v1","kind":"EncryptionConfiguration","resources":[{{"resources":["secrets"],"providers":[{{"secretbox":{{"keys":[{{"name":"k","secret":"{K32}"}}]}}}},{{"identity":{{}}}}]}}]}}"#
        ),
        error: None,
        oracle: true,
    });
    v
}
