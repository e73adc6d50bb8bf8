//! The hand-written OpenAPI document (`openapi.json`, served at `GET /v1/openapi.json`):
//! it names every route of the API, its error responses use the one error shape, its
//! references resolve, and `openapi-spec-validator` accepts it as OpenAPI 3.1.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

const DOCUMENT: &str = include_str!("../openapi.json");

const ERROR_SCHEMA: &str = "#/components/schemas/Error";

/// Every operation of the API, exactly.
const OPERATIONS: [(&str, &str); 27] = [
    ("get", "/healthz"),
    ("get", "/readyz"),
    ("get", "/metrics"),
    ("get", "/v1/openapi.json"),
    ("post", "/v1/tenants"),
    ("get", "/v1/tenants"),
    ("get", "/v1/tenants/{id}"),
    ("delete", "/v1/tenants/{id}"),
    ("post", "/v1/tenants/{id}/keys"),
    ("delete", "/v1/tenants/{id}/keys/{key_id}"),
    ("post", "/v1/webhooks"),
    ("get", "/v1/webhooks"),
    ("get", "/v1/webhooks/{id}"),
    ("patch", "/v1/webhooks/{id}"),
    ("delete", "/v1/webhooks/{id}"),
    ("post", "/v1/webhooks/{id}/secret/rotate"),
    ("get", "/v1/event-types"),
    ("post", "/v1/webhooks/{id}/test"),
    ("get", "/v1/webhooks/{id}/deliveries"),
    ("get", "/v1/deliveries"),
    ("get", "/v1/deliveries/{id}"),
    ("post", "/v1/deliveries/{id}/retry"),
    ("post", "/v1/webhooks/{id}/recover"),
    ("post", "/v1/events"),
    ("post", "/v1/events/batch"),
    ("post", "/v1/inbound/{source}"),
    ("get", "/v1/ws"),
];

/// Routes answered without a bearer key.
const UNAUTHENTICATED: [&str; 5] = [
    "/healthz",
    "/readyz",
    "/metrics",
    "/v1/openapi.json",
    // Providers sign their requests instead of holding a key.
    "/v1/inbound/{source}",
];

const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

/// Whether a route acts for one tenant (and so takes `Herald-Tenant`).
fn uses_tenant(path: &str) -> bool {
    ["/v1/webhooks", "/v1/deliveries", "/v1/events", "/v1/ws"]
        .iter()
        .any(|prefix| path.starts_with(prefix))
}

fn document() -> Value {
    serde_json::from_str(DOCUMENT).expect("openapi.json is JSON")
}

/// Follows a local `#/a/b` reference.
fn resolve<'a>(doc: &'a Value, reference: &str) -> &'a Value {
    let pointer = reference
        .strip_prefix('#')
        .unwrap_or_else(|| panic!("{reference} is not a local reference"));
    doc.pointer(pointer)
        .unwrap_or_else(|| panic!("{reference} does not resolve"))
}

/// `value`, or what it refers to when it is a `$ref` object (one level, as OpenAPI
/// Reference Objects are used for responses and parameters).
fn deref<'a>(doc: &'a Value, value: &'a Value) -> &'a Value {
    match value.get("$ref").and_then(Value::as_str) {
        Some(reference) => resolve(doc, reference),
        None => value,
    }
}

/// Every `(method, path, operation)` in the document.
fn operations(doc: &Value) -> Vec<(String, String, &Value)> {
    let paths = doc["paths"].as_object().expect("paths is an object");
    let mut found = Vec::new();
    for (path, item) in paths {
        let item = item.as_object().expect("path item is an object");
        for (key, operation) in item {
            if METHODS.contains(&key.as_str()) {
                found.push((key.clone(), path.clone(), operation));
            }
        }
    }
    found
}

/// The parameters of an operation: its path item's, then its own, references followed.
fn parameters<'a>(doc: &'a Value, path: &str, operation: &'a Value) -> Vec<&'a Value> {
    doc["paths"][path]["parameters"]
        .as_array()
        .into_iter()
        .chain(operation["parameters"].as_array())
        .flatten()
        .map(|parameter| deref(doc, parameter))
        .collect()
}

/// The JSON schema reference of a response's `application/json` body, if any.
fn json_schema_ref(response: &Value) -> Option<&str> {
    response
        .pointer("/content/application~1json/schema/$ref")
        .and_then(Value::as_str)
}

#[test]
fn every_route_of_the_api_is_documented_and_nothing_else() {
    let doc = document();
    assert_eq!(doc["openapi"], "3.1.0");
    let expected: BTreeSet<(String, String)> = OPERATIONS
        .iter()
        .map(|(method, path)| (method.to_string(), path.to_string()))
        .collect();
    let documented: BTreeSet<(String, String)> = operations(&doc)
        .into_iter()
        .map(|(method, path, _)| (method, path))
        .collect();
    let missing: Vec<_> = expected.difference(&documented).collect();
    let extra: Vec<_> = documented.difference(&expected).collect();
    assert!(
        missing.is_empty(),
        "routes missing from openapi.json: {missing:?}"
    );
    assert!(
        extra.is_empty(),
        "routes in openapi.json that the API lacks: {extra:?}"
    );
}

#[test]
fn every_error_response_uses_the_error_schema() {
    let doc = document();
    let mut checked = 0;
    for (method, path, operation) in operations(&doc) {
        let responses = operation["responses"]
            .as_object()
            .unwrap_or_else(|| panic!("{method} {path} has no responses"));
        // The stream's success is the WebSocket upgrade, 101.
        let success =
            |status: &str| status.starts_with('2') || (path == "/v1/ws" && status == "101");
        assert!(
            responses.keys().any(|status| success(status)),
            "{method} {path} documents no success response"
        );
        for (status, response) in responses {
            if success(status) {
                continue;
            }
            let response = deref(&doc, response);
            if path == "/readyz" && status == "503" {
                // The readiness probe answers 503 with its own status body while the
                // journal replays; load balancers read the status code, not an error.
                assert_eq!(
                    json_schema_ref(response),
                    Some("#/components/schemas/Readiness"),
                    "GET /readyz 503"
                );
                continue;
            }
            assert_eq!(
                json_schema_ref(response),
                Some(ERROR_SCHEMA),
                "{method} {path} {status} does not reference the Error schema"
            );
            checked += 1;
        }
    }
    assert!(checked > 50, "only {checked} error responses documented");
}

#[test]
fn error_schema_has_the_documented_shape_and_codes() {
    let doc = document();
    let error = resolve(&doc, ERROR_SCHEMA);
    assert_eq!(error["required"], serde_json::json!(["error"]));
    let detail = deref(&doc, &error["properties"]["error"]);
    assert_eq!(detail["required"], serde_json::json!(["code", "message"]));
    assert!(detail["properties"]["field"].is_object());
    let codes = deref(&doc, &detail["properties"]["code"]);
    let codes: BTreeSet<&str> = codes["enum"]
        .as_array()
        .expect("error codes are an enum")
        .iter()
        .map(|code| code.as_str().expect("codes are strings"))
        .collect();
    let expected: BTreeSet<&str> = [
        "invalid_json",
        "invalid_request",
        "unauthorized",
        "not_found",
        "method_not_allowed",
        "conflict",
        "payload_too_large",
        "unsupported_media_type",
        "request_timeout",
        "upgrade_required",
        "too_many_connections",
        "too_many_requests",
        "too_many_pending",
        "unavailable",
        "internal",
    ]
    .into_iter()
    .collect();
    assert_eq!(codes, expected);
}

#[test]
fn statuses_are_documented_where_they_apply() {
    let doc = document();
    for (method, path, operation) in operations(&doc) {
        let responses = &operation["responses"];
        let has = |status: &str| responses.get(status).is_some();
        let authenticated = !UNAUTHENTICATED.contains(&path.as_str());
        if authenticated {
            assert!(has("401"), "{method} {path} lacks 401");
        }
        if operation.get("requestBody").is_some() {
            for status in ["400", "413", "415"] {
                assert!(
                    has(status),
                    "{method} {path} takes a body but lacks {status}"
                );
            }
        }
        // An unknown inbound source is a 400 with a reason, as providers expect.
        if path.contains('{') && !path.starts_with("/v1/inbound/") {
            assert!(has("404"), "{method} {path} names a resource but lacks 404");
        }
        if path.starts_with("/v1/") {
            let names_tenant = parameters(&doc, &path, operation).iter().any(|parameter| {
                parameter["in"] == "header" && parameter["name"] == "Herald-Tenant"
            });
            assert_eq!(
                names_tenant,
                uses_tenant(&path),
                "{method} {path}: Herald-Tenant is documented exactly on tenant routes"
            );
            if uses_tenant(&path) {
                assert!(
                    has("404"),
                    "{method} {path} acts for a tenant but lacks 404"
                );
            }
        }
        // An unavailable server answers with the Error shape and Retry-After; the
        // readiness probe's 503 is its own status body, read by load balancers.
        if let (Some(unavailable), false) = (responses.get("503"), path == "/readyz") {
            let unavailable = deref(&doc, unavailable);
            let retry_after = unavailable
                .pointer("/headers/Retry-After")
                .unwrap_or_else(|| panic!("{method} {path} 503 lacks Retry-After"));
            let retry_after = deref(&doc, retry_after);
            assert_eq!(retry_after["schema"]["type"], "integer");
        }
    }
    // Routes that add a tenant's pending deliveries document its limit.
    for path in [
        "/v1/events",
        "/v1/inbound/{source}",
        "/v1/webhooks/{id}/test",
        "/v1/deliveries/{id}/retry",
    ] {
        let refused = deref(&doc, &doc["paths"][path]["post"]["responses"]["429"]);
        assert!(
            refused["description"]
                .as_str()
                .is_some_and(|d| d.contains("too_many_pending")),
            "post {path} lacks its 429"
        );
        assert!(refused.pointer("/headers/Retry-After").is_some(), "{path}");
    }
    let conflicts = [
        ("post", "/v1/tenants"),
        ("post", "/v1/events"),
        ("post", "/v1/tenants/{id}/keys"),
    ];
    for (method, path) in conflicts {
        assert!(
            doc["paths"][path][method]["responses"].get("409").is_some(),
            "{method} {path} lacks 409"
        );
    }
    assert!(doc.pointer("/paths/~1readyz/get/responses/503").is_some());
}

#[test]
fn authentication_is_bearer_except_on_the_open_routes() {
    let doc = document();
    let scheme = &doc["components"]["securitySchemes"]["bearerAuth"];
    assert_eq!(scheme["type"], "http");
    assert_eq!(scheme["scheme"], "bearer");
    assert_eq!(doc["security"], serde_json::json!([{ "bearerAuth": [] }]));
    for (method, path, operation) in operations(&doc) {
        let open = operation.get("security") == Some(&serde_json::json!([]));
        assert_eq!(
            open,
            UNAUTHENTICATED.contains(&path.as_str()),
            "{method} {path}: authentication does not match the API"
        );
    }
    assert_eq!(
        doc.pointer("/paths/~1metrics/get/responses/200/content")
            .and_then(Value::as_object)
            .map(|content| content.keys().cloned().collect::<Vec<_>>()),
        Some(vec!["text/plain".to_string()])
    );
}

#[test]
fn every_path_parameter_is_declared() {
    let doc = document();
    for (method, path, operation) in operations(&doc) {
        let declared: BTreeSet<String> = parameters(&doc, &path, operation)
            .into_iter()
            .filter(|parameter| parameter["in"] == "path")
            .map(|parameter| {
                assert_eq!(parameter["required"], true, "{method} {path}");
                parameter["name"].as_str().unwrap().to_string()
            })
            .collect();
        let templated: BTreeSet<String> = path
            .split('/')
            .filter_map(|segment| segment.strip_prefix('{')?.strip_suffix('}'))
            .map(str::to_string)
            .collect();
        assert_eq!(declared, templated, "{method} {path}: path parameters");
    }
}

#[test]
fn every_reference_resolves() {
    fn walk(doc: &Value, value: &Value, count: &mut usize) {
        match value {
            Value::Object(map) => {
                if let Some(reference) = map.get("$ref").and_then(Value::as_str) {
                    resolve(doc, reference);
                    *count += 1;
                }
                for nested in map.values() {
                    walk(doc, nested, count);
                }
            }
            Value::Array(items) => {
                for nested in items {
                    walk(doc, nested, count);
                }
            }
            _ => {}
        }
    }
    let doc = document();
    let mut count = 0;
    walk(&doc, &doc, &mut count);
    assert!(count > 0);
}

fn document_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("openapi.json")
}

fn python(args: &[&str]) -> std::process::Output {
    Command::new("python3")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("python3 is needed to validate openapi.json: {e}"))
}

/// Installs `openapi-spec-validator` unless it is already importable.
fn ensure_validator() {
    if python(&["-c", "import openapi_spec_validator"])
        .status
        .success()
    {
        return;
    }
    let pip = python(&["-m", "pip", "--version"]);
    assert!(
        pip.status.success(),
        "openapi-spec-validator is not installed and pip is missing: install pip for python3 \
         (or run `python3 -m pip install openapi-spec-validator` some other way)\n{}",
        String::from_utf8_lossy(&pip.stderr)
    );
    let install = python(&["-m", "pip", "install", "--quiet", "openapi-spec-validator"]);
    assert!(
        install.status.success(),
        "`python3 -m pip install openapi-spec-validator` failed:\n{}",
        String::from_utf8_lossy(&install.stderr)
    );
}

#[test]
fn openapi_spec_validator_accepts_the_document() {
    ensure_validator();
    let path = document_path();
    let output = python(&[
        "-c",
        "from openapi_spec_validator import validate; import json,sys; validate(json.load(open(sys.argv[1])))",
        path.to_str().expect("manifest path is UTF-8"),
    ]);
    assert!(
        output.status.success(),
        "openapi-spec-validator rejected {}:\n{}",
        path.display(),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// What the server can answer is what the document allows: a batch item refused for
/// its tenant's pending limit (429) or an internal error (500), and retry delays with
/// fractions of a second, which the server keeps to the millisecond.
#[test]
fn batch_refusals_and_retry_delays_are_documented_as_served() {
    let doc = document();
    let statuses: Vec<u64> = doc
        .pointer("/components/schemas/BatchRejected/properties/status/enum")
        .and_then(Value::as_array)
        .expect("the batch item's statuses are an enum")
        .iter()
        .map(|s| s.as_u64().expect("statuses are integers"))
        .collect();
    for status in [400, 409, 429, 500, 503] {
        assert!(statuses.contains(&status), "{status} in {statuses:?}");
    }
    for schema in ["Webhook", "WebhookCreate", "WebhookUpdate"] {
        let items = doc
            .pointer(&format!(
                "/components/schemas/{schema}/properties/retry_schedule_s/items/type"
            ))
            .unwrap_or_else(|| panic!("{schema} has retry_schedule_s"));
        assert_eq!(items, "number", "{schema}");
    }
}
