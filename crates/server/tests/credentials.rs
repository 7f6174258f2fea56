//! Credentials over HTTPS with real proxies: what operators register with `panda-server
//! creds` is sealed in the database and handed out only to the callers upstream allows (the
//! production or pilot role, `pilot_owners`, `users.gridpref` letters, a proxy's own holder);
//! an ordinary user asking for another's proxy, a key pair or a token key is refused, and no
//! value ever reaches the log, the listing or the database in the clear.

mod common;

use std::path::Path;

use common::pki::{self, Credential, GridPki};
use common::{db_env, required, run, Server, Site};
use panda_core::{AttrSet, ColumnType, JobAttr};
use panda_store::testing::TestDb;
use panda_store::{Backend, Store, StoreOptions, TxMode};
use serde_json::{json, Value as Json};

const PILOT_DN: &str = "/DC=org/DC=test/OU=Users/CN=Pilot Owner";
const ALICE_DN: &str = "/DC=org/DC=test/OU=Users/CN=Alice Tester";
const BOB_DN: &str = "/DC=org/DC=test/OU=Users/CN=Bob Other";
/// What no answer, listing, log line or row may show.
const VALUES: [&str; 4] = ["BEGIN", "BOB-PROXY", "KEY-TEXT", "ACCESS-TOKEN"];

/// `panda-server creds ...` or `users ...`, which must succeed; its standard output.
fn operator(env: &[(String, String)], config: &Path, args: &[&str]) -> String {
    let mut full = vec!["--config", config.to_str().expect("utf-8 path")];
    full.extend_from_slice(args);
    let out = run(&full, env);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{args:?}: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

/// A legacy method over HTTPS as `credential`; the answer's text.
async fn legacy(
    pki: &GridPki,
    server: &Server,
    credential: Option<&Credential>,
    method: &str,
    params: &[(&str, &str)],
    json: bool,
) -> String {
    let mut request = pki
        .client(credential)
        .post(format!("{}/server/panda/{method}", server.https_url()))
        .form(params);
    if json {
        request = request.header("Accept", "application/json");
    }
    request
        .send()
        .await
        .expect("https")
        .text()
        .await
        .expect("body")
}

/// A v1 GET over HTTPS as `credential`; the envelope.
async fn v1_get(
    pki: &GridPki,
    server: &Server,
    credential: &Credential,
    function: &str,
    query: &[(&str, &str)],
) -> Json {
    pki.client(Some(credential))
        .get(format!("{}/api/v1/creds/{function}", server.https_url()))
        .header("Accept", "application/json")
        .query(query)
        .send()
        .await
        .expect("https")
        .json()
        .await
        .expect("envelope")
}

/// A grid PKI, a SQLite database and a site, with the environment a server needs for them.
fn https_site() -> (GridPki, TestDb, Site, Vec<(String, String)>) {
    let pki = GridPki::new();
    let db = TestDb::new(Backend::Sqlite);
    let site = Site::new();
    let mut env = db_env(&db);
    env.extend(site.env());
    env.extend(pki.env());
    (pki, db, site, env)
}

fn parsed(text: &str) -> Json {
    serde_json::from_str(text).unwrap_or_else(|_| panic!("not JSON: {text}"))
}

#[tokio::test]
async fn registered_credentials_reach_only_the_callers_upstream_allows() {
    let (pki, db, site, mut env) = https_site();
    let issuer = common::TokenIssuer::new("atlas");
    env.extend(issuer.env());
    let key_file = site.dir.path().join("credential.key");
    let cfg = site.dir.path().join("panda_server.cfg");
    std::fs::write(
        &cfg,
        format!(
            "[server]\nbind_address = 127.0.0.1\ncredential_key_file = {}\npilot_owners = {PILOT_DN}\n",
            key_file.display()
        ),
    )
    .expect("cfg");
    operator(&env, &cfg, &["schema", "migrate"]);
    let key_path = key_file.to_str().expect("path");
    let made = operator(&env, &cfg, &["creds", "new-key", key_path]);
    assert!(made.contains("wrote a new credential key"), "{made}");
    let again = run(&["creds", "new-key", key_path], &env);
    assert!(!again.status.success(), "a key file is never overwritten");

    // What operators register: the pilots' user proxy (as atlas pilots ask for it), Bob's
    // proxy, a key pair, an access token and a token key for the pilots' client.
    let pilot_owner = pki.user("Pilot Owner");
    let payload_proxy = pki::proxy(&pki.user("Atlas Pilot Two"), false);
    let proxy_pem = payload_proxy.pem_text();
    let dir = site.dir.path();
    let write = |name: &str, content: &str| {
        let file = dir.join(name);
        std::fs::write(&file, content).expect("file");
        file.display().to_string()
    };
    let proxy_file = write("payload.pem", &proxy_pem);
    let bob_file = write("bob.pem", "BOB-PROXY-PEM");
    let public_file = write("pub.key", "PUBLIC-KEY-TEXT");
    let private_file = write("priv.key", "PRIVATE-KEY-TEXT");
    let token_file = write("access.token", "ACCESS-TOKEN-TEXT");
    let added = operator(
        &env,
        &cfg,
        &[
            "creds",
            "add",
            "proxy",
            "atlpilo2",
            "--label",
            "atlas",
            "--file",
            &proxy_file,
        ],
    );
    assert!(
        added.contains("registered proxy atlpilo2 [atlas]"),
        "{added}"
    );
    assert!(
        !added.contains("BEGIN"),
        "the value is not printed: {added}"
    );
    let bob_proxy_dn = format!("{BOB_DN}/CN=proxy");
    operator(
        &env,
        &cfg,
        &["creds", "add", "proxy", &bob_proxy_dn, "--file", &bob_file],
    );
    operator(
        &env,
        &cfg,
        &["creds", "add", "key", "pub.key", "--file", &public_file],
    );
    operator(
        &env,
        &cfg,
        &["creds", "add", "key", "priv.key", "--file", &private_file],
    );
    operator(
        &env,
        &cfg,
        &[
            "creds",
            "add",
            "access_token",
            "pilot_server",
            "--file",
            &token_file,
            "--days",
            "2",
        ],
    );
    let token_key_line = operator(&env, &cfg, &["creds", "add", "token_key", "pilot_server"]);
    assert!(
        token_key_line.contains("registered token_key pilot_server"),
        "{token_key_line}"
    );

    // A credential larger than any proxy is refused by its size, and nothing is stored.
    let big = write("big.key", &"k".repeat(300 * 1024));
    let config = cfg.to_str().expect("path");
    let refused = run(
        &[
            "--config", config, "creds", "add", "key", "big.key", "--file", &big,
        ],
        &env,
    );
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr)
            .contains("a credential must have 1 to 262144 bytes"),
        "{refused:?}"
    );

    // The listing names them and shows no value; the database holds them sealed only.
    let listing = operator(&env, &cfg, &["creds", "list"]);
    for name in ["atlpilo2", BOB_DN, "pub.key", "priv.key", "pilot_server"] {
        assert!(listing.contains(name), "{name}: {listing}");
    }
    for value in VALUES {
        assert!(!listing.contains(value), "{value} listed: {listing}");
    }
    let store = Store::open(&db.config, StoreOptions::default())
        .await
        .expect("open");
    let sealed = {
        let mut tx = store.begin(TxMode::Read).await.expect("tx");
        tx.fetch(
            "SELECT sealed FROM sealed_credentials",
            &[],
            &[ColumnType::Text],
        )
        .await
        .expect("rows")
        .into_iter()
        .map(|r| r[0].render())
        .collect::<Vec<_>>()
    };
    assert_eq!(sealed.len(), 6);
    for row in &sealed {
        assert!(row.starts_with("v1:"), "{row}");
        for value in VALUES {
            assert!(!row.contains(value), "{value} in the clear: {row}");
        }
    }

    let server = Server::start(&["--config", &cfg.display().to_string()], &env);
    let alice = pki::proxy(&pki.user("Alice Tester"), false);
    let pilot = pki::proxy(&pilot_owner, false);

    // The pilot (a pilot_owners DN) gets the user proxy it asks for, as pilot3 asks.
    let asked = [("role", "atlas"), ("dn", "atlpilo2")];
    let answer = parsed(&legacy(&pki, &server, Some(&pilot), "getProxy", &asked, false).await);
    assert_eq!(answer["StatusCode"], 0, "{answer}");
    assert_eq!(answer["errorDialog"], "");
    assert_eq!(answer["userProxy"], proxy_pem.as_str());
    // Not registered with another role.
    let other_role = [("role", "atlas:/atlas/Role=production"), ("dn", "atlpilo2")];
    let answer = parsed(&legacy(&pki, &server, Some(&pilot), "getProxy", &other_role, false).await);
    assert_eq!(answer["StatusCode"], 90, "{answer}");
    assert!(
        answer["errorDialog"]
            .as_str()
            .is_some_and(|d| d.contains("not found")),
        "{answer}"
    );

    // Alice, an ordinary user: the pilots' proxy, Bob's proxy, the key pair and the token key
    // are refused, each naming the rule and no value.
    for (method, params) in [
        ("getProxy", vec![("role", "atlas"), ("dn", "atlpilo2")]),
        ("getProxy", vec![("dn", BOB_DN)]),
        (
            "getKeyPair",
            vec![("publicKeyName", "pub.key"), ("privateKeyName", "priv.key")],
        ),
        ("get_token_key", vec![("client_name", "pilot_server")]),
        ("get_access_token", vec![("client_name", "pilot_server")]),
    ] {
        let text = legacy(&pki, &server, Some(&alice), method, &params, true).await;
        let answer = parsed(&text);
        assert_eq!(answer["StatusCode"], 70, "{method}: {answer}");
        assert!(
            answer["errorDialog"]
                .as_str()
                .is_some_and(|d| d.contains("'Alice Tester' may not fetch")),
            "{method}: {answer}"
        );
        for value in VALUES {
            assert!(!text.contains(value), "{method} leaked {value}");
        }
    }
    for (function, query) in [
        ("get_proxy", vec![("dn", BOB_DN)]),
        (
            "get_key_pair",
            vec![
                ("public_key_name", "pub.key"),
                ("private_key_name", "priv.key"),
            ],
        ),
        ("get_token_key", vec![("client_name", "pilot_server")]),
    ] {
        let answer = v1_get(&pki, &server, &alice, function, &query).await;
        assert_eq!(answer["success"], false, "{function}: {answer}");
        assert!(
            answer["message"]
                .as_str()
                .is_some_and(|m| m.contains("may not fetch")),
            "{answer}"
        );
    }
    // Her own proxy she may ask for; none is registered.
    let answer = v1_get(&pki, &server, &alice, "get_proxy", &[("dn", ALICE_DN)]).await;
    assert_eq!(answer["success"], false);
    assert_eq!(answer["message"], format!("proxy for {ALICE_DN} not found"));
    // No credential at all: upstream's message, no value.
    let anonymous = parsed(
        &legacy(
            &pki,
            &server,
            None,
            "getProxy",
            &[("dn", "atlpilo2")],
            false,
        )
        .await,
    );
    assert_eq!(anonymous["StatusCode"], 70);
    assert!(
        anonymous["errorDialog"]
            .as_str()
            .is_some_and(|d| d.contains("not HTTPS")),
        "{anonymous}"
    );

    // Bob's own proxy is his (his proxy of a proxy finds what was registered for his DN).
    let bob = pki::proxy(&pki::proxy(&pki.user("Bob Other"), false), false);
    let own = parsed(&legacy(&pki, &server, Some(&bob), "getProxy", &[], false).await);
    assert_eq!(own["StatusCode"], 0, "{own}");
    assert_eq!(own["userProxy"], "BOB-PROXY-PEM");

    // Key pairs: the pilot gets them (urlencoded unless it asks for JSON); Alice once granted
    // upstream's 'k'.
    let names = [("publicKeyName", "pub.key"), ("privateKeyName", "priv.key")];
    let text = legacy(&pki, &server, Some(&pilot), "getKeyPair", &names, false).await;
    let pair = common::form(&text);
    assert_eq!(
        pair.get("StatusCode").map(String::as_str),
        Some("0"),
        "{text}"
    );
    assert_eq!(
        pair.get("publicKey").map(String::as_str),
        Some("PUBLIC-KEY-TEXT")
    );
    assert_eq!(
        pair.get("privateKey").map(String::as_str),
        Some("PRIVATE-KEY-TEXT")
    );
    let wrong = [("publicKeyName", "pub.key"), ("privateKeyName", "nope.key")];
    let missing =
        common::form(&legacy(&pki, &server, Some(&pilot), "getKeyPair", &wrong, false).await);
    assert_eq!(
        missing.get("StatusCode").map(String::as_str),
        Some("80"),
        "{missing:?}"
    );
    let granted = operator(&env, &cfg, &["users", "grant", "Alice Tester", "k"]);
    assert!(granted.contains("gridpref k"), "{granted}");
    let v1_names = [
        ("public_key_name", "pub.key"),
        ("private_key_name", "priv.key"),
    ];
    let answer = v1_get(&pki, &server, &alice, "get_key_pair", &v1_names).await;
    assert_eq!(answer["success"], true, "{answer}");
    assert_eq!(
        answer["data"],
        json!({"public_key": "PUBLIC-KEY-TEXT", "private_key": "PRIVATE-KEY-TEXT"})
    );
    operator(&env, &cfg, &["users", "revoke", "Alice Tester", "k"]);
    let answer = v1_get(&pki, &server, &alice, "get_key_pair", &v1_names).await;
    assert_eq!(answer["success"], false, "revoked at once: {answer}");

    // Harvester (the production role): its own proxy by role through v1, under both names, and
    // the token key; with that key the pilots' access token, without it or with another not.
    let Some(harvester) = pki.voms_proxy(
        &pki.user("Harvester Robot"),
        &["/atlas/Role=production"],
        None,
    ) else {
        assert!(
            !required(),
            "voms-proxy-fake is needed (apt-get install voms-clients)"
        );
        eprintln!("note: production-role checks skipped: voms-proxy-fake is not installed");
        return;
    };
    let harvester_file = write("harvester.pem", "HARVESTER-PROXY");
    operator(
        &env,
        &cfg,
        &[
            "creds",
            "add",
            "proxy",
            "/DC=org/DC=test/OU=Users/CN=Harvester Robot",
            "--label",
            "atlas:/atlas/Role=production",
            "--file",
            &harvester_file,
        ],
    );
    let role = [("role", "atlas:/atlas/Role=production")];
    let answer = v1_get(&pki, &server, &harvester, "get_proxy", &role).await;
    assert_eq!(answer["success"], true, "{answer}");
    assert_eq!(
        answer["data"]["userProxy"], "HARVESTER-PROXY",
        "Harvester reads userProxy"
    );
    assert_eq!(
        answer["data"]["user_proxy"], "HARVESTER-PROXY",
        "upstream names it user_proxy"
    );
    let client = [("client_name", "pilot_server")];
    let answer = v1_get(&pki, &server, &harvester, "get_token_key", &client).await;
    assert_eq!(answer["success"], true, "{answer}");
    let token_key = answer["data"]["tokenKey"]
        .as_str()
        .expect("tokenKey")
        .to_string();
    assert_eq!(token_key.len(), 64);
    let legacy_key = common::form(
        &legacy(
            &pki,
            &server,
            Some(&harvester),
            "get_token_key",
            &client,
            false,
        )
        .await,
    );
    assert_eq!(legacy_key.get("tokenKey"), Some(&token_key));
    for (given, code) in [
        (None, 50),
        (Some("0".repeat(64)), 50),
        (Some(token_key.clone()), 0),
    ] {
        let mut params = vec![("client_name", "pilot_server")];
        if let Some(given) = given.as_deref() {
            params.push(("token_key", given));
        }
        let answer = parsed(
            &legacy(
                &pki,
                &server,
                Some(&pilot),
                "get_access_token",
                &params,
                false,
            )
            .await,
        );
        assert_eq!(answer["StatusCode"], code, "{params:?}: {answer}");
        if code == 0 {
            assert_eq!(answer["userProxy"], "ACCESS-TOKEN-TEXT");
        } else {
            assert!(answer.get("userProxy").is_none());
        }
    }

    // As pilot3 renews its OIDC token (pilot/util/https.py, refresh_oidc_token): a GET with
    // its bearer token, client_name=pilot_server and its token key in the query; it reads the
    // JSON answer's StatusCode and userProxy.
    let pilot_token = issuer.sign(&issuer.claims("Pilot Factory", &["atlas", "atlas/pilot"]));
    let renewal = |key: String| {
        let request = pki
            .client(None)
            .get(format!(
                "{}/server/panda/get_access_token",
                server.https_url()
            ))
            .query(&[("client_name", "pilot_server"), ("token_key", key.as_str())])
            .bearer_auth(&pilot_token)
            .header("Origin", "atlas.pilot");
        async move {
            request
                .send()
                .await
                .expect("https")
                .text()
                .await
                .expect("body")
        }
    };
    let renewed = parsed(&renewal(token_key.clone()).await);
    assert_eq!(
        renewed,
        json!({"StatusCode": 0, "errorDialog": "", "userProxy": "ACCESS-TOKEN-TEXT"})
    );
    let stale = parsed(&renewal("f".repeat(64)).await);
    assert_eq!(stale["StatusCode"], 50, "{stale}");
    // A user's token is no pilot's.
    let user_token = issuer.sign(&issuer.claims("Alice Tester", &["atlas"]));
    let by_user: Json = pki
        .client(None)
        .get(format!(
            "{}/server/panda/get_access_token",
            server.https_url()
        ))
        .query(&[
            ("client_name", "pilot_server"),
            ("token_key", token_key.as_str()),
        ])
        .bearer_auth(&user_token)
        .header("Origin", "atlas")
        .send()
        .await
        .expect("https")
        .json()
        .await
        .expect("json");
    assert_eq!(by_user["StatusCode"], 70, "{by_user}");

    // Nothing of any value reached the server's log.
    let log = server
        .lines_after(std::time::Duration::from_millis(200))
        .join("\n");
    for value in VALUES
        .iter()
        .copied()
        .chain(["HARVESTER-PROXY", token_key.as_str()])
    {
        assert!(!log.contains(value), "{value} in the log");
    }
}

#[tokio::test]
async fn a_server_without_a_credential_key_keeps_no_credentials_and_says_so() {
    let (pki, _db, site, env) = https_site();
    let cfg = site.dir.path().join("panda_server.cfg");
    std::fs::write(&cfg, "[server]\nbind_address = 127.0.0.1\n").expect("cfg");
    operator(&env, &cfg, &["schema", "migrate"]);
    let server = Server::start(&["--config", &cfg.display().to_string()], &env);
    assert!(server.find_log("no credential_key_file").is_some());
    let alice = pki.user("Alice Tester");
    let reply: Json = pki
        .client(Some(&alice))
        .post(format!(
            "{}/api/v1/creds/set_user_secrets",
            server.https_url()
        ))
        .header("Accept", "application/json")
        .json(&json!({"key": "k", "value": "v"}))
        .send()
        .await
        .expect("https")
        .json()
        .await
        .expect("envelope");
    assert_eq!(reply["success"], false);
    assert!(
        reply["message"]
            .as_str()
            .is_some_and(|m| m.contains("credential_key_file")),
        "{reply}"
    );
    let config = cfg.to_str().expect("path");
    let added = run(
        &[
            "--config",
            config,
            "creds",
            "add",
            "key",
            "k",
            "--file",
            "/dev/null",
        ],
        &env,
    );
    assert!(!added.status.success());
    assert!(String::from_utf8_lossy(&added.stderr).contains("no credential_key_file"));
}

#[tokio::test]
async fn user_secrets_are_bounded_and_belong_to_their_owner_only() {
    let (pki, db, site, env) = https_site();
    // Local mode: the key is made under PANDA_HOME at the first start.
    let server = Server::start(&[], &env);
    assert!(site.dir.path().join("home/credential.key").exists());
    let alice = pki.user("Alice Tester");
    let bob = pki.user("Bob Other");
    let set = |who: &Credential, body: Json| {
        let request = pki
            .client(Some(who))
            .post(format!(
                "{}/api/v1/creds/set_user_secrets",
                server.https_url()
            ))
            .header("Accept", "application/json")
            .json(&body);
        common::envelope_of(request)
    };
    let reply = set(&alice, json!({"key": "MQ_PASS", "value": "s3cret-value"})).await;
    assert_eq!(
        reply,
        json!({"success": true, "message": "OK", "data": null})
    );
    // Too long a value or name: refused by name, nothing stored.
    let long = "x".repeat(1000 * 1024 + 1);
    let reply = set(&alice, json!({"key": "big", "value": long})).await;
    assert_eq!(reply["success"], false);
    assert!(
        reply["message"]
            .as_str()
            .is_some_and(|m| m.contains("at most 1024000 bytes")),
        "{reply}"
    );
    let reply = set(&alice, json!({"key": "k".repeat(300), "value": "v"})).await;
    assert!(
        reply["message"]
            .as_str()
            .is_some_and(|m| m.contains("name must have")),
        "{reply}"
    );

    let get = |who: &Credential| {
        let request = pki
            .client(Some(who))
            .get(format!(
                "{}/api/v1/creds/get_user_secrets",
                server.https_url()
            ))
            .header("Accept", "application/json");
        common::envelope_of(request)
    };
    let mine = get(&alice).await;
    assert_eq!(mine["success"], true, "{mine}");
    let data: Json =
        serde_json::from_str(mine["data"].as_str().expect("a JSON text")).expect("json");
    assert_eq!(data, json!({"MQ_PASS": "s3cret-value"}));
    let bobs = get(&bob).await;
    assert_eq!(bobs["data"], "{}", "Bob sees only his own: {bobs}");

    // The legacy pair form, as pilots read their job owner's secrets.
    let asked = [("keys", "MQ_PASS,other"), ("get_json", "True")];
    let legacy_text = legacy(
        &pki,
        &server,
        Some(&alice),
        "get_user_secrets",
        &asked,
        false,
    )
    .await;
    assert_eq!(
        parsed(&legacy_text),
        json!([true, {"MQ_PASS": "s3cret-value"}])
    );
    // In local mode a credential-less loopback caller is the local operator: its own
    // (empty) secrets, not Alice's.
    let operator_view = legacy(&pki, &server, None, "get_user_secrets", &[], false).await;
    assert_eq!(parsed(&operator_view), json!([true, "{}"]));

    // Stored sealed.
    let store = Store::open(&db.config, StoreOptions::default())
        .await
        .expect("open");
    let mut tx = store.begin(TxMode::Read).await.expect("tx");
    let rows = tx
        .fetch(
            "SELECT owner, data FROM secrets",
            &[],
            &[ColumnType::Text, ColumnType::Text],
        )
        .await
        .expect("rows");
    assert_eq!(rows.len(), 1, "the refused writes left no row");
    assert_eq!(rows[0][0].render(), "Alice Tester");
    assert!(rows[0][1].render().starts_with("v1:") && !rows[0][1].render().contains("s3cret"));
    drop(tx);

    // Jobs go out with secrets as upstream's getJob sends them: a job marked to use its
    // owner's (`us`) with Alice's, opened; a job in debug mode (`dm`) with the pilot's (none
    // stored: `{}`); a plain job with neither.
    let state = |name: &str, special: &str| {
        let mut job = common::TestJob::new(name);
        job.label = "user".into();
        job.site = Some("ANALY_QUEUE".into());
        let mut state = job.state();
        state[JobAttr::specialHandling.index()] = json!(special);
        state
    };
    let jobs = json!([
        state("plain", "NULL"),
        state("uses", "us"),
        state("debug", "dm")
    ]);
    let submitted = common::envelope_of(
        pki.client(Some(&alice))
            .post(format!("{}/api/v1/job/submit", server.https_url()))
            .header("Accept", "application/json")
            .json(&json!({"jobs": jobs.to_string()})),
    )
    .await;
    assert_eq!(submitted["success"], true, "{submitted}");
    let mut handed_out = Vec::new();
    for _ in 0..3 {
        let params = [("siteName", "ANALY_QUEUE"), ("prodSourceLabel", "user")];
        let text = legacy(&pki, &server, None, "getJob", &params, true).await;
        handed_out.push(parsed(&text));
    }
    let names: Vec<&str> = handed_out
        .iter()
        .map(|job| job["jobName"].as_str().unwrap_or("?"))
        .collect();
    assert_eq!(names, ["plain", "uses", "debug"], "{handed_out:?}");
    let plain = handed_out[0].as_object().expect("a job");
    assert!(!plain.contains_key("secrets") && !plain.contains_key("pilotSecrets"));
    let sent: Json = serde_json::from_str(handed_out[1]["secrets"].as_str().expect("secrets"))
        .expect("the owner's secrets as JSON text");
    assert_eq!(sent, json!({"MQ_PASS": "s3cret-value"}));
    assert!(!handed_out[1]
        .as_object()
        .expect("job")
        .contains_key("pilotSecrets"));
    assert_eq!(handed_out[2]["pilotSecrets"], "{}", "{}", handed_out[2]);
    assert!(!handed_out[2]
        .as_object()
        .expect("job")
        .contains_key("secrets"));
    // The secrets never reach the log.
    let log = server
        .lines_after(std::time::Duration::from_millis(200))
        .join("\n");
    assert!(!log.contains("s3cret-value"));
}
