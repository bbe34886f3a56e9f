//! Every role against every endpoint of the daemon (docs/security.md, "Roles"): `viewer`
//! reads, `operator` also triggers runs, replays and resolves, `admin` does anything (the
//! audit log is an admin's); no token, or an unknown one, is 401 everywhere but
//! `/healthz`. A route's role is checked before the route looks for the model, so the
//! models named need not exist: an allowed request is anything but 401 and 403.

use crate::daemon::Daemon;

const TOKENS: [(&str, &str); 3] = [
    ("EBB_TEST_ROLES_ADMIN", "admin-0123456789abcdef0123456789"),
    ("EBB_TEST_ROLES_VIEWER", "viewer-0123456789abcdef012345678"),
    ("EBB_TEST_ROLES_OPERATOR", "operator-0123456789abcdef0123456"),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Role {
    Viewer,
    Operator,
    Admin,
}

#[test]
fn each_role_against_each_endpoint() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("ebb.yaml"),
        "version: 1
connections:
  exports:
    type: file
    path: exports
daemon:
  api_token: ${EBB_TEST_ROLES_ADMIN}
  tokens:
    - {name: grafana, token: \"${EBB_TEST_ROLES_VIEWER}\", role: viewer}
    - {name: oncall, token: \"${EBB_TEST_ROLES_OPERATOR}\", role: operator}
",
    )
    .unwrap();
    std::fs::create_dir(dir.path().join("models")).unwrap();
    let d = Daemon::start(dir.path(), &[], &TOKENS);
    // (method, path, the least role allowed)
    let endpoints = [
        ("GET", "/readyz", Role::Viewer),
        ("GET", "/metrics", Role::Viewer),
        ("GET", "/api/models", Role::Viewer),
        ("GET", "/api/runs", Role::Viewer),
        ("GET", "/api/inbox/some_model", Role::Viewer),
        ("GET", "/api/conflicts", Role::Viewer),
        ("GET", "/", Role::Viewer),
        ("POST", "/api/models/some_model/runs", Role::Operator),
        ("POST", "/api/inbox/some_model/replay", Role::Operator),
        ("POST", "/api/conflicts/some_model/resolve", Role::Operator),
        ("GET", "/api/audit", Role::Admin),
    ];
    let roles = [
        (Role::Admin, TOKENS[0].1),
        (Role::Viewer, TOKENS[1].1),
        (Role::Operator, TOKENS[2].1),
    ];
    let call = |method: &str, path: &str, token: Option<&str>| match method {
        "GET" => d.get(path, token),
        _ => d.post(path, token),
    };
    let mut seen = Vec::new();
    for (method, path, least) in endpoints {
        for (role, token) in roles {
            let status = call(method, path, Some(token)).status;
            let allowed = role >= least;
            seen.push(format!("{method} {path} as {role:?}: {status}"));
            if allowed {
                assert!(status != 401 && status != 403, "{method} {path} as {role:?}: {status}");
            } else {
                assert_eq!(status, 403, "{method} {path} as {role:?}");
            }
        }
        for token in [None, Some("not-a-token")] {
            assert_eq!(call(method, path, token).status, 401, "{method} {path} with {token:?}");
        }
    }
    assert_eq!(d.get("/healthz", None).status, 200);
    // Every refusal is audited (one per 401 and 403 above), by who asked.
    let audit = d.get("/api/audit?action=api_refused&limit=1000", Some(TOKENS[0].1));
    assert_eq!(audit.status, 200, "{}", audit.body);
    let refused = audit.json();
    let entries = refused["entries"].as_array().expect("entries");
    let forbidden = seen.iter().filter(|s| s.ends_with(": 403")).count();
    assert!(
        entries.len() >= forbidden + 2 * endpoints.len(),
        "{} entries: {refused}",
        entries.len()
    );
}
