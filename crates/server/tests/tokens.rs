//! OIDC bearer tokens over HTTP: a token signed by the configured issuer's key makes the
//! caller who the token says, with the role `Origin` asks for if the token's groups grant it;
//! every other token is refused with 403 and a reason, and never becomes anyone.

mod common;

use common::{api_client, db_env, Server, TokenIssuer};
use panda_store::testing::TestDb;
use panda_store::Backend;
use serde_json::{json, Value as Json};

async fn attributes(server: &Server, token: &str, origin: Option<&str>) -> (u16, String) {
    let mut request = api_client()
        .get(server.url("/api/v1/system/get_attributes"))
        .bearer_auth(token);
    if let Some(origin) = origin {
        request = request.header("Origin", origin);
    }
    let response = request.send().await.expect("get");
    let status = response.status().as_u16();
    (status, response.text().await.expect("body"))
}

#[tokio::test]
async fn tokens_are_verified_and_refusals_name_the_reason() {
    let db = TestDb::new(Backend::Sqlite);
    let issuer = TokenIssuer::new("atlas");
    let mut env = db_env(&db);
    env.extend(issuer.env());
    let server = Server::start(&[], &env);

    // A valid user token.
    let user = issuer.sign(&issuer.claims("Test user", &["atlas"]));
    let (status, body) = attributes(&server, &user, Some("atlas")).await;
    assert_eq!(status, 200, "{body}");
    let body: Json = serde_json::from_str(&body).expect("json");
    let env_seen = &body["data"]["environment"];
    assert_eq!(
        env_seen["SSL_CLIENT_S_DN"],
        "Test User/CN=nickname:testuser"
    );
    assert_eq!(env_seen["GRST_CRED_1"], "VOMS /atlas");
    assert_eq!(env_seen["PANDA_PRODUCTION_ROLE"], false);

    // A production token: Origin asks for the role, the groups grant it.
    let prod = issuer.sign(&issuer.claims("Prod Agent", &["atlas", "atlas/production"]));
    let (status, body) = attributes(&server, &prod, Some("atlas:production")).await;
    assert_eq!(status, 200, "{body}");
    let body: Json = serde_json::from_str(&body).expect("json");
    assert_eq!(body["data"]["environment"]["PANDA_PRODUCTION_ROLE"], true);
    let (status, _) = attributes(&server, &prod, Some("atlas.production")).await;
    assert_eq!(status, 200, "vo.role works as vo:role");

    let now = chrono::Utc::now().timestamp();
    let mut expired = issuer.claims("Test user", &["atlas"]);
    expired["exp"] = json!(now - 10);
    let mut wrong_audience = issuer.claims("Test user", &["atlas"]);
    wrong_audience["aud"] = json!("someone-else");
    let mut wrong_issuer = issuer.claims("Test user", &["atlas"]);
    wrong_issuer["iss"] = json!("https://evil.test/");
    let mut not_yet = issuer.claims("Test user", &["atlas"]);
    not_yet["nbf"] = json!(now + 3600);
    let forger = openssl::pkey::PKey::from_rsa(openssl::rsa::Rsa::generate(2048).expect("rsa"))
        .expect("key");
    let forged = issuer.sign_with(&forger, &issuer.claims("Test user", &["atlas"]));
    let unsigned = {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        format!(
            "{}.{}.",
            b64.encode(json!({"alg": "none"}).to_string()),
            b64.encode(issuer.claims("Test user", &["atlas"]).to_string())
        )
    };
    let cases: Vec<(String, Option<&str>, &str)> = vec![
        (issuer.sign(&expired), Some("atlas"), "expired"),
        (issuer.sign(&wrong_audience), Some("atlas"), "audience"),
        (issuer.sign(&wrong_issuer), Some("atlas"), "issuer"),
        (
            issuer.sign(&not_yet),
            Some("atlas"),
            "not valid for another",
        ),
        (forged, Some("atlas"), "signature"),
        (unsigned, Some("atlas"), "algorithm none"),
        (user.clone(), Some("cms"), "VO cms"),
        (
            user.clone(),
            Some("atlas:production"),
            "atlas/production is not in the token's groups",
        ),
        (user.clone(), None, "Origin"),
        ("not-a-jwt".into(), Some("atlas"), "not a JWT"),
        ("x".repeat(20 * 1024), Some("atlas"), "longer than"),
    ];
    for (token, origin, reason) in cases {
        let (status, body) = attributes(&server, &token, origin).await;
        assert_eq!(status, 403, "{reason}: {body}");
        assert!(
            body.starts_with("ERROR : Token authentication failed.") && body.contains(reason),
            "{reason}: {body}"
        );
        assert!(
            token.len() < 40 || !body.contains(&token[token.len() - 20..]),
            "the answer never echoes the token"
        );
    }
    // A 1 MB header is stopped by the HTTP layer (431 Request Header Fields Too Large).
    let (status, _) = attributes(&server, &"x".repeat(1024 * 1024), Some("atlas")).await;
    assert_eq!(status, 431);
    // The server is still there and still knows the valid user.
    let (status, _) = attributes(&server, &user, Some("atlas")).await;
    assert_eq!(status, 200);
    // The refusals are logged, without the token.
    let logged = server.lines_after(std::time::Duration::from_millis(200));
    assert!(logged.iter().any(|l| l.contains("credentials refused")));
    assert!(!logged.iter().any(|l| l.contains(&user)));
}

#[tokio::test]
async fn without_configuration_a_token_is_refused_not_ignored() {
    let db = TestDb::new(Backend::Sqlite);
    let server = Server::start(&[], &db_env(&db));
    let (status, body) = attributes(&server, "a.b.c", Some("atlas")).await;
    assert_eq!(status, 403);
    assert!(body.contains("not configured"), "{body}");
}

#[tokio::test]
async fn a_banned_user_is_refused_whatever_the_credential() {
    let db = TestDb::new(Backend::Sqlite);
    let issuer = TokenIssuer::new("atlas");
    let mut env = db_env(&db);
    env.extend(issuer.env());
    let migrated = common::run(&["schema", "migrate"], &env);
    assert!(migrated.status.success());
    let banned = common::run(&["users", "ban", "Banned One"], &env);
    assert!(
        banned.status.success(),
        "{}",
        String::from_utf8_lossy(&banned.stderr)
    );
    let listed = common::run(&["users", "banned"], &env);
    assert_eq!(String::from_utf8_lossy(&listed.stdout).trim(), "Banned One");
    // Lifting a ban nobody has is an error that says so.
    let unknown = common::run(&["users", "unban", "Nobody Banned"], &env);
    assert_eq!(unknown.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("is not banned"));
    let server = Server::start(&[], &env);
    let token = issuer.sign(&issuer.claims("Banned One", &["atlas"]));
    let (status, body) = attributes(&server, &token, Some("atlas")).await;
    assert_eq!(
        (status, body.as_str()),
        (403, "ERROR : Banned One is banned")
    );
    let other = issuer.sign(&issuer.claims("Someone Else", &["atlas"]));
    let (status, _) = attributes(&server, &other, Some("atlas")).await;
    assert_eq!(status, 200);
}

/// An issuer known only by its discovery URL: the server fetches the discovery document and
/// the keys it names over HTTP at start.
#[tokio::test]
async fn keys_are_fetched_from_the_discovery_url() {
    let issuer = TokenIssuer::new("atlas");
    let web = tempfile::tempdir().expect("web dir");
    std::fs::copy(
        issuer.dir.path().join("jwks.json"),
        web.path().join("jwks.json"),
    )
    .expect("jwks");
    // Python's http.server plays the issuer's web site.
    let Ok(mut http) = std::process::Command::new("python3")
        .args(["-u", "-m", "http.server", "0", "--bind", "127.0.0.1"])
        .current_dir(web.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
    else {
        assert!(
            !common::required(),
            "python3 is needed to serve the discovery document"
        );
        eprintln!("note: discovery-URL test skipped: no python3");
        return;
    };
    let mut line = String::new();
    {
        use std::io::BufRead;
        let stdout = http.stdout.take().expect("stdout");
        std::io::BufReader::new(stdout)
            .read_line(&mut line)
            .expect("banner");
    }
    let port = line
        .split("port ")
        .nth(1)
        .and_then(|p| p.split_whitespace().next())
        .unwrap_or_else(|| panic!("no port in {line:?}"))
        .to_string();
    let base = format!("http://127.0.0.1:{port}");
    std::fs::write(
        web.path().join("discovery.json"),
        json!({"issuer": issuer.issuer, "jwks_uri": format!("{base}/jwks.json")}).to_string(),
    )
    .expect("discovery");
    let auth = tempfile::tempdir().expect("auth dir");
    std::fs::write(
        auth.path().join("atlas_auth_config.json"),
        json!({"client_id": issuer.audience, "oidc_config_url": format!("{base}/discovery.json")})
            .to_string(),
    )
    .expect("auth config");
    let db = TestDb::new(Backend::Sqlite);
    let mut env = db_env(&db);
    env.push((
        "PANDA_AUTH_CONFIG".into(),
        auth.path().display().to_string(),
    ));
    let server = Server::start(&[], &env);
    let token = issuer.sign(&issuer.claims("Remote User", &["atlas"]));
    let (status, body) = attributes(&server, &token, Some("atlas")).await;
    let _ = http.kill();
    let _ = http.wait();
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("Remote User"), "{body}");
}

#[tokio::test]
async fn the_vos_client_configuration_is_published_under_auth_and_nothing_else_is() {
    let db = TestDb::new(Backend::Sqlite);
    let issuer = TokenIssuer::new("atlas");
    let mut env = db_env(&db);
    env.extend(issuer.env());
    let server = Server::start(&[], &env);
    let client = api_client();
    let get = |path: &str| {
        let request = client.get(server.url(path));
        async move {
            let reply = request.send().await.expect("get");
            let status = reply.status().as_u16();
            (status, reply.text().await.expect("text"))
        }
    };
    // What panda-client's OIDC mode fetches: the file as written, for an anonymous caller.
    let (status, body) = get("/auth/atlas_auth_config.json").await;
    assert_eq!(status, 200, "{body}");
    let config: Json = serde_json::from_str(&body).expect("json");
    assert_eq!(config["client_id"], "panda-test-client");
    // Other files of the directory, other VOs, paths out of it, and a file of the right name
    // but over the 64 kB a client configuration may have, are not there.
    std::fs::write(issuer.dir.path().join("secret.txt"), "x").expect("write");
    std::fs::write(
        issuer.dir.path().join("huge_auth_config.json"),
        vec![b' '; 64 * 1024 + 1],
    )
    .expect("write");
    for path in [
        "/auth/cms_auth_config.json",
        "/auth/jwks.json",
        "/auth/secret.txt",
        "/auth/..%2Fsecret.txt",
        "/auth/%2E%2E_auth_config.json",
        "/auth/huge_auth_config.json",
    ] {
        let (status, _) = get(path).await;
        assert_eq!(status, 404, "{path}");
    }
}
