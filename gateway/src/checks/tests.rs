use axum::http::StatusCode;

use super::*;

const GOOD: &str = r#"
[[canary]]
service = "ocr"
name = "ocr-known-text"
path = "/run"
body = '{"text":"hello"}'
headers = { "content-type" = "application/json" }
deadline = "5s"
check = { json = { pointer = "/answer", equals = "cd" } }

[[canary]]
service = "ocr"
method = "get"
path = "health"
check = { regex = "^ok" }

[[canary]]
service = "embed"
path = "run"
check = { cosine = { pointer = "/embedding", reference = [1.0, 0.0], min = 0.99 } }

[[canary]]
service = "echo"
path = "run"
check = { exact = "hi" }

[[deterministic]]
service = "ocr"
compare = "/answer"
"#;

#[test]
fn a_whole_file_parses_with_defaults() {
    let plan = CheckPlan::parse(GOOD).unwrap();
    assert_eq!(plan.canaries.len(), 4);
    let first = &plan.canaries[0];
    assert_eq!(first.name, "ocr-known-text");
    assert_eq!(first.method, Method::POST);
    assert_eq!(first.path, "run");
    assert_eq!(first.deadline, Duration::from_secs(5));
    assert_eq!(plan.canaries[1].name, "ocr-2");
    assert_eq!(plan.canaries[1].method, Method::GET);
    assert_eq!(plan.canaries[1].deadline, DEFAULT_DEADLINE);
    assert_eq!(
        plan.deterministic,
        vec![Deterministic {
            service: "ocr".into(),
            compare: Some("/answer".into()),
            share: DEFAULT_SHARE,
        }]
    );
}

fn error_of(text: &str) -> String {
    CheckPlan::parse(text).unwrap_err().to_string()
}

#[test]
fn bad_entries_are_refused_by_name() {
    let e = error_of(
        "[[canary]]\nservice = \"ocr\"\npath = \"run\"\n[[canary]]\nservice = \"ocr\"\nname = \"bad-re\"\npath = \"run\"\ncheck = { regex = \"(\" }\n",
    );
    assert!(e.contains("missing field `check`"), "{e}");
    let e = error_of(
        "[[canary]]\nservice = \"ocr\"\nname = \"bad-re\"\npath = \"run\"\ncheck = { regex = \"(\" }\n",
    );
    assert!(e.starts_with("canary 1 (\"bad-re\"): bad regex"), "{e}");
    let e = error_of(
        "[[canary]]\nservice = \"OCR service!\"\npath = \"run\"\ncheck = { exact = \"x\" }\n",
    );
    assert!(e.starts_with("canary 1:"), "{e}");
    let e = error_of("[[deterministic]]\nservice = \"ocr\"\nshare = 0.5\n");
    assert!(e.contains("deterministic 1") && e.contains("share"), "{e}");
    let e = error_of("[[deterministic]]\nservice = \"ocr\"\nshare = -0.001\n");
    assert!(e.contains("share"), "{e}");
    let e = error_of("[[canary]]\nservice = \"ocr\"\npath = \"run\"\ncheck = { sha = \"x\" }\n");
    assert!(e.contains("unknown variant"), "{e}");
    let e = error_of(
        "[[canary]]\nservice = \"ocr\"\npath = \"run\"\ncolour = 1\ncheck = { exact = \"x\" }\n",
    );
    assert!(e.contains("unknown field"), "{e}");
    let e = error_of(
        "[[canary]]\nservice = \"ocr\"\npath = \"run\"\ndeadline = \"soon\"\ncheck = { exact = \"x\" }\n",
    );
    assert!(e.contains("deadline"), "{e}");
    assert!(error_of("this is = = not toml").starts_with("canary file:"));
}

#[test]
fn a_missing_file_is_an_error_naming_it() {
    let e = CheckPlan::load(Path::new("/nonexistent/canaries.toml")).unwrap_err();
    assert!(e.to_string().contains("/nonexistent/canaries.toml"), "{e}");
}

#[test]
fn checks_pass_right_answers_and_explain_wrong_ones() {
    let plan = CheckPlan::parse(GOOD).unwrap();
    let json = &plan.canaries[0].check;
    assert!(
        json.verify(StatusCode::OK, br#"{"answer":"cd","ms":3}"#)
            .is_ok()
    );
    let why = json
        .verify(StatusCode::OK, br#"{"answer":"ab"}"#)
        .unwrap_err();
    assert_eq!(why, r#"/answer was "ab", expected "cd""#);
    assert_eq!(
        json.verify(StatusCode::INTERNAL_SERVER_ERROR, b"")
            .unwrap_err(),
        "status 500"
    );
    assert!(
        json.verify(StatusCode::OK, b"<html>")
            .unwrap_err()
            .contains("not JSON")
    );
    let re = &plan.canaries[1].check;
    assert!(re.verify(StatusCode::OK, b"ok then").is_ok());
    assert!(re.verify(StatusCode::OK, b"not ok").is_err());
    let cos = &plan.canaries[2].check;
    assert!(
        cos.verify(StatusCode::OK, br#"{"embedding":[0.999,0.01]}"#)
            .is_ok()
    );
    assert!(
        cos.verify(StatusCode::OK, br#"{"embedding":[0.0,1.0]}"#)
            .is_err()
    );
    let why = cos
        .verify(StatusCode::OK, br#"{"embedding":[1.0]}"#)
        .unwrap_err();
    assert!(why.contains("1 numbers, expected 2"), "{why}");
    let exact = &plan.canaries[3].check;
    assert!(exact.verify(StatusCode::OK, b"hi").is_ok());
    let long = "x".repeat(500);
    let why = exact.verify(StatusCode::OK, long.as_bytes()).unwrap_err();
    assert!(why.len() < 100, "reasons are truncated: {why}");
}

#[test]
fn cross_checks_compare_the_pointer_only() {
    let a = br#"{"answer":"cd","service_ms":3}"#;
    let b = br#"{"answer":"cd","service_ms":9}"#;
    assert_eq!(
        compare_value(a, Some("/answer")),
        compare_value(b, Some("/answer"))
    );
    assert_ne!(compare_value(a, None), compare_value(b, None));
    assert_eq!(compare_value(b"nope", Some("/answer")), None);
}
