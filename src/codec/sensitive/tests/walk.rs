use super::*;

#[test]
fn every_pod_template_kind_and_container_list() {
    let spec = || core::PodSpec {
        init_containers: vec![container("init", &[("MIGRATE_PASSWORD", "pw-1")])],
        containers: vec![container("app", &[("API_TOKEN", "pw-2")])],
        ephemeral_containers: vec![core::EphemeralContainer {
            ephemeral_container_common: Some(core::EphemeralContainerCommon {
                name: Some("debug".into()),
                env: vec![core::EnvVar {
                    name: Some("ACCESS_KEY".into()),
                    value: Some("pw-3".into()),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        }],
        ..Default::default()
    };
    let job = || batch::JobSpec {
        template: template(spec()),
        ..Default::default()
    };
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (
            stored(
                "Pod",
                &core::Pod {
                    spec: Some(spec()),
                    ..Default::default()
                },
            ),
            "spec",
        ),
        (
            stored(
                "PodTemplate",
                &core::PodTemplate {
                    template: template(spec()),
                    ..Default::default()
                },
            ),
            "template.spec",
        ),
        (
            stored(
                "ReplicationController",
                &core::ReplicationController {
                    spec: Some(core::ReplicationControllerSpec {
                        template: template(spec()),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
            ),
            "spec.template.spec",
        ),
        (deployment(&[], spec()), "spec.template.spec"),
        (
            stored(
                "ReplicaSet",
                &apps::ReplicaSet {
                    spec: Some(apps::ReplicaSetSpec {
                        template: template(spec()),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
            ),
            "spec.template.spec",
        ),
        (
            stored(
                "StatefulSet",
                &apps::StatefulSet {
                    spec: Some(apps::StatefulSetSpec {
                        template: template(spec()),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
            ),
            "spec.template.spec",
        ),
        (
            stored(
                "DaemonSet",
                &apps::DaemonSet {
                    spec: Some(apps::DaemonSetSpec {
                        template: template(spec()),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
            ),
            "spec.template.spec",
        ),
        (
            stored(
                "Job",
                &batch::Job {
                    spec: Some(job()),
                    ..Default::default()
                },
            ),
            "spec.template.spec",
        ),
        (
            stored(
                "CronJob",
                &batch::CronJob {
                    spec: Some(batch::CronJobSpec {
                        job_template: Some(batch::JobTemplateSpec {
                            spec: Some(job()),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
            ),
            "spec.jobTemplate.spec.template.spec",
        ),
    ];
    for (value, prefix) in cases {
        // Fields come out in tag order: containers (2), initContainers (20), ephemeral (34).
        let want = [
            hit(
                &format!("{prefix}.containers[app].env[API_TOKEN]"),
                "field-name",
            ),
            hit(
                &format!("{prefix}.initContainers[init].env[MIGRATE_PASSWORD]"),
                "field-name",
            ),
            hit(
                &format!("{prefix}.ephemeralContainers[debug].env[ACCESS_KEY]"),
                "field-name",
            ),
        ];
        assert_eq!(
            find(&GroupResource::new("apps", "x"), &value, 9),
            want,
            "{prefix}"
        );
    }
}

#[test]
fn matches_outside_walked_fields_are_object_bytes() {
    let url = "amqp://guest:guest-pw@mq:5672";
    let mut spec = core::PodSpec {
        containers: vec![container("app", &[("BROKER", url)])],
        ..Default::default()
    };
    // Only in the env value and the last-applied annotation: each reported at its own path.
    let applied = json!({"spec": {"template": {"spec": {"containers": [{"env": [{"name": "BROKER", "value": url}]}]}}}});
    let v = deployment(&[(LAST_APPLIED, &applied.to_string())], spec.clone());
    let annotation = format!("metadata.annotations[{LAST_APPLIED}]");
    let env = "spec.template.spec.containers[app].env[BROKER]";
    assert_eq!(
        find(&crs(), &v, 9),
        [
            hit(&annotation, "url-credentials"),
            hit(env, "url-credentials")
        ]
    );
    // Once more in the command line: not a walked field.
    spec.containers[0].args = vec![format!("--broker={url}")];
    let v = deployment(&[], spec);
    assert_eq!(
        find(&crs(), &v, 9),
        [
            hit(env, "url-credentials"),
            hit(OBJECT_BYTES, "url-credentials")
        ]
    );
    // Any other kind: the object's bytes.
    let svc = core::Service {
        metadata: meta(&[("example.com/key-id", AWS_ID)]),
        ..Default::default()
    };
    assert_eq!(
        find(&crs(), &stored("Service", &svc), 9),
        [hit(OBJECT_BYTES, "aws-access-key")]
    );
    // CBOR and anything else: the bytes.
    let mut cbor = CBOR_MAGIC.to_vec();
    cbor.extend(format!("\x78\x40{JWT}").as_bytes());
    assert_eq!(find(&crs(), &cbor, 9), [hit(OBJECT_BYTES, "bearer-token")]);
}

#[test]
fn json_walk_skips_managed_fields_and_reads_last_applied_as_content() {
    let applied =
        json!({"spec": {"password": "hunter2", "db": "mysql://root:hunter2@db/x"}}).to_string();
    let v = cr(
        json!({"kind": "App", "metadata": {"annotations": {LAST_APPLIED: applied},
        "managedFields": [{"manager": "kubectl", "fieldsV1": {"f:spec": {"f:password": {}}}, "password": "x"}]}}),
    );
    let path = format!("metadata.annotations[{LAST_APPLIED}]");
    assert_eq!(find(&crs(), &v, 9), [hit(&path, "url-credentials")]);
}

const NGINX: &str = "worker_processes auto;\nevents { worker_connections 1024; }\nhttp {\n  server {\n    listen 443 ssl;\n    server_name example.com;\n    ssl_certificate /etc/tls/tls.crt;\n    ssl_certificate_key /etc/tls/tls.key;\n    location / { proxy_pass http://backend:8080; proxy_set_header Host $host; }\n    location /api { proxy_pass https://api.internal:8443/v1/; }\n  }\n}\n";
const PROPS: &str = "spring.datasource.url=jdbc:postgresql://db:5432/app\nspring.datasource.username=app\noauth.tokenUrl=https://auth.example.com/oauth/token\nfeature.flags=a,b,c\n";
const HELM: &str = "tls:\n  secretName: foo\nauth:\n  existingSecret: bar\n  passwordSecretRef:\n    name: db\n    key: password\ntimezone: Asia/Tokyo\n";
const LOGGING: &str = "<configuration>\n  <appender name=\"STDOUT\" class=\"ch.qos.logback.core.ConsoleAppender\">\n    <encoder><pattern>%d{HH:mm:ss} %-5level %logger{36} - %msg%n</pattern></encoder>\n  </appender>\n  <root level=\"INFO\"><appender-ref ref=\"STDOUT\"/></root>\n</configuration>\n";
const CERT: &str = "-----BEGIN CERTIFICATE-----\nMIIDdzCCAl+gAwIBAgIEAgAAuTANBgkqhkiG9w0BAQUFADBaMQswCQYDVQQGEwJJRTESMBAGA1UE\n-----END CERTIFICATE-----\n";
const APP_JSON: &str = "{\"server\": {\"port\": 8080, \"token_ttl\": 30, \"session_secret_name\": \"web\"}, \"upstream\": \"https://api.example.com:443/v2?key=abc\", \"ssh\": \"git@github.com:org/repo.git\"}";

fn ordinary_configmap(i: usize) -> Vec<u8> {
    let name = format!("cm-{i}");
    let data: Vec<(String, String)> = match i % 6 {
        0 => vec![("nginx.conf".into(), NGINX.into())],
        1 => vec![("application.properties".into(), PROPS.into())],
        2 => vec![("values.yaml".into(), HELM.into())],
        3 => vec![("logback.xml".into(), LOGGING.into())],
        4 => vec![
            ("ca.crt".into(), CERT.into()),
            ("tls.crt".into(), CERT.into()),
        ],
        _ => vec![
            ("config.json".into(), APP_JSON.into()),
            ("replicas".into(), i.to_string()),
        ],
    };
    stored(
        "ConfigMap",
        &core::ConfigMap {
            metadata: Some(ObjectMeta {
                name: Some(name),
                namespace: Some("prod".into()),
                ..Default::default()
            }),
            data: data.into_iter().collect(),
            ..Default::default()
        },
    )
}

#[test]
fn ordinary_objects_have_no_hits() {
    let cm = GroupResource::new("", "configmaps");
    for i in 0..200 {
        assert_eq!(find(&cm, &ordinary_configmap(i), 9), [], "configmap {i}");
    }
    let env = [
        ("TZ", "Asia/Tokyo"),
        ("LOG_LEVEL", "info"),
        ("UPSTREAM", "https://api.example.com:8443/v1"),
        ("TOKEN_URL", "https://auth/token"),
        ("SECRET_NAME", "db"),
        ("PASSWORD_FILE", "/run/pw"),
        ("KEY", "x"),
    ];
    assert_eq!(find(&cm, &env_deployment(&env), 9), []);
    let v = cr(
        json!({"apiVersion": "example.com/v1", "kind": "App", "metadata": {"name": "a"},
        "spec": {"secretRef": {"name": "db-creds"}, "tokenTTL": 3600, "config": APP_JSON, "cert": CERT}}),
    );
    assert_eq!(find(&crs(), &v, 9), []);
}

#[test]
fn caps_dedups_and_truncates() {
    let many: Vec<(String, String)> = (0..50)
        .map(|i| (format!("k{i}_password"), "pw".to_string()))
        .collect();
    let cm = core::ConfigMap {
        data: many.into_iter().collect(),
        ..Default::default()
    };
    assert_eq!(find(&crs(), &stored("ConfigMap", &cm), 7).len(), 7);
    assert_eq!(find(&crs(), &stored("ConfigMap", &cm), 0), []);
    let long = format!("{}_password", "é".repeat(300));
    let v = cr(json!({"spec": {long: "pw", "a": [AWS_ID, AWS_ID]}}));
    let hits = find(&crs(), &v, 9);
    assert_eq!(
        hits[..2],
        [
            hit("spec.a[0]", "aws-access-key"),
            hit("spec.a[1]", "aws-access-key")
        ]
    );
    assert_eq!(hits[2].path.chars().count(), MAX_PATH);
    assert!(hits[2].path.starts_with("spec[éé"));
}

#[test]
fn literals_across_chunk_boundaries_and_huge_values() {
    for pad in (1000..1030).chain(2030..2050) {
        let value = format!("{}{AWS_ID} ", "x ".repeat(pad / 2));
        assert_eq!(
            find(&crs(), &configmap(&[("big", &value)]), 9),
            [hit("data.big", "aws-access-key")],
            "{pad}"
        );
    }
    let huge = format!("{}\n-----BEGIN PRIVATE KEY-----\n", "a".repeat(5 << 20));
    assert_eq!(
        find(&crs(), &configmap(&[("big", &huge)]), 9),
        [hit("data.big", "pem-private-key")]
    );
}

#[test]
fn never_panics() {
    let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
    let mut rand = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for i in 0..2000 {
        let len = (rand() % 600) as usize;
        let mut v: Vec<u8> = (0..len).map(|_| rand() as u8).collect();
        let prefix: &[u8] = match i % 4 {
            0 => PROTOBUF_MAGIC,
            1 => b"{\"password\": \"eyJ",
            2 => CBOR_MAGIC,
            _ => b"AKIA://:@",
        };
        v.splice(0..0, prefix.iter().copied());
        find(
            &GroupResource::new("clustersecret.io", "clustersecrets"),
            &v,
            9,
        );
    }
    // Every truncation of every positive case.
    for c in cases() {
        for end in 0..c.value.len() {
            find(&c.resource, &c.value[..end], 9);
        }
    }
    // Nesting past the walk's limit is searched as content; past serde's limit, as bytes.
    let mut deep = json!({"password": "hunter2", "key": GITHUB});
    for _ in 0..50 {
        deep = json!({"a": [deep]});
    }
    let hits = find(&crs(), &cr(deep), 9);
    assert_eq!(
        hits.iter().map(|h| h.rule.as_str()).collect::<Vec<_>>(),
        ["github-token"]
    );
    assert!(hits[0].path.starts_with("a[0].a[0]"));
    let deeper = format!(
        "{{\"a\":{}\"{GITHUB}\"{}}}",
        "[".repeat(5000),
        "]".repeat(5000)
    );
    assert_eq!(
        find(&crs(), deeper.as_bytes(), 9),
        [hit(OBJECT_BYTES, "github-token")]
    );
}

/// What every stored object carries besides its data: labels, annotations, managedFields.
fn full_meta(fields: &str) -> Option<ObjectMeta> {
    use k8s_pb::apimachinery::pkg::apis::meta::v1::{FieldsV1, ManagedFieldsEntry, Time};
    let labels = [
        ("app.kubernetes.io/name", "web"),
        ("app.kubernetes.io/instance", "web-prod"),
        ("app.kubernetes.io/managed-by", "Helm"),
        ("helm.sh/chart", "web-4.2.0"),
    ];
    Some(ObjectMeta {
        name: Some("web-config".into()),
        namespace: Some("prod".into()),
        uid: Some("5f0c7b1e-6a3d-4c52-9a37-0b8f1d2e3c4a".into()),
        creation_timestamp: Some(Time {
            seconds: Some(1_700_000_000),
            nanos: Some(0),
        }),
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        annotations: [("meta.helm.sh/release-name".to_string(), "web".to_string())].into(),
        managed_fields: vec![ManagedFieldsEntry {
            manager: Some("helm".into()),
            operation: Some("Update".into()),
            api_version: Some("v1".into()),
            time: Some(Time {
                seconds: Some(1_700_000_000),
                nanos: Some(0),
            }),
            fields_type: Some("FieldsV1".into()),
            fields_v1: Some(FieldsV1 {
                raw: Some(fields.as_bytes().to_vec()),
            }),
            subresource: Some(String::new()),
        }],
        ..Default::default()
    })
}

const SERVER_YAML: &str = "server:\n  port: 8080\n  shutdown: graceful\n  compression:\n    enabled: true\nmanagement:\n  endpoints:\n    web:\n      exposure:\n        include: health,info,prometheus\nlogging:\n  level:\n    root: INFO\n    com.example.web: DEBUG\nspring:\n  application:\n    name: web\n  jackson:\n    default-property-inclusion: non_null\ncache:\n  ttl: 600\n  size: 10000\n";

/// The cost per ordinary object, the prefilter's budget:
/// `cargo test --release --lib codec::sensitive -- --ignored --nocapture`.
#[test]
#[ignore]
fn timing() {
    let cm_fields = r#"{"f:data":{".":{},"f:application.yaml":{}},"f:metadata":{"f:annotations":{".":{},"f:meta.helm.sh/release-name":{}},"f:labels":{".":{},"f:app.kubernetes.io/instance":{},"f:app.kubernetes.io/managed-by":{},"f:app.kubernetes.io/name":{},"f:helm.sh/chart":{}}}}"#;
    let cm = stored(
        "ConfigMap",
        &core::ConfigMap {
            metadata: full_meta(cm_fields),
            data: [("application.yaml".to_string(), SERVER_YAML.to_string())].into(),
            ..Default::default()
        },
    );
    let dep_fields = r#"{"f:spec":{"f:replicas":{},"f:template":{"f:spec":{"f:containers":{"k:{\"name\":\"web\"}":{".":{},"f:env":{".":{},"k:{\"name\":\"LOG_LEVEL\"}":{".":{},"f:name":{},"f:value":{}}},"f:image":{},"f:name":{},"f:ports":{}}}}}}}"#;
    let mut web = container(
        "web",
        &[
            ("LOG_LEVEL", "info"),
            ("JAVA_OPTS", "-Xmx512m -XX:+UseG1GC"),
            ("SERVER_PORT", "8080"),
        ],
    );
    web.command = vec!["java".into(), "-jar".into(), "/app/web.jar".into()];
    let mut dep = apps::Deployment {
        metadata: full_meta(dep_fields),
        spec: Some(apps::DeploymentSpec {
            replicas: Some(3),
            template: template(core::PodSpec {
                containers: vec![web],
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    dep.metadata.as_mut().unwrap().name = Some("web".into());
    let dep = stored("Deployment", &dep);
    let crv = cr(
        json!({"apiVersion": "monitoring.coreos.com/v1", "kind": "ServiceMonitor",
        "metadata": {"name": "web", "namespace": "prod", "uid": "5f0c7b1e-6a3d-4c52-9a37-0b8f1d2e3c4a",
            "creationTimestamp": "2023-11-14T22:13:20Z", "generation": 1,
            "labels": {"app.kubernetes.io/name": "web", "app.kubernetes.io/instance": "web-prod", "release": "kube-prometheus-stack"},
            "managedFields": [{"manager": "helm", "operation": "Update", "apiVersion": "monitoring.coreos.com/v1", "time": "2023-11-14T22:13:20Z", "fieldsType": "FieldsV1",
                "fieldsV1": {"f:metadata": {"f:labels": {".": {}, "f:app.kubernetes.io/name": {}, "f:release": {}}}, "f:spec": {".": {}, "f:endpoints": {}, "f:selector": {}}}}]},
        "spec": {"endpoints": [{"port": "http", "path": "/actuator/prometheus", "interval": "30s", "scrapeTimeout": "10s"}],
            "namespaceSelector": {"matchNames": ["prod"]}, "selector": {"matchLabels": {"app.kubernetes.io/name": "web", "app.kubernetes.io/instance": "web-prod"}}}}),
    );
    let mut with_ref = serde_json::from_slice::<serde_json::Value>(&crv).unwrap();
    with_ref["spec"]["endpoints"][0]["basicAuth"] = json!({"username": {"name": "web-metrics", "key": "user"},
        "password": {"name": "web-metrics", "key": "password"}});
    let objects: Vec<(&str, Vec<u8>)> = vec![
        ("configmap (application.yaml)", cm),
        (
            "custom resource with a secret reference (parsed)",
            cr(with_ref),
        ),
        ("deployment", dep),
        ("custom resource (JSON)", crv),
        (
            "configmap nginx.conf (proxy_pass: decoded)",
            ordinary_configmap(0),
        ),
        (
            "configmap with a password key",
            configmap(&[("DB_PASSWORD", "x"), ("nginx.conf", NGINX)]),
        ),
    ];
    // The best of several rounds: the machine is shared.
    let time = |f: &dyn Fn() -> usize| {
        let n = 50_000;
        (0..7)
            .map(|_| {
                let start = std::time::Instant::now();
                for _ in 0..n {
                    std::hint::black_box(f());
                }
                start.elapsed().as_nanos() / n
            })
            .min()
            .unwrap_or_default()
    };
    for (name, v) in &objects {
        let want = usize::from(name.contains("password"));
        assert_eq!(find(&crs(), v, 16).len(), want, "{name}");
        let prefilter = time(&|| triggers(std::hint::black_box(v)) as usize);
        let all = time(&|| find(&crs(), std::hint::black_box(v), 16).len());
        let triggers = triggers(v);
        println!(
            "{name}: {} bytes, {all} ns/object ({prefilter} ns prefilter, triggers {triggers:#x})",
            v.len()
        );
    }
}
