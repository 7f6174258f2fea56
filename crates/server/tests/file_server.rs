//! The sandbox cache over HTTP on both backends, as prun uses it: `validate_cache_file`
//! finds nothing, `upload_cache_file` stores the multipart field `file` byte for byte under
//! `/cache/`, `validate_cache_file` then finds it by size and gzip CRC; and what must be
//! refused: an overwrite, a path in the name, an upload over its limit (413, limit named,
//! nothing left behind), an upload over plain HTTP outside local mode, an anonymous caller.

mod common;

use common::{api_client, db_env, gzip, Server, Site, Stack, TokenIssuer};
use panda_store::testing::{backends, TestDb};
use panda_store::Backend;
use serde_json::{json, Value as Json};

fn form(name: &str, bytes: Vec<u8>) -> reqwest::multipart::Form {
    let part = reqwest::multipart::Part::bytes(bytes)
        .file_name(name.to_string())
        .mime_str("application/octet-stream")
        .expect("mime");
    reqwest::multipart::Form::new().part("file", part)
}

async fn upload(
    client: &reqwest::Client,
    server: &Server,
    name: &str,
    bytes: Vec<u8>,
) -> (u16, Json) {
    let response = client
        .post(server.url("/api/v1/file_server/upload_cache_file"))
        .multipart(form(name, bytes))
        .send()
        .await
        .expect("upload");
    let status = response.status().as_u16();
    (status, response.json().await.expect("envelope"))
}

async fn validate(client: &reqwest::Client, server: &Server, size: usize, crc: u32) -> Json {
    client
        .post(server.url("/api/v1/file_server/validate_cache_file"))
        .json(&json!({"file_size": size, "checksum": crc}))
        .send()
        .await
        .expect("validate")
        .json()
        .await
        .expect("envelope")
}

/// What panda-client sends as the checksum: the CRC-32 of a gzip file's footer.
fn footer_crc(bytes: &[u8]) -> u32 {
    let n = bytes.len();
    u32::from_le_bytes(bytes[n - 8..n - 4].try_into().expect("footer"))
}

/// Names in the cache directory (temporary upload files included).
fn cache_entries(site: &Site) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(site.dir.path().join("cache"))
        .expect("cache dir")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn a_sandbox_is_stored_served_and_found_again() {
    for backend in backends() {
        let stack = Stack::start(backend, &[], &[]).await;
        let client = api_client();
        let sandbox = gzip(&vec![b'x'; 300_000]);
        let crc = footer_crc(&sandbox);

        let before = validate(&client, &stack.server, sandbox.len(), crc).await;
        assert_eq!(before["success"], false, "{before}");
        assert_eq!(before["message"], "NOTFOUND");

        let name = "jobO.0b5e4c2a-1111-2222-3333-444455556666.tar.gz";
        let (status, stored) = upload(&client, &stack.server, name, sandbox.clone()).await;
        assert_eq!(
            (status, &stored["success"]),
            (200, &json!(true)),
            "{stored}"
        );
        let served = client
            .get(stack.server.url(&format!("/cache/{name}")))
            .send()
            .await
            .expect("get");
        assert_eq!(served.status(), 200);
        assert_eq!(served.bytes().await.expect("bytes").to_vec(), sandbox);

        let found = validate(&client, &stack.server, sandbox.len(), crc).await;
        assert_eq!(found["success"], true, "{found}");
        let message = found["message"].as_str().unwrap_or_default();
        assert!(
            message.starts_with("FOUND:") && message.ends_with(&format!(":{name}")),
            "{message}"
        );

        // The same name again: refused, the file unchanged.
        let (_, again) = upload(&client, &stack.server, name, gzip(b"other")).await;
        assert_eq!(again["success"], false);
        assert_eq!(again["message"], "ERROR: cannot overwrite file");
        let on_disk = std::fs::read(stack.site.dir.path().join("cache").join(name)).expect("file");
        assert_eq!(
            on_disk, sandbox,
            "{backend:?}: an overwrite changed the file"
        );

        // Touch and delete answer success for a plain name, and refuse paths.
        for function in ["touch_cache_file", "delete_cache_file"] {
            let ok: Json = client
                .post(stack.server.url(&format!("/api/v1/file_server/{function}")))
                .json(&json!({"file_name": name}))
                .send()
                .await
                .expect("post")
                .json()
                .await
                .expect("envelope");
            assert_eq!(ok["success"], true, "{function}: {ok}");
        }
        assert_eq!(cache_entries(&stack.site), vec![name.to_string()]);
    }
}

#[tokio::test]
async fn bad_uploads_are_refused_and_leave_nothing() {
    let stack = Stack::start(Backend::Sqlite, &[], &[]).await;
    let client = api_client();
    for bad in [
        "../escape.tar.gz",
        "dir/jobO.tar.gz",
        ".hidden.tar.gz",
        "..",
    ] {
        let (status, refused) = upload(&client, &stack.server, bad, gzip(b"data")).await;
        assert_eq!(status, 200, "{bad}");
        assert_eq!(refused["success"], false, "{bad}: {refused}");
        assert!(
            refused["message"]
                .as_str()
                .unwrap_or_default()
                .contains("file name"),
            "{bad}: {refused}"
        );
    }
    // A --noBuild sandbox may be 10 MB; 11 MB is refused as it arrives, with the limit named.
    let (status, too_large) = upload(
        &client,
        &stack.server,
        "jobO.big.tar.gz",
        vec![0u8; 11 * 1024 * 1024],
    )
    .await;
    assert_eq!(status, 413, "{too_large}");
    let message = too_large["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(&(10 * 1024 * 1024).to_string()),
        "{message}"
    );
    // A body declaring more than any file may be is refused before it is read.
    let huge = client
        .post(stack.server.url("/api/v1/file_server/upload_cache_file"))
        .header("Content-Type", "multipart/form-data; boundary=x")
        .header("Content-Length", (900u64 * 1024 * 1024).to_string())
        .body("--x\r\n")
        .send()
        .await;
    if let Ok(response) = huge {
        assert_eq!(response.status(), 413);
    }
    assert!(
        cache_entries(&stack.site).is_empty(),
        "{:?}",
        cache_entries(&stack.site)
    );
    let missing = client
        .get(stack.server.url("/cache/jobO.big.tar.gz"))
        .send()
        .await
        .expect("get");
    assert_eq!(missing.status(), 404);
}

#[tokio::test]
async fn uploads_need_a_credential_and_https_outside_local_mode() {
    let db = TestDb::new(Backend::Sqlite);
    let site = Site::new();
    let issuer = TokenIssuer::new("atlas");
    let mut env = db_env(&db);
    env.extend(site.env());
    env.extend(issuer.env());
    env.push(("PANDA_TRUST_LOOPBACK".into(), "False".into()));
    let server = Server::start(&[], &env);
    let client = api_client();

    let (_, anonymous) = upload(&client, &server, "jobO.a.tar.gz", gzip(b"a")).await;
    assert_eq!(anonymous["success"], false);
    assert_eq!(anonymous["message"], "SSL secure connection is required");

    let token = issuer.sign(&issuer.claims("Test user", &["atlas"]));
    let response = client
        .post(server.url("/api/v1/file_server/upload_cache_file"))
        .bearer_auth(&token)
        .header("Origin", "atlas")
        .multipart(form("jobO.a.tar.gz", gzip(b"a")))
        .send()
        .await
        .expect("upload");
    let text = response.text().await.expect("text");
    let plain_http: Json = serde_json::from_str(&text).unwrap_or_else(|_| panic!("{text}"));
    assert_eq!(plain_http["success"], false);
    assert_eq!(plain_http["message"], "ERROR : no HTTPS");
    assert!(std::fs::read_dir(site.dir.path().join("cache"))
        .expect("cache")
        .next()
        .is_none());
}
