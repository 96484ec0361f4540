use k8s_pb::api::apps::v1 as apps;
use k8s_pb::api::batch::v1 as batch;
use k8s_pb::api::core::v1 as core;
use k8s_pb::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_pb::apimachinery::pkg::runtime::{TypeMeta, Unknown};
use prost::Message;
use serde_json::json;

use super::*;
use crate::codec::object::CBOR_MAGIC;

/// The literal prefilter: it must let through everything a rule can match.
mod prefilter;
/// How objects are walked, what stays quiet, and what never breaks it.
mod walk;

/// A stored value as the apiserver writes a built-in object: `k8s\0` + Unknown.
fn stored(kind: &str, object: &impl Message) -> Vec<u8> {
    let mut v = PROTOBUF_MAGIC.to_vec();
    Unknown {
        type_meta: Some(TypeMeta {
            api_version: Some("v1".into()),
            kind: Some(kind.into()),
        }),
        raw: Some(object.encode_to_vec()),
        content_encoding: Some(String::new()),
        content_type: Some(String::new()),
    }
    .encode(&mut v)
    .unwrap();
    v
}

fn meta(annotations: &[(&str, &str)]) -> Option<ObjectMeta> {
    Some(ObjectMeta {
        name: Some("app".into()),
        namespace: Some("prod".into()),
        annotations: annotations
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..Default::default()
    })
}

fn configmap(data: &[(&str, &str)]) -> Vec<u8> {
    stored(
        "ConfigMap",
        &core::ConfigMap {
            metadata: meta(&[]),
            data: data
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        },
    )
}

fn container(name: &str, env: &[(&str, &str)]) -> core::Container {
    core::Container {
        name: Some(name.into()),
        image: Some("registry.example/app:1.2.3".into()),
        env: env
            .iter()
            .map(|(n, v)| core::EnvVar {
                name: Some(n.to_string()),
                value: Some(v.to_string()),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }
}

fn template(spec: core::PodSpec) -> Option<core::PodTemplateSpec> {
    Some(core::PodTemplateSpec {
        metadata: meta(&[]),
        spec: Some(spec),
    })
}

fn deployment(annotations: &[(&str, &str)], spec: core::PodSpec) -> Vec<u8> {
    stored(
        "Deployment",
        &apps::Deployment {
            metadata: meta(annotations),
            spec: Some(apps::DeploymentSpec {
                replicas: Some(2),
                template: template(spec),
                ..Default::default()
            }),
            ..Default::default()
        },
    )
}

fn env_deployment(env: &[(&str, &str)]) -> Vec<u8> {
    deployment(
        &[],
        core::PodSpec {
            containers: vec![container("app", env)],
            ..Default::default()
        },
    )
}

fn cr(value: serde_json::Value) -> Vec<u8> {
    serde_json::to_vec(&value).unwrap()
}

fn crs() -> GroupResource {
    GroupResource::new("example.com", "widgets")
}

fn hit(path: &str, rule: &str) -> Hit {
    Hit {
        path: path.into(),
        rule: rule.into(),
    }
}

/// A positive case: the stored value, the secret in it, and the exact hits.
struct Case {
    resource: GroupResource,
    value: Vec<u8>,
    secret: &'static str,
    hits: Vec<Hit>,
}

fn case(value: Vec<u8>, secret: &'static str, hits: &[(&str, &str)]) -> Case {
    let resource = match value.first() {
        Some(b'{') => crs(),
        _ => GroupResource::new("", "configmaps"),
    };
    Case {
        resource,
        value,
        secret,
        hits: hits.iter().map(|(p, r)| hit(p, r)).collect(),
    }
}

const PEM_KEY: &str = "MIIEowIBAAKCAQEAwJ3x8hEo0PxMfYYQqk3M6y4pA9H1xN";
const JWT: &str = "eyJhbGciOiJSUzI1NiIsImtpZCI6ImFiYyJ9.eyJpc3MiOiJrdWJlcm5ldGVzL3NlcnZpY2VhY2NvdW50In0.c2lnbmF0dXJlLXNpZ25hdHVyZS1zaWduYXR1cmU";
const AWS_ID: &str = "AKIAIOSFODNN7EXAMPLE";
const AWS_KEY: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
const AZURE_KEY: &str = "dGhpc2lzbm90YXJlYWxrZXl0aGlzaXNub3RhcmVhbGtleQ==";
const GITHUB: &str = "ghp_0123456789abcdefghijABCDEFGHIJ012345";
const GITLAB: &str = "glpat-Ab1Cd2Ef3Gh4Ij5Kl6Mn";
const SLACK: &str = "xoxb-1234567890-0987654321-AbCdEfGhIjKl";

fn case_pem() -> Case {
    let key =
        format!("-----BEGIN RSA PRIVATE KEY-----\n{PEM_KEY}\n-----END RSA PRIVATE KEY-----\n");
    let value = configmap(&[
        ("tls.key", &key),
        ("tls.crt", "-----BEGIN CERTIFICATE-----\nMIIB\n"),
    ]);
    case(value, PEM_KEY, &[("data.tls.key", "pem-private-key")])
}

fn case_kubeconfig() -> Case {
    let kc = "apiVersion: v1\nkind: Config\nclusters:\n- name: prod\n  cluster:\n    server: https://10.0.0.1:6443\nusers:\n- name: admin\n  user:\n    token: kc-0a1b2c3d4e5f6a7b8c9d\n";
    let value = configmap(&[("admin.conf", kc)]);
    case(
        value,
        "kc-0a1b2c3d4e5f6a7b8c9d",
        &[("data.admin.conf", "kubeconfig-credentials")],
    )
}

fn case_bearer() -> Case {
    let value = env_deployment(&[("AUTH_HEADER", &format!("Bearer {JWT}")), ("PORT", "8080")]);
    let path = "spec.template.spec.containers[app].env[AUTH_HEADER]";
    case(value, JWT, &[(path, "bearer-token")])
}

fn case_aws() -> Case {
    let ini = format!(
        "[default]\naws_access_key_id = {AWS_ID}\naws_secret_access_key = {AWS_KEY}\nregion = eu-west-1\n"
    );
    let value = configmap(&[("aws.ini", &ini)]);
    case(value, AWS_KEY, &[("data.aws.ini", "aws-access-key")])
}

fn case_gcp() -> Case {
    let key = json!({"type": "service_account", "project_id": "p", "private_key_id": "k1",
        "private_key": format!("-----BEGIN PRIVATE KEY-----\n{PEM_KEY}\n-----END PRIVATE KEY-----\n"),
        "client_email": "sa@p.iam.gserviceaccount.com"});
    let value = cr(
        json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"},
        "spec": {"serviceAccountJson": key.to_string()}}),
    );
    let path = "spec.serviceAccountJson";
    case(
        value,
        PEM_KEY,
        &[(path, "pem-private-key"), (path, "gcp-service-account-key")],
    )
}

fn case_azure() -> Case {
    let cs = format!(
        "DefaultEndpointsProtocol=https;AccountName=acct;AccountKey={AZURE_KEY};EndpointSuffix=core.windows.net"
    );
    case(
        configmap(&[("storage", &cs)]),
        AZURE_KEY,
        &[("data.storage", "azure-connection-string")],
    )
}

fn case_url() -> Case {
    let value = env_deployment(&[("DATABASE_URL", "postgres://app:s3cr3t-pw@db.prod:5432/app")]);
    let path = "spec.template.spec.containers[app].env[DATABASE_URL]";
    case(value, "s3cr3t-pw", &[(path, "url-credentials")])
}

fn case_github() -> Case {
    let value =
        cr(json!({"kind": "Widget", "spec": {"git": {"auth": [format!("x-access:{GITHUB}")]}}}));
    case(value, GITHUB, &[("spec.git.auth[0]", "github-token")])
}

fn case_gitlab() -> Case {
    case(
        configmap(&[("ci.env", &format!("CI_TOKEN_VALUE={GITLAB}\n"))]),
        GITLAB,
        &[("data.ci.env", "gitlab-token")],
    )
}

fn case_slack() -> Case {
    let value = cr(json!({"kind": "Alert", "spec": {"receivers": [{"slack": {"hook": SLACK}}]}}));
    case(
        value,
        SLACK,
        &[("spec.receivers[0].slack.hook", "slack-token")],
    )
}

fn case_field_name() -> Case {
    let value = cr(
        json!({"apiVersion": "db.example.com/v1", "kind": "Database",
        "metadata": {"name": "db", "annotations": {"example.com/api-key": "hunter2-annot"}},
        "spec": {"password": "hunter2-pw", "users": [{"name": "app", "token": "hunter2-tok"}],
            "AWS_SECRET_ACCESS_KEY_ID": "x", "template": {"env": [{"name": "DB_PASSWORD", "value": "hunter2-env"}]}}}),
    );
    let hits = [
        ("metadata.annotations[example.com/api-key]", "field-name"),
        ("spec.password", "field-name"),
        ("spec.template.env[DB_PASSWORD]", "field-name"),
        ("spec.users[0].token", "field-name"),
    ];
    case(value, "hunter2", &hits)
}

fn case_bearing() -> Case {
    let value = cr(
        json!({"apiVersion": "clustersecret.io/v1", "kind": "ClusterSecret",
        "metadata": {"name": "pull"}, "matchNamespace": ["prod-.*"], "data": {"tls.crt": "aHVudGVyMi1iZWFyaW5n"}}),
    );
    let mut c = case(
        value,
        "aHVudGVyMi1iZWFyaW5n",
        &[("data", "secret-bearing-resource")],
    );
    c.resource = GroupResource::new("clustersecret.io", "clustersecrets");
    c
}

fn cases() -> Vec<Case> {
    vec![
        case_pem(),
        case_kubeconfig(),
        case_bearer(),
        case_aws(),
        case_gcp(),
        case_azure(),
        case_url(),
        case_github(),
        case_gitlab(),
        case_slack(),
        case_field_name(),
        case_bearing(),
    ]
}

fn check(c: Case) {
    assert_eq!(find(&c.resource, &c.value, 100), c.hits);
}

#[test]
fn pem_private_key() {
    check(case_pem());
}

#[test]
fn kubeconfig_credentials() {
    check(case_kubeconfig());
    // JSON form, a client key, as a string field of a custom resource.
    let kc = json!({"users": [{"name": "a", "user": {"client-key-data": "LS0tLS1CRUdJTiBFQyBQUklWQVRF"}}]});
    let v = cr(json!({"kind": "Cluster", "spec": {"kubeconfig": kc.to_string()}}));
    assert_eq!(
        find(&crs(), &v, 9),
        [hit("spec.kubeconfig", "kubeconfig-credentials")]
    );
}

#[test]
fn bearer_token() {
    check(case_bearer());
}

#[test]
fn aws_access_key() {
    check(case_aws());
    let v = cr(json!({"kind": "Backup", "spec": {"s3": {"keyId": AWS_ID}}}));
    assert_eq!(
        find(&crs(), &v, 9),
        [hit("spec.s3.keyId", "aws-access-key")]
    );
}

#[test]
fn gcp_service_account_key() {
    check(case_gcp());
}

#[test]
fn azure_connection_string() {
    check(case_azure());
}

#[test]
fn url_credentials() {
    check(case_url());
    // Placeholders and masks are not passwords.
    for url in [
        "postgres://app:${DB_PASS}@db/x",
        "redis://:****@cache:6379",
        "https://user@host/x",
    ] {
        assert_eq!(find(&crs(), &cr(json!({"spec": {"url": url}})), 9), []);
    }
}

#[test]
fn github_token() {
    check(case_github());
}

#[test]
fn gitlab_token() {
    check(case_gitlab());
}

#[test]
fn slack_token() {
    check(case_slack());
}

#[test]
fn field_name() {
    check(case_field_name());
    // ConfigMap keys, data and binaryData.
    let mut cm = core::ConfigMap {
        data: [("DB_PASSWORD".to_string(), "hunter2".to_string())].into(),
        binary_data: [("api-key".to_string(), b"\x01\x02".to_vec())].into(),
        ..Default::default()
    };
    cm.data
        .insert("password.example".into(), "not a name match".into());
    let got = find(
        &GroupResource::new("", "configmaps"),
        &stored("ConfigMap", &cm),
        9,
    );
    assert_eq!(
        got,
        [
            hit("data.DB_PASSWORD", "field-name"),
            hit("binaryData.api-key", "field-name")
        ]
    );
}

#[test]
fn references_and_empty_values_are_not_secrets() {
    for name in [
        "secretName",
        "secretRef",
        "existingSecret",
        "passwordSecretRef",
        "clientSecretName",
        "tokenUrl",
        "tokenTTL",
        "token_ttl",
        "secretKeyRef",
        "passwordFile",
        "keySecret",
    ] {
        assert!(!secret_name(name.as_bytes()), "{name}");
    }
    for name in [
        "password",
        "DB_PASSWORD",
        "apiKey",
        "API-KEY",
        "client.secret",
        "AWS_SECRET_ACCESS_KEY",
        "oauthClientSecret",
        "refresh_token",
        "Credentials",
        "privateKey",
    ] {
        assert!(secret_name(name.as_bytes()), "{name}");
    }
    let v = cr(
        json!({"kind": "App", "spec": {"secretRef": {"name": "db"}, "existingSecret": "bar",
        "secretName": "foo", "tokenUrl": "https://auth.example/token", "tokenTTL": "30s", "token": null,
        "password": "", "passwd": false, "apiKey": {"secretKeyRef": {"name": "k", "key": "api-key"}},
        "accessKey": 42, "env": [{"name": "DB_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "db"}}}]}}),
    );
    assert_eq!(find(&crs(), &v, 9), []);
}

#[test]
fn secret_bearing_resource() {
    check(case_bearing());
    let cs = GroupResource::new("clustersecret.io", "clustersecrets");
    assert!(secret_bearing(&cs).is_some());
    assert_eq!(secret_bearing(&GroupResource::new("", "configmaps")), None);
    // v1 valueFrom is a reference; v2 keeps data under spec.template.
    let v = cr(
        json!({"kind": "ClusterSecret", "data": {"valueFrom": {"secretKeyRef": {"name": "s"}}}}),
    );
    assert_eq!(find(&cs, &v, 9), []);
    let v = cr(json!({"kind": "ClusterSecret", "spec": {"template": {"stringData": {"a": "b"}}}}));
    assert_eq!(
        find(&cs, &v, 9),
        [hit("spec.template.stringData", "secret-bearing-resource")]
    );
    let fake = GroupResource::new("generators.external-secrets.io", "fakes");
    let v = cr(json!({"kind": "Fake", "spec": {"data": {"user": "u"}}}));
    assert_eq!(
        find(&fake, &v, 9),
        [hit("spec.data", "secret-bearing-resource")]
    );
    let store = GroupResource::new("external-secrets.io", "secretstores");
    let v = cr(
        json!({"kind": "SecretStore", "spec": {"provider": {"vault": {"server": "https://v"}}}}),
    );
    assert_eq!(find(&store, &v, 9), []);
    let v = cr(
        json!({"kind": "SecretStore", "spec": {"provider": {"fake": {"data": [{"key": "k", "value": "v"}]}}}}),
    );
    assert_eq!(
        find(&store, &v, 9),
        [hit("spec.provider.fake.data", "secret-bearing-resource")]
    );
    // CBOR: `data` followed by a one-entry map.
    let mut v = CBOR_MAGIC.to_vec();
    v.extend(b"\xa2\x64kind\x6dClusterSecret\x64data\xa1\x61a\x61b");
    assert_eq!(
        find(&cs, &v, 9),
        [hit(OBJECT_BYTES, "secret-bearing-resource")]
    );
}

#[test]
fn no_hit_contains_the_value() {
    for c in cases() {
        let hits = find(&c.resource, &c.value, 100);
        assert!(!hits.is_empty());
        for h in hits {
            assert!(
                !h.path.contains(c.secret) && !h.rule.contains(c.secret),
                "{h:?}"
            );
        }
    }
}
