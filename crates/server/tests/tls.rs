//! HTTPS with grid credentials made in the test: a user certificate, proxies, a proxy of a
//! proxy, a limited proxy, an expired certificate, one from an unknown CA, a revoked one, a
//! VOMS proxy with the production role and one whose AC is forged. Each gets the answer a
//! grid user would expect, and the same routes answer on HTTP and HTTPS.

mod common;

use common::pki::{self, Credential, GridPki, Issued, CA_DN};
use common::{db_env, required, Server, Site};
use panda_store::testing::TestDb;
use panda_store::Backend;
use serde_json::{json, Value as Json};

fn client(pki: &GridPki, credential: Option<&Credential>) -> reqwest::Client {
    pki.client(credential)
}

/// `system/get_attributes` over HTTPS: the status and the answer's text.
async fn attributes(
    server: &Server,
    pki: &GridPki,
    credential: Option<&Credential>,
) -> (u16, String) {
    pki.get_attributes(server, credential).await
}

fn environment(body: &str) -> Json {
    let parsed: Json = serde_json::from_str(body).unwrap_or_else(|_| panic!("{body}"));
    assert_eq!(parsed["success"], true, "{body}");
    parsed["data"]["environment"].clone()
}

#[tokio::test]
async fn grid_credentials_get_the_answers_a_grid_user_expects() {
    let pki = GridPki::new();
    let db = TestDb::new(Backend::Sqlite);
    let site = Site::new();
    let mut env = db_env(&db);
    env.extend(site.env());
    env.extend(pki.env());
    // A config file turns local mode off, so only credentials count.
    let cfg = site.dir.path().join("panda_server.cfg");
    std::fs::write(&cfg, "[server]\nbind_address = 127.0.0.1\n").expect("cfg");
    let server = Server::start(&["--config", &cfg.display().to_string()], &env);

    // Plain HTTP and HTTPS serve the same routes.
    let plain = reqwest::get(format!("{}/server/panda/isAlive", server.base_url))
        .await
        .expect("http");
    assert_eq!(plain.text().await.expect("body"), "alive=yes");
    let tls = client(&pki, None)
        .get(format!("{}/server/panda/isAlive", server.https_url()))
        .send()
        .await
        .expect("https");
    assert_eq!(tls.text().await.expect("body"), "alive=yes");

    // No certificate: anonymous, so secure functions refuse.
    let (status, body) = attributes(&server, &pki, None).await;
    assert_eq!(status, 200);
    assert!(body.contains("SSL secure connection is required"), "{body}");

    let alice = pki.user("Alice Tester");
    let alice_dn = "/DC=org/DC=test/OU=Users/CN=Alice Tester";
    let (status, body) = attributes(&server, &pki, Some(&alice)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(environment(&body)["SSL_CLIENT_S_DN"], alice_dn);

    // A proxy and a proxy of a proxy are Alice.
    let proxy = pki::proxy(&alice, false);
    let (_, body) = attributes(&server, &pki, Some(&proxy)).await;
    assert_eq!(environment(&body)["SSL_CLIENT_S_DN"], alice_dn);
    let proxy2 = pki::proxy(&proxy, false);
    let (_, body) = attributes(&server, &pki, Some(&proxy2)).await;
    assert_eq!(environment(&body)["SSL_CLIENT_S_DN"], alice_dn);

    // A limited proxy is refused by user functions and accepted by the pilot's.
    let limited = pki::proxy(&alice, true);
    let (status, body) = attributes(&server, &pki, Some(&limited)).await;
    assert_eq!(status, 200);
    assert!(body.contains("limited proxy"), "{body}");
    let status_call = client(&pki, Some(&limited))
        .get(format!(
            "{}/server/panda/getStatus?ids=1",
            server.https_url()
        ))
        .send()
        .await
        .expect("https");
    assert_eq!(status_call.status(), 200);

    // Expired, unknown CA, revoked: 403 naming the problem.
    let expired = pki::issue(Issued {
        subject: "/DC=org/DC=test/OU=Users/CN=Old Timer",
        issuer: Some(&pki.ca),
        not_before_days: -30,
        not_after_days: -1,
        ..Issued::default()
    });
    let other_ca = pki::issue(Issued {
        subject: CA_DN,
        ca: true,
        ..Issued::default()
    });
    let stranger = pki::issue(Issued {
        subject: "/DC=org/DC=test/OU=Users/CN=Stranger",
        issuer: Some(&other_ca),
        ..Issued::default()
    });
    let revoked = pki.user("Revoked User");
    let have_openssl = std::process::Command::new("openssl")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        have_openssl || !required(),
        "the openssl command is needed for the CRL"
    );
    if have_openssl {
        pki.revoke(&revoked);
    } else {
        eprintln!("note: the revoked-certificate case is skipped: no openssl command");
    }
    let truncated = Credential {
        cert: proxy.cert.clone(),
        key: proxy.key.clone(),
        chain: Vec::new(),
    };
    let mut refused = vec![
        (&expired, "expired"),
        (&stranger, "unable to get local issuer"),
        (&truncated, "unable to get"),
    ];
    if have_openssl {
        refused.push((&revoked, "revoked"));
    }
    for (credential, reason) in refused {
        let (status, body) = attributes(&server, &pki, Some(credential)).await;
        assert_eq!(status, 403, "{reason}: {body}");
        assert!(
            body.starts_with("ERROR : Certificate authentication failed.")
                && body.to_lowercase().contains(reason),
            "{reason}: {body}"
        );
    }
    // Alice still works after the CRL appeared.
    let (status, _) = attributes(&server, &pki, Some(&alice)).await;
    assert_eq!(status, 200);

    // VOMS: a production role from a trusted VOMS server; a forged AC is refused.
    let Some(production) = pki.voms_proxy(&alice, &["/atlas/Role=production", "/atlas"], None)
    else {
        assert!(
            !required(),
            "voms-proxy-fake is needed (apt-get install voms-clients)"
        );
        eprintln!("note: VOMS checks skipped: voms-proxy-fake is not installed");
        return;
    };
    let (status, body) = attributes(&server, &pki, Some(&production)).await;
    assert_eq!(status, 200, "{body}");
    let env_seen = environment(&body);
    assert_eq!(env_seen["SSL_CLIENT_S_DN"], alice_dn);
    assert_eq!(env_seen["GRST_CRED_1"], "VOMS /atlas/Role=production");
    assert_eq!(env_seen["PANDA_PRODUCTION_ROLE"], true);
    // `job/set_command` needs the production role: the VOMS role has it, the plain proxy not.
    let set_command = |credential: &Credential| {
        let request = client(&pki, Some(credential))
            .post(format!("{}/api/v1/job/set_command", server.https_url()))
            .json(&json!({"job_id": 1, "command": "debug"}));
        async move {
            request
                .send()
                .await
                .expect("https")
                .json::<Json>()
                .await
                .expect("envelope")
        }
    };
    let with_role = set_command(&production).await;
    assert_ne!(
        with_role["message"], "production or pilot role required",
        "{with_role}"
    );
    let plain_user = set_command(&proxy).await;
    assert_eq!(plain_user["message"], "production or pilot role required");

    // What the server takes a caller for: the VOMS variables, the DN, the production
    // working groups (upstream's `group`, `gr_group`; the primary one from the last).
    let group = pki
        .voms_proxy(
            &alice,
            &["/atlas/phys-higgs/Role=production", "/atlas"],
            None,
        )
        .expect("voms-proxy-fake");
    let get = |path: &'static str, credential: &Credential| {
        let request = client(&pki, Some(credential))
            .get(format!("{}/api/v1/system/{path}", server.https_url()));
        async move {
            request
                .header("Accept", "application/json")
                .send()
                .await
                .expect("https")
                .json::<Json>()
                .await
                .expect("envelope")
        }
    };
    let voms = get("get_voms_attributes", &group).await;
    assert_eq!(
        voms["data"],
        json!({"GRST_CRED_1": "VOMS /atlas/phys-higgs/Role=production",
               "GRST_CRED_2": "VOMS /atlas"}),
        "{voms}"
    );
    assert_eq!(
        voms["message"],
        "GRST_CRED_1 : VOMS /atlas/phys-higgs/Role=production\nGRST_CRED_2 : VOMS /atlas"
    );
    let user = get("get_user_attributes", &group).await;
    assert_eq!(user["data"]["user_dn_raw"], alice_dn, "{user}");
    assert_eq!(user["data"]["user_dn_clean"], "Alice Tester");
    assert_eq!(
        user["data"]["production_working_groups"],
        json!(["phys-higgs", "gr_phys-higgs"])
    );
    assert_eq!(user["data"]["primary_working_group"], "higgs");
    let plain = get("get_user_attributes", &proxy).await;
    assert_eq!(plain["data"]["is_production_user"], false, "{plain}");
    assert_eq!(plain["data"]["production_working_groups"], json!([]));
    assert_eq!(plain["data"]["primary_working_group"], Json::Null);
    // Without a credential, each of these functions refuses, as upstream.
    for (verb, path) in [
        ("GET", "system/get_user_attributes"),
        ("GET", "system/get_voms_attributes"),
        ("GET", "metaconfig/get_banned_users"),
        ("POST", "idds/relay_idds_command"),
    ] {
        let url = format!("{}/api/v1/{path}", server.https_url());
        let request = match verb {
            "GET" => client(&pki, None).get(url),
            _ => client(&pki, None)
                .post(url)
                .json(&json!({"command_name": "get_requests"})),
        };
        let anonymous = request
            .send()
            .await
            .expect("https")
            .text()
            .await
            .expect("body");
        assert!(
            anonymous.contains("SSL secure connection is required"),
            "{path}: {anonymous}"
        );
    }

    let forger = pki.voms_server(&other_ca);
    let forged = pki
        .voms_proxy(&alice, &["/atlas/Role=production"], Some(&forger))
        .expect("voms-proxy-fake");
    let (status, body) = attributes(&server, &pki, Some(&forged)).await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("VOMS attributes do not verify"), "{body}");

    // A garbage credential never reaches a handler as anyone.
    let logged = server.lines_after(std::time::Duration::from_millis(200));
    assert!(logged
        .iter()
        .any(|l| l.contains("client certificate refused")));
}
