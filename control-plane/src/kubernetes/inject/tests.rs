#![allow(clippy::unwrap_used, clippy::expect_used)]

use base64::Engine;
use serde_json::{json, Value};

use super::annotations::is_quantity;
use super::*;

const TEMPLATE: &str = r#"
[control_plane]
url = "https://agent-secret-store.agent-secrets.svc:8200"
ca_file = "/var/run/agent-secrets/ca.pem"

[kms]
backend = "local"
keyring = "/var/run/agent-secrets/keyring.json"

[[routes]]
prefix = "/openai/"
upstream = "https://api.openai.com/"
"#;

fn injector() -> Injector {
    Injector::new(InjectorSettings {
        image: "registry.example/agent-secret-proxy:0.1.0".into(),
        template: toml::from_str(TEMPLATE).unwrap(),
        credentials_secret: "agent-secret-sidecar".into(),
        token_audience: "agent-secret-store".into(),
        proxy_port: 8080,
        service_account_auth: false,
    })
}

/// A pod as the API server sends it in an AdmissionReview of a CREATE (defaults applied,
/// managed fields and the service-account volume in place).
fn pod(annotations: Value) -> Value {
    json!({
        "kind": "Pod",
        "apiVersion": "v1",
        "metadata": {
            "generateName": "agent-7d9f-",
            "namespace": "agents",
            "creationTimestamp": null,
            "labels": { "app": "agent" },
            "annotations": annotations,
            "managedFields": [{ "manager": "kube-controller-manager", "operation": "Update",
                "apiVersion": "v1", "time": "2026-12-05T18:00:00Z", "fieldsType": "FieldsV1",
                "fieldsV1": { "f:metadata": { "f:labels": { ".": {}, "f:app": {} } } } }],
            "ownerReferences": [{ "apiVersion": "apps/v1", "kind": "ReplicaSet",
                "name": "agent-7d9f", "uid": "5b0c3f0e-8f5e-4c1e-9a57-0b1f7b2c9d11",
                "controller": true, "blockOwnerDeletion": true }]
        },
        "spec": {
            "volumes": [{ "name": "kube-api-access-x7k2p", "projected": { "sources": [
                { "serviceAccountToken": { "expirationSeconds": 3607, "path": "token" } }
            ], "defaultMode": 420 } }],
            "containers": [
                { "name": "agent", "image": "registry.example/agent:1.4",
                  "env": [{ "name": "HTTP_PROXY", "value": "http://corporate-proxy:3128" },
                          { "name": "MODEL", "value": "gpt-4o" }],
                  "resources": {},
                  "volumeMounts": [{ "name": "kube-api-access-x7k2p", "readOnly": true,
                      "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount" }],
                  "terminationMessagePath": "/dev/termination-log",
                  "terminationMessagePolicy": "File", "imagePullPolicy": "IfNotPresent" },
                { "name": "tools", "image": "registry.example/tools:2", "resources": {} }
            ],
            "restartPolicy": "Always",
            "terminationGracePeriodSeconds": 30,
            "dnsPolicy": "ClusterFirst",
            "serviceAccountName": "agent",
            "serviceAccount": "agent",
            "securityContext": {},
            "schedulerName": "default-scheduler",
            "enableServiceLinks": true,
            "preemptionPolicy": "PreemptLowerPriority"
        },
        "status": {}
    })
}

fn review(operation: &str, object: Value) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "kind": "AdmissionReview",
        "apiVersion": "admission.k8s.io/v1",
        "request": {
            "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
            "kind": { "group": "", "version": "v1", "kind": "Pod" },
            "resource": { "group": "", "version": "v1", "resource": "pods" },
            "requestKind": { "group": "", "version": "v1", "kind": "Pod" },
            "requestResource": { "group": "", "version": "v1", "resource": "pods" },
            "namespace": "agents",
            "operation": operation,
            "userInfo": { "username": "system:serviceaccount:kube-system:replicaset-controller",
                "uid": "a7e0ed94-9a0c-4b1d-9a3f-7b3a6c1f4a52",
                "groups": ["system:serviceaccounts", "system:serviceaccounts:kube-system",
                    "system:authenticated"] },
            "object": object,
            "oldObject": null,
            "dryRun": false,
            "options": { "kind": "CreateOptions", "apiVersion": "meta.k8s.io/v1" }
        }
    }))
    .unwrap()
}

fn inject_annotations() -> Value {
    json!({
        "agent-secrets.io/inject": "true",
        "agent-secrets.io/routes": "github=https://api.github.com/, internal=http://llm.internal:8000/v1/",
        "agent-secrets.io/memory-limit": "256Mi",
    })
}

/// The response of a review, checked for the fields the API server requires.
fn response(answer: &Value) -> &Value {
    assert_eq!(answer["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(answer["kind"], "AdmissionReview");
    &answer["response"]
}

/// The pod after the API server applies the response's patch.
fn patched(pod: &Value, response: &Value) -> Value {
    assert_eq!(response["patchType"], "JSONPatch");
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(response["patch"].as_str().expect("a base64 patch"))
        .unwrap();
    let patch: json_patch::Patch = serde_json::from_slice(&bytes).unwrap();
    for op in &patch.0 {
        assert!(
            matches!(op, json_patch::PatchOperation::Add(_)),
            "only add operations: {op}"
        );
    }
    let mut pod = pod.clone();
    json_patch::patch(&mut pod, &patch).unwrap();
    pod
}

fn env_of<'a>(container: &'a Value, name: &str) -> Vec<&'a Value> {
    container["env"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["name"] == name)
        .collect()
}

#[test]
fn an_annotated_pod_gets_the_sidecar_first_its_volumes_and_the_proxy_in_every_container() {
    let pod = pod(inject_annotations());
    let answer = injector().review(&review("CREATE", pod.clone()));
    let response = response(&answer);
    assert_eq!(response["uid"], "705ab4f5-6393-11e8-b7cc-42010a800002");
    assert_eq!(response["allowed"], true);
    let injected = patched(&pod, response);

    let sidecar = &injected["spec"]["initContainers"][0];
    assert_eq!(sidecar["name"], SIDECAR_NAME);
    assert_eq!(
        sidecar["image"],
        "registry.example/agent-secret-proxy:0.1.0"
    );
    assert_eq!(sidecar["restartPolicy"], "Always", "a native sidecar");
    assert_eq!(
        sidecar["command"],
        json!(["/usr/local/bin/agent-secret-proxy"])
    );
    let security = &sidecar["securityContext"];
    assert_eq!(security["runAsNonRoot"], true);
    assert_eq!(security["readOnlyRootFilesystem"], true);
    assert_eq!(security["allowPrivilegeEscalation"], false);
    assert_eq!(security["capabilities"]["drop"], json!(["ALL"]));
    assert_eq!(security["seccompProfile"]["type"], "RuntimeDefault");
    assert_eq!(sidecar["resources"]["limits"]["memory"], "256Mi");
    assert_eq!(sidecar["resources"]["requests"]["cpu"], "25m");
    assert_eq!(sidecar["startupProbe"]["httpGet"]["port"], ADMIN_PORT);

    // Keys come from the Secret as variables, never as values in the pod spec.
    let key = env_of(sidecar, "AGENT_SECRET_SIDECAR_KEY");
    assert_eq!(key.len(), 1);
    assert_eq!(
        key[0]["valueFrom"]["secretKeyRef"]["name"],
        "agent-secret-sidecar"
    );
    assert!(key[0].get("value").is_none());

    // The rendered configuration: the template, this pod's listeners, spool and routes.
    let toml_text = env_of(sidecar, ENV_CONFIG_TOML)[0]["value"]
        .as_str()
        .unwrap();
    let config: toml::Table = toml::from_str(toml_text).unwrap();
    assert_eq!(config["listen"].as_str(), Some("127.0.0.1:8080"));
    assert_eq!(config["admin_listen"].as_str(), Some("0.0.0.0:9090"));
    assert_eq!(
        config["control_plane"]["url"].as_str(),
        Some("https://agent-secret-store.agent-secrets.svc:8200")
    );
    assert_eq!(
        config["audit"]["spool_path"].as_str(),
        Some("/var/lib/agent-secret-proxy/audit-spool.jsonl")
    );
    let routes: Vec<(&str, &str)> = config["routes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["prefix"].as_str().unwrap(),
                r["upstream"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        routes,
        [
            ("/openai/", "https://api.openai.com/"),
            ("/github/", "https://api.github.com/"),
            ("/internal/", "http://llm.internal:8000/v1/"),
        ]
    );

    // The pod's own volume stays; ours follow it.
    let volumes: Vec<&str> = injected["spec"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        volumes,
        [
            "kube-api-access-x7k2p",
            VOLUME_TOKEN,
            VOLUME_CREDENTIALS,
            VOLUME_SPOOL
        ]
    );
    let token = &injected["spec"]["volumes"][1]["projected"]["sources"][0]["serviceAccountToken"];
    assert_eq!(token["audience"], "agent-secret-store");

    // Every app container is pointed at the sidecar; a variable it sets itself is kept.
    for container in injected["spec"]["containers"].as_array().unwrap() {
        assert_eq!(
            env_of(container, "no_proxy")[0]["value"],
            "localhost,127.0.0.1,::1,.svc,.cluster.local"
        );
        assert_eq!(
            env_of(container, "AGENT_SECRET_PROXY_URL")[0]["value"],
            "http://127.0.0.1:8080"
        );
        assert!(
            env_of(container, "HTTPS_PROXY").is_empty(),
            "TLS is not tunnelled"
        );
    }
    let agent = &injected["spec"]["containers"][0];
    assert_eq!(
        env_of(agent, "HTTP_PROXY")
            .iter()
            .map(|e| &e["value"])
            .collect::<Vec<_>>(),
        ["http://corporate-proxy:3128"],
        "the container's own setting wins, and is not duplicated"
    );
    assert_eq!(env_of(agent, "MODEL")[0]["value"], "gpt-4o");
    let tools = &injected["spec"]["containers"][1];
    assert_eq!(
        env_of(tools, "HTTP_PROXY")[0]["value"],
        "http://127.0.0.1:8080"
    );

    assert_eq!(
        injected["metadata"]["annotations"][ANNOTATION_STATUS],
        "injected"
    );
    // Nothing else of the pod changed.
    assert_eq!(
        injected["metadata"]["managedFields"],
        pod["metadata"]["managedFields"]
    );
    assert_eq!(injected["spec"]["dnsPolicy"], "ClusterFirst");
}

#[test]
fn the_sidecar_goes_before_existing_init_containers_which_are_pointed_at_it_too() {
    let mut pod = pod(json!({ "agent-secrets.io/inject": "true" }));
    pod["spec"]["initContainers"] = json!([{ "name": "migrate", "image": "registry.example/m:1" }]);
    pod["spec"].as_object_mut().unwrap().remove("volumes");
    let answer = injector().review(&review("CREATE", pod.clone()));
    let injected = patched(&pod, response(&answer));
    let init = injected["spec"]["initContainers"].as_array().unwrap();
    assert_eq!(init.len(), 2);
    assert_eq!(init[0]["name"], SIDECAR_NAME);
    assert_eq!(init[1]["name"], "migrate");
    assert_eq!(
        env_of(&init[1], "HTTP_PROXY")[0]["value"],
        "http://127.0.0.1:8080"
    );
    assert!(env_of(&init[0], "HTTP_PROXY").is_empty());
    assert_eq!(injected["spec"]["volumes"].as_array().unwrap().len(), 3);
}

#[test]
fn a_pod_without_the_annotation_or_not_created_is_let_through_unchanged() {
    for annotations in [
        json!({}),
        json!({ "agent-secrets.io/inject": "false" }),
        json!({ "agent-secrets.io/inject": "yes" }),
    ] {
        let answer = injector().review(&review("CREATE", pod(annotations.clone())));
        let response = response(&answer);
        assert_eq!(response["allowed"], true, "{annotations}");
        assert!(response.get("patch").is_none(), "{annotations}");
    }
    let mut no_annotations = pod(json!({}));
    no_annotations["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("annotations");
    let answer = injector().review(&review("CREATE", no_annotations));
    assert!(response(&answer).get("patch").is_none());

    let answer = injector().review(&review("UPDATE", pod(inject_annotations())));
    assert_eq!(response(&answer)["allowed"], true);
    assert!(response(&answer).get("patch").is_none());
}

#[test]
fn an_injected_pod_admitted_again_gets_no_second_sidecar() {
    let pod = pod(inject_annotations());
    let injector = injector();
    let first = injector.review(&review("CREATE", pod.clone()));
    let injected = patched(&pod, response(&first));
    let again = injector.review(&review("CREATE", injected));
    let response = response(&again);
    assert_eq!(response["allowed"], true);
    assert!(response.get("patch").is_none(), "{response}");
}

#[test]
fn a_malformed_review_gets_an_error_response_not_a_panic() {
    let injector = injector();
    for body in [
        &b""[..],
        b"not json",
        b"[]",
        b"{\"kind\":\"AdmissionReview\",\"apiVersion\":\"admission.k8s.io/v1\"}",
        b"{\"kind\":\"AdmissionReview\",\"apiVersion\":\"admission.k8s.io/v1\",\"request\":{\"uid\":7}}",
        &[0xff, 0xfe, 0x00],
    ] {
        let answer = injector.review(body);
        let response = response(&answer);
        assert_eq!(response["allowed"], false, "{}", String::from_utf8_lossy(body));
        assert_eq!(response["status"]["status"], "Failure");
        assert!(response["status"]["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    // A pod creation without the pod, and a pod without containers: refused, with the reason.
    let mut body: Value = serde_json::from_slice(&review("CREATE", Value::Null)).unwrap();
    body["request"].as_object_mut().unwrap().remove("object");
    let answer = injector.review(&serde_json::to_vec(&body).unwrap());
    assert_eq!(response(&answer)["allowed"], false);
    assert_eq!(
        response(&answer)["uid"],
        "705ab4f5-6393-11e8-b7cc-42010a800002"
    );
    let mut empty = pod(inject_annotations());
    empty["spec"]["containers"] = json!([]);
    let answer = injector.review(&review("CREATE", empty));
    assert_eq!(response(&answer)["allowed"], false);
    assert_eq!(
        response(&answer)["status"]["message"],
        "the pod has no spec.containers"
    );
}

#[test]
fn an_annotation_the_injector_cannot_use_refuses_the_pod_and_names_it() {
    let cases = [
        ("agent-secrets.io/routes", "github"),
        ("agent-secrets.io/routes", "GitHub=https://api.github.com/"),
        ("agent-secrets.io/routes", "a=https://x/, a=https://y/"),
        ("agent-secrets.io/routes", "openai=https://other.example/"),
        ("agent-secrets.io/routes", "x=ftp://files.example/"),
        ("agent-secrets.io/routes", "x=https://user:pw@api.example/"),
        (
            "agent-secrets.io/control-plane-url",
            "http://cp.example:8200",
        ),
        ("agent-secrets.io/control-plane-url", "not a url"),
        ("agent-secrets.io/memory-limit", "lots"),
        ("agent-secrets.io/cpu-request", "1.2.3"),
        ("agent-secrets.io/no-proxy", "a b"),
    ];
    // Sizes an attacker chooses are bounded: a 33rd route, a 5 KB value.
    let many: Vec<String> = (0..33)
        .map(|i| format!("r{i}=https://r{i}.example/"))
        .collect();
    let many = many.join(",");
    let long = "h".repeat(5000);
    let cases = cases.into_iter().chain([
        ("agent-secrets.io/routes", many.as_str()),
        ("agent-secrets.io/no-proxy", long.as_str()),
    ]);
    for (annotation, value) in cases {
        let annotations = json!({ "agent-secrets.io/inject": "true", annotation: value });
        let answer = injector().review(&review("CREATE", pod(annotations)));
        let response = response(&answer);
        assert_eq!(response["allowed"], false, "{annotation}: {value}");
        let message = response["status"]["message"].as_str().unwrap();
        assert!(message.starts_with(annotation), "{message}");
        assert!(response.get("patch").is_none());
    }
}

#[test]
fn quantities_are_decimal_numbers_with_a_kubernetes_suffix() {
    for ok in ["100m", "0.5", "1", "64Mi", "1Gi", "2k", "1.5G"] {
        assert!(is_quantity(ok), "{ok}");
    }
    for bad in ["", "m", "Mi", "1.2.3", "-1", "1mi", "1 Gi", "1e3x", "lots"] {
        assert!(!is_quantity(bad), "{bad}");
    }
}

#[test]
fn with_service_account_auth_the_sidecar_presents_its_projected_token_and_gets_no_key() {
    let mut settings = injector().settings;
    settings.service_account_auth = true;
    let injector = Injector::new(settings);
    let pod = pod(inject_annotations());
    let answer = injector.review(&review("CREATE", pod.clone()));
    let injected = patched(&pod, response(&answer));
    let sidecar = &injected["spec"]["initContainers"][0];
    assert!(env_of(sidecar, "AGENT_SECRET_SIDECAR_KEY").is_empty());
    assert_eq!(env_of(sidecar, "AGENT_SECRET_MASTER_KEY").len(), 1);
    let toml_text = env_of(sidecar, ENV_CONFIG_TOML)[0]["value"]
        .as_str()
        .unwrap();
    let config: toml::Table = toml::from_str(toml_text).unwrap();
    assert_eq!(
        config["control_plane"]["service_account_token_file"].as_str(),
        Some("/var/run/secrets/agent-secrets.io/serviceaccount/token")
    );
    let mounts = sidecar["volumeMounts"].as_array().unwrap();
    assert!(mounts
        .iter()
        .any(|m| m["mountPath"] == TOKEN_DIR && m["name"] == VOLUME_TOKEN));
}
