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
        // The operator's DDM endpoints, which pilots fetch and the monitor reads.
        "ddmendpoints.json",
        "ddmendpoints.json.__ow__",
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

#[tokio::test]
async fn logs_checkpoints_and_agent_requests_are_kept_as_upstream_keeps_them() {
    let stack = Stack::start(Backend::Sqlite, &[], &[]).await;
    let client = api_client();
    let post = |function: &str, body: Json| {
        let request = client
            .post(stack.server.url(&format!("/api/v1/file_server/{function}")))
            .json(&body);
        async move {
            request
                .send()
                .await
                .expect("post")
                .json::<Json>()
                .await
                .expect("envelope")
        }
    };
    // A JEDI log replaces the previous one and is served under /cache/jedilog/.
    for content in [&b"first"[..], &b"second"[..]] {
        let reply: Json = client
            .post(stack.server.url("/api/v1/file_server/upload_jedi_log"))
            .multipart(form("task.10000001.log", content.to_vec()))
            .send()
            .await
            .expect("upload")
            .json()
            .await
            .expect("envelope");
        assert_eq!(reply["success"], true, "{reply}");
        assert!(reply["data"]
            .as_str()
            .is_some_and(|u| u.ends_with("/cache/jedilog/task.10000001.log")));
    }
    let served = client
        .get(stack.server.url("/cache/jedilog/task.10000001.log"))
        .send()
        .await
        .expect("get")
        .text()
        .await
        .expect("text");
    assert_eq!(served, "second");
    // A checkpoint is named by its task and sub-ID, and can be deleted.
    let (_, placed) = upload_to(
        &client,
        &stack.server,
        "upload_hpo_checkpoint",
        "10000001_7",
        b"cp".to_vec(),
    )
    .await;
    assert_eq!(placed["success"], true, "{placed}");
    assert!(stack
        .site
        .dir
        .path()
        .join("cache/hpo_cp_10000001_7")
        .exists());
    let (_, unnamed) = upload_to(
        &client,
        &stack.server,
        "upload_hpo_checkpoint",
        "noseparator",
        b"cp".to_vec(),
    )
    .await;
    assert!(
        unnamed["message"]
            .as_str()
            .unwrap_or_default()
            .contains("task and sub IDs"),
        "{unnamed}"
    );
    let deleted = post(
        "delete_hpo_checkpoint",
        json!({"task_id": 10000001, "sub_id": "7"}),
    )
    .await;
    assert_eq!(deleted["success"], true, "{deleted}");
    assert!(!stack
        .site
        .dir
        .path()
        .join("cache/hpo_cp_10000001_7")
        .exists());
    let again = post(
        "delete_hpo_checkpoint",
        json!({"task_id": 10000001, "sub_id": "7"}),
    )
    .await;
    assert_eq!(again["success"], false);
    // Requests for agents this server does not run are kept, and the answer says so.
    let recovery = post(
        "upload_file_recovery_request",
        json!({"dataset": "user.x.ds", "files": ["a", "b"]}),
    )
    .await;
    assert_eq!(recovery["success"], true, "{recovery}");
    assert!(recovery["message"]
        .as_str()
        .unwrap_or_default()
        .contains("no file-recovery agent"));
    let neither = post("upload_file_recovery_request", json!({})).await;
    assert_eq!(
        neither["message"],
        "Either task_id or dataset must be provided"
    );
    let workflow = post(
        "upload_workflow_request",
        json!({"data": "{\"steps\": []}"}),
    )
    .await;
    assert_eq!(workflow["success"], true, "{workflow}");
    let synchronous = post(
        "upload_workflow_request",
        json!({"data": "{}", "sync": true}),
    )
    .await;
    assert!(synchronous["message"]
        .as_str()
        .unwrap_or_default()
        .contains("workflow processor"));
    let picking = post(
        "upload_event_picking_request",
        json!({"run_event_list": "1 2", "user_task_name": "t"}),
    )
    .await;
    assert_eq!(picking["success"], true, "{picking}");
    let kept: Vec<String> = cache_entries(&stack.site);
    for prefix in ["recov.", "workflow.", "evp.", "lost_file_recovery."] {
        assert!(
            kept.iter().any(|n| n.starts_with(prefix)),
            "{prefix}: {kept:?}"
        );
    }
}

async fn upload_to(
    client: &reqwest::Client,
    server: &Server,
    function: &str,
    name: &str,
    bytes: Vec<u8>,
) -> (u16, Json) {
    let response = client
        .post(server.url(&format!("/api/v1/file_server/{function}")))
        .multipart(form(name, bytes))
        .send()
        .await
        .expect("upload");
    let status = response.status().as_u16();
    (status, response.json().await.expect("envelope"))
}

#[tokio::test]
async fn a_jedi_log_update_is_decompressed_and_appended() {
    use std::io::Write;
    let stack = Stack::start(Backend::Sqlite, &[], &[]).await;
    let client = api_client();
    let zlib = |text: &[u8]| {
        let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(text).expect("zlib");
        e.finish().expect("zlib")
    };
    for part in [&b"line one\n"[..], &b"line two\n"[..]] {
        let (status, reply) = upload_to(
            &client,
            &stack.server,
            "update_jedi_log",
            "task.log",
            zlib(part),
        )
        .await;
        assert_eq!((status, &reply["success"]), (200, &json!(true)), "{reply}");
    }
    let log = std::fs::read_to_string(stack.site.dir.path().join("cache/task.log")).expect("log");
    assert_eq!(log, "line one\nline two\n");
    let (_, plain) = upload_to(
        &client,
        &stack.server,
        "update_jedi_log",
        "task.log",
        b"not zlib".to_vec(),
    )
    .await;
    assert!(
        plain["message"]
            .as_str()
            .unwrap_or_default()
            .contains("not zlib"),
        "{plain}"
    );
    let (_, path) = upload_to(
        &client,
        &stack.server,
        "update_jedi_log",
        "../task.log",
        zlib(b"x"),
    )
    .await;
    assert!(
        path["message"]
            .as_str()
            .unwrap_or_default()
            .contains("file name"),
        "{path}"
    );
}

/// A slow uploader costs a connection and an upload turn for the body's time, no more: it is
/// answered 408 when its time is up, its partial file is gone, and uploads go on.
#[tokio::test]
async fn a_stalled_upload_is_dropped_with_408_and_leaves_nothing() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let stack = Stack::start(Backend::Sqlite, &[], &[("PANDA_BODY_READ_TIMEOUT", "2")]).await;
    let address: std::net::SocketAddr = stack
        .server
        .base_url
        .trim_start_matches("http://")
        .parse()
        .expect("address");
    let mut stream = tokio::net::TcpStream::connect(address)
        .await
        .expect("connect");
    let start =
        "--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"jobO.slow.tar.gz\"\r\n\
                 Content-Type: application/octet-stream\r\n\r\nfirst bytes";
    let head = format!(
        "POST /api/v1/file_server/upload_cache_file HTTP/1.1\r\nHost: x\r\n\
         Content-Type: multipart/form-data; boundary=b\r\nContent-Length: 1000000\r\n\r\n{start}"
    );
    stream.write_all(head.as_bytes()).await.expect("write");
    let started = std::time::Instant::now();
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    while started.elapsed() < std::time::Duration::from_secs(15) {
        match tokio::time::timeout(std::time::Duration::from_secs(15), stream.read(&mut buf)).await
        {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(n)) => {
                answer.extend_from_slice(&buf[..n]);
                if answer.windows(4).any(|w| w == b"\r\n\r\n") && answer.ends_with(b"}") {
                    break;
                }
            }
        }
    }
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("not received in time"), "{answer}");
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    assert!(
        cache_entries(&stack.site).is_empty(),
        "{:?}",
        cache_entries(&stack.site)
    );
    let (status, stored) = upload(
        &api_client(),
        &stack.server,
        "jobO.after.tar.gz",
        gzip(b"x"),
    )
    .await;
    assert_eq!(
        (status, &stored["success"]),
        (200, &json!(true)),
        "{stored}"
    );
}
