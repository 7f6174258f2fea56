//! Identities come only from what was verified: the holes an attack run found on 12ce1bb,
//! each replayed over real HTTPS with chains made in the test.
//!
//! - Extra certificates in the presented chain (a self-signed one named like a production
//!   DN, another user's public certificate) never name the caller.
//! - A full proxy signed by a limited proxy stays limited however the chain is ordered.
//! - A VOMS AC whose VO is a path (`../work/evil`) never leads the trust lookup out of
//!   `vomsdir`, even when a `.lsc` file was planted where the path points.

mod common;

use common::pki::{self, Credential, GridPki, Issued};
use common::{db_env, envelope, required, Server, Site, TestJob};
use panda_store::testing::TestDb;
use panda_store::Backend;
use serde_json::{json, Value as Json};

const ALICE_DN: &str = "/DC=org/DC=test/OU=Users/CN=Alice Tester";
const PRODUCTION_DN: &str = "/DC=org/DC=bar/OU=Users/CN=Bar prod";

fn client(pki: &GridPki, credential: &Credential) -> reqwest::Client {
    pki.client(Some(credential))
}

/// `system/get_attributes` over HTTPS: the status and the parsed envelope (or the text).
async fn attributes(server: &Server, pki: &GridPki, credential: &Credential) -> (u16, Json) {
    let (status, text) = pki.get_attributes(server, Some(credential)).await;
    (
        status,
        serde_json::from_str(&text).unwrap_or(Json::String(text)),
    )
}

/// A server with HTTPS, local mode off, and `PRODUCTION_DN` listed as a production DN.
fn https_server(pki: &GridPki, db: &TestDb, site: &Site) -> Server {
    let mut env = db_env(db);
    env.extend(site.env());
    env.extend(pki.env());
    let cfg = site.dir.path().join("panda_server.cfg");
    std::fs::write(
        &cfg,
        format!("[server]\nbind_address = 127.0.0.1\nproduction_dns = {PRODUCTION_DN}\n"),
    )
    .expect("cfg");
    Server::start(&["--config", &cfg.display().to_string()], &env)
}

/// A chain as a forger presents it: `leaf` with its key, then `rest` in this order.
fn presented(leaf: &Credential, rest: &[&Credential]) -> Credential {
    Credential {
        cert: leaf.cert.clone(),
        key: leaf.key.clone(),
        chain: rest.iter().map(|c| c.cert.clone()).collect(),
    }
}

#[tokio::test]
async fn extra_certificates_never_name_the_caller_and_limited_stays_limited() {
    let pki = GridPki::new();
    let db = TestDb::new(Backend::Sqlite);
    let site = Site::new();
    let server = https_server(&pki, &db, &site);
    let alice = pki.user("Alice Tester");
    let bob = pki.user("Bob Tester");
    let proxy = pki::proxy(&alice, false);

    // Bob submits a job of his own, with his own certificate.
    let mut job = TestJob::new("bobs-job");
    job.label = "user".into();
    let body = json!({"jobs": Json::Array(vec![job.state()]).to_string()});
    let reply = envelope(
        client(&pki, &bob)
            .post(format!("{}/api/v1/job/submit", server.https_url()))
            .header("Accept", "application/json")
            .json(&body),
    )
    .await;
    assert_eq!(reply["success"], true, "{reply}");
    let bobs_job = reply["data"][0][0]
        .as_i64()
        .unwrap_or_else(|| panic!("a PandaID in {reply}"));

    // A self-signed certificate named as a production DN, slipped in between the proxy and
    // Alice's certificate: the path OpenSSL verifies runs proxy → Alice → CA, so Alice.
    let impostor = pki::issue(Issued {
        subject: PRODUCTION_DN,
        ..Issued::default()
    });
    for (what, extra) in [
        ("a self-signed production DN", &impostor),
        ("bob's certificate", &bob),
    ] {
        let forged = presented(&proxy, &[extra, &alice]);
        let (status, reply) = attributes(&server, &pki, &forged).await;
        assert_eq!(status, 200, "{what}: {reply}");
        let seen = &reply["data"]["environment"];
        assert_eq!(seen["SSL_CLIENT_S_DN"], ALICE_DN, "{what}: {reply}");
        assert_eq!(seen["PANDA_PRODUCTION_ROLE"], false, "{what}: {reply}");
    }

    // With Bob's certificate in that slot, Alice still cannot kill Bob's job.
    let forged = presented(&proxy, &[&bob, &alice]);
    let kill = envelope(
        client(&pki, &forged)
            .post(format!("{}/api/v1/job/kill", server.https_url()))
            .header("Accept", "application/json")
            .json(&json!({"job_ids": [bobs_job]})),
    )
    .await;
    let status = envelope(
        client(&pki, &bob)
            .get(format!(
                "{}/api/v1/job/get_status?job_ids={bobs_job}",
                server.https_url()
            ))
            .header("Accept", "application/json"),
    )
    .await;
    assert_ne!(kill["data"][0], true, "alice killed bob's job: {kill}");
    let text = status.to_string();
    assert!(
        status["success"] == true && !text.contains("cancelled") && !text.contains("killed"),
        "bob's job after alice's kill: {kill} then {status}"
    );

    // A full proxy signed by Alice's limited proxy, presented out of order: still limited.
    let limited = pki::proxy(&alice, true);
    let upgraded = pki::proxy(&limited, false);
    let reordered = presented(&upgraded, &[&alice, &limited]);
    let (status, reply) = attributes(&server, &pki, &reordered).await;
    assert_eq!(status, 200, "{reply}");
    assert!(
        reply["message"]
            .as_str()
            .is_some_and(|m| m.contains("limited proxy")),
        "a limited chain was taken as full: {reply}"
    );
    // In order, too.
    let (_, reply) = attributes(&server, &pki, &upgraded).await;
    assert!(
        reply["message"]
            .as_str()
            .is_some_and(|m| m.contains("limited proxy")),
        "{reply}"
    );
    // The honest chains still work.
    let (_, reply) = attributes(&server, &pki, &proxy).await;
    assert_eq!(reply["data"]["environment"]["SSL_CLIENT_S_DN"], ALICE_DN);
}

#[tokio::test]
async fn a_voms_name_never_leads_out_of_vomsdir() {
    let pki = GridPki::new();
    let db = TestDb::new(Backend::Sqlite);
    let site = Site::new();
    let server = https_server(&pki, &db, &site);
    let alice = pki.user("Alice Tester");
    // Alice signs an AC with her own certificate (which the CA trusts), names the VO as a
    // path, and plants a `.lsc` naming herself where that path leads.
    let evil = pki.path("work/evil");
    std::fs::create_dir_all(&evil).expect("dir");
    std::fs::write(
        evil.join("voms.test.org.lsc"),
        format!("{ALICE_DN}\n{}\n", pki::CA_DN),
    )
    .expect("planted lsc");
    let Some(forged) = pki.voms_proxy_of_vo(
        &alice,
        "../work/evil",
        &["/atlas/Role=production"],
        Some(&alice),
    ) else {
        assert!(
            !required(),
            "voms-proxy-fake is needed (apt-get install voms-clients)"
        );
        eprintln!("note: skipped: voms-proxy-fake is not installed");
        return;
    };
    let (status, reply) = attributes(&server, &pki, &forged).await;
    assert_eq!(status, 403, "{reply}");
    let text = reply.as_str().unwrap_or_default().to_string();
    assert!(
        text.contains("VOMS attributes do not verify") && text.contains("not a plain name"),
        "{text}"
    );
    // The trusted VOMS server's AC still gives the role.
    let honest = pki
        .voms_proxy(&alice, &["/atlas/Role=production"], None)
        .expect("voms-proxy-fake");
    let (status, reply) = attributes(&server, &pki, &honest).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["data"]["environment"]["PANDA_PRODUCTION_ROLE"], true);
}
