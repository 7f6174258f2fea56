//! The web tier's router in process (`tower::ServiceExt::oneshot`), on a real SQLite store:
//! fast checks of the dispatch tables, the declared access and argument validation. The
//! black-box tests over HTTP (`binary.rs`, `api_v1.rs`, ...) stay the proof of the wire.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Request, StatusCode};
use panda_api::{AppState, IdentityPolicy, Limits, RequestStats, StaticDirs};
use panda_service::{JobService, ServiceSettings};
use panda_store::testing::TestDb;
use panda_store::{Backend, Store, StoreOptions};
use tower::ServiceExt;

struct Tier {
    router: axum::Router,
    _db: TestDb,
    _files: tempfile::TempDir,
}

/// A router on a fresh SQLite store; `local_mode` makes loopback callers the local operator.
async fn tier(local_mode: bool) -> Tier {
    let db = TestDb::new(Backend::Sqlite);
    let store = Store::open(&db.config, StoreOptions::default())
        .await
        .expect("open");
    store.migrate().await.expect("migrate");
    let files = tempfile::tempdir().expect("files");
    let state = AppState {
        service: JobService::new(store, ServiceSettings::default()),
        identity_policy: Arc::new(IdentityPolicy {
            trust_loopback: local_mode,
            oidc: None,
            x509: None,
        }),
        stats: Arc::new(RequestStats::new(8, None)),
        limits: Arc::new(Limits::default()),
        files: Arc::new(StaticDirs {
            cache: files.path().join("cache"),
            trf: files.path().join("trf"),
            auth: None,
        }),
        health: Arc::default(),
        monitor: Default::default(),
    };
    Tier {
        router: panda_api::router(state),
        _db: db,
        _files: files,
    }
}

/// Sends one request from loopback; the status and the body as text.
async fn send(tier: &Tier, request: Request<Body>) -> (StatusCode, String) {
    let mut request = request;
    let peer: SocketAddr = "127.0.0.1:40000".parse().expect("address");
    request.extensions_mut().insert(ConnectInfo(peer));
    let response = tier
        .router
        .clone()
        .oneshot(request)
        .await
        .expect("infallible");
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .expect("body");
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

fn form(uri: &str, body: &str) -> Request<Body> {
    Request::post(uri)
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(Body::from(body.to_string()))
        .expect("request")
}

fn json(uri: &str, body: serde_json::Value) -> Request<Body> {
    Request::post(uri)
        .header("Content-Type", "application/json")
        .header("Accept", "application/json")
        .body(Body::from(body.to_string()))
        .expect("request")
}

#[tokio::test]
async fn dispatcher_methods_refuse_a_caller_without_the_role_each_in_its_own_way() {
    let tier = tier(false).await;
    let (status, body) = send(
        &tier,
        form("/server/panda/updateJob", "jobId=1&state=running"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.starts_with("StatusCode=60"), "{body}");
    let (_, body) = send(
        &tier,
        form(
            "/server/panda/updateWorkerPilotStatus",
            "site=S&workerID=1&harvesterID=h&status=started",
        ),
    )
    .await;
    assert_eq!(body, "failed to retrieve DN");
    let (_, body) = send(
        &tier,
        form(
            "/server/panda/updateJobsInBulk",
            "jobList=%5B%7B%22jobId%22%3A1%2C%22state%22%3A%22running%22%7D%5D",
        ),
    )
    .await;
    assert!(body.contains("StatusCode=60"), "{body}");
    // getJob: the service decides from the request; a production job needs the role.
    let (_, body) = send(&tier, form("/server/panda/getJob", "siteName=ANY")).await;
    assert!(body.starts_with("StatusCode=60"), "{body}");
}

#[tokio::test]
async fn open_methods_answer_anyone_and_unknown_names_are_forbidden() {
    let tier = tier(false).await;
    let (status, body) = send(&tier, form("/server/panda/getStatus", "ids=1")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, "StatusCode=0&status=notfound&attemptNr=0");
    let (status, body) = send(&tier, form("/server/panda/isAlive", "")).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "alive=yes"));
    let (status, body) = send(&tier, form("/server/panda/runTask", "x=1")).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(body, "ERROR : method runTask is forbidden");
    let (status, _) = send(
        &tier,
        json("/api/v1/job/no_such_function", serde_json::json!({})),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn v1_arguments_are_checked_before_any_handler_runs() {
    let tier = tier(true).await;
    // A required argument missing, then of the wrong type, then unknown.
    let (_, body) = send(
        &tier,
        json("/api/v1/pilot/update_job", serde_json::json!({"job_id": 1})),
    )
    .await;
    let reply: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(reply["success"], false);
    assert!(
        reply["message"]
            .as_str()
            .is_some_and(|m| m.contains("job_status")),
        "{reply}"
    );
    let (_, body) = send(
        &tier,
        json(
            "/api/v1/pilot/update_job",
            serde_json::json!({"job_id": "one", "job_status": "running"}),
        ),
    )
    .await;
    let reply: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert!(
        reply["message"]
            .as_str()
            .is_some_and(|m| m.contains("job_id")),
        "{reply}"
    );
    // A report for a job that does not exist: the service answers tobekilled.
    let (_, body) = send(
        &tier,
        json(
            "/api/v1/pilot/update_job",
            serde_json::json!({"job_id": 7, "job_status": "running", "max_rss": 1.5}),
        ),
    )
    .await;
    let reply: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(reply["data"]["command"], "tobekilled", "{reply}");
    // A state no pilot reports is ignored, as upstream.
    let (_, body) = send(
        &tier,
        json(
            "/api/v1/pilot/update_job",
            serde_json::json!({"job_id": 7, "job_status": "dancing"}),
        ),
    )
    .await;
    let reply: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(reply["data"]["StatusCode"], 50, "{reply}");
    // Every declared statistics function has a handler: none answers "not implemented".
    for function in [
        "job_stats_by_cloud",
        "production_job_stats_by_cloud_and_processing_type",
        "active_job_stats_by_site",
        "active_job_detailed_stats_by_site",
        "job_stats_by_site_and_resource_type",
        "job_stats_by_site_share_and_resource_type",
    ] {
        let request = Request::get(format!("/api/v1/statistics/{function}"))
            .header("Accept", "application/json")
            .body(Body::empty())
            .expect("request");
        let (status, body) = send(&tier, request).await;
        let reply: serde_json::Value = serde_json::from_str(&body).expect("json");
        assert_eq!(
            (status, &reply["success"]),
            (StatusCode::OK, &serde_json::json!(true)),
            "{function}: {reply}"
        );
    }
}
