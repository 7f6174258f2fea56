//! The store conformance suite: every test runs against each backend under test (SQLite
//! always, PostgreSQL when `PANDA_TEST_DATABASE_URL` is set), through the same interface.

use std::collections::HashSet;

use chrono::NaiveDate;
use panda_core::file::FILE_ATTRIBUTES;
use panda_core::job::JOB_ATTRIBUTES;
use panda_core::{
    AttrSet, ColumnType, FileAttr, FileSpec, JobAttr, JobSpec, JobStatus, JobTable, Value,
};
use panda_store::testing::{backends, TestDb};
use panda_store::{
    Backend, SchemaVersion, SealedCredential, Store, StoreError, StoreOptions, TxMode,
    EXTENSION_VERSION, SCHEMA_VERSION,
};

async fn migrated_store(backend: Backend) -> (TestDb, Store) {
    let db = TestDb::new(backend);
    let store = Store::open(&db.config, StoreOptions::default())
        .await
        .expect("open the test database");
    store.migrate().await.expect("migrate");
    (db, store)
}

/// A distinct, non-NULL value for every column type; char columns are filled to their
/// length because the database pads them.
fn sample_value(column_type: ColumnType, seed: usize) -> Value {
    let time = NaiveDate::from_ymd_opt(2026, 1, 1 + (seed % 28) as u32)
        .and_then(|d| d.and_hms_micro_opt(10, 20, 30, 123_456))
        .expect("valid date");
    match column_type {
        ColumnType::SmallInt => Value::Int(Some(seed as i64 % 300)),
        ColumnType::Int | ColumnType::BigInt => Value::Int(Some(1_000 + seed as i64)),
        ColumnType::Decimal(_, 0) => Value::Float(Some(seed as f64)),
        ColumnType::Decimal(..) => Value::Float(Some(seed as f64 + 0.25)),
        ColumnType::VarChar(n) => {
            Value::Text(Some(format!("v{seed}").chars().take(n as usize).collect()))
        }
        ColumnType::Char(n) => Value::Text(Some("x".repeat(n as usize))),
        ColumnType::Timestamp => Value::Time(Some(time)),
        ColumnType::Text => Value::Text(Some(format!("text {seed} with 'quotes' and ünïcode"))),
    }
}

/// A job with every attribute set, two files with every attribute set, parameters and metadata.
fn full_job(status: JobStatus) -> JobSpec {
    let mut job = JobSpec::new();
    for (i, attr) in JOB_ATTRIBUTES.iter().enumerate() {
        let name = JobAttr::by_name(attr.name).expect("known attribute");
        job.set(name, sample_value(attr.column_type, i));
    }
    job.set_str(JobAttr::jobStatus, status.as_str())
        .expect("status");
    // The store assigns the PandaID.
    job.set(JobAttr::PandaID, Value::Int(Some(0)));
    for f in 0..2 {
        let mut file = FileSpec::new();
        for (i, attr) in FILE_ATTRIBUTES.iter().enumerate() {
            let name = FileAttr::by_name(attr.name).expect("known attribute");
            file.set(name, sample_value(attr.column_type, i + 10 * f));
        }
        job.files.push(file);
    }
    job
}

fn simple_job(site: &str) -> JobSpec {
    let mut job = JobSpec::new();
    job.set_str(JobAttr::computingSite, site).expect("site");
    job.set_str(JobAttr::prodSourceLabel, "managed")
        .expect("label");
    job.set_str(JobAttr::jobParameters, "--run 1")
        .expect("params");
    job
}

#[tokio::test]
async fn inserted_jobs_read_back_attribute_for_attribute() {
    for backend in backends() {
        let (_db, store) = migrated_store(backend).await;
        for status in [
            JobStatus::Defined,
            JobStatus::Activated,
            JobStatus::Finished,
        ] {
            let mut jobs = vec![full_job(status)];
            store.insert_jobs(&mut jobs).await.expect("insert");
            let stored = store
                .get_job(jobs[0].panda_id())
                .await
                .expect("read")
                .expect("job exists");
            assert_eq!(stored.files.len(), 2, "{backend:?}");
            for ((attr, want), got) in jobs[0].iter().zip(stored.values()) {
                assert_eq!(want, got, "{backend:?} {status}: attribute {}", attr.name);
            }
            for (want, got) in jobs[0].files.iter().zip(&stored.files) {
                for ((attr, w), g) in want.iter().zip(got.values()) {
                    assert_eq!(w, g, "{backend:?}: file attribute {}", attr.name);
                }
            }
            assert_eq!(stored, jobs[0], "{backend:?}");
        }
    }
}

#[tokio::test]
async fn unset_attributes_read_back_as_null_and_zero_attributes_as_zero() {
    for backend in backends() {
        let (_db, store) = migrated_store(backend).await;
        let mut jobs = vec![simple_job("SITE_A")];
        store.insert_jobs(&mut jobs).await.expect("insert");
        let stored = store
            .get_job(jobs[0].panda_id())
            .await
            .expect("read")
            .expect("exists");
        assert_eq!(stored.get(JobAttr::computingElement), &Value::Text(None));
        assert_eq!(stored.get_i64(JobAttr::currentPriority), Some(0));
        assert_eq!(stored.status(), Some(JobStatus::Defined));
        assert_eq!(stored.get_str(JobAttr::jobParameters), Some("--run 1"));
        assert!(stored.get(JobAttr::creationTime).as_time().is_some());
    }
}

#[tokio::test]
async fn a_job_moves_defined_to_active_to_archived_in_whole() {
    for backend in backends() {
        let (_db, store) = migrated_store(backend).await;
        let mut job = simple_job("SITE_A");
        job.files.push(FileSpec::new());
        let mut jobs = vec![job];
        store.insert_jobs(&mut jobs).await.expect("insert");
        let id = jobs[0].panda_id();
        assert_eq!(
            store.job_table(id).await.expect("where"),
            Some(JobTable::Defined)
        );

        store
            .modify_job(id, |job, _| {
                job.set_status(JobStatus::Activated, panda_core::time::now());
                Ok(())
            })
            .await
            .expect("activate");
        assert_eq!(
            store.job_table(id).await.expect("where"),
            Some(JobTable::Active)
        );

        // A change within the table (the heartbeat path, which logs in the same statement).
        store
            .change_job_row(id, &[], |job, _| {
                job.set_status(JobStatus::Running, panda_core::time::now());
                Ok(panda_store::Decision::Write(()))
            })
            .await
            .expect("run");

        let (archived, ()) = store
            .modify_job(id, |job, _| {
                job.set_status(JobStatus::Finished, panda_core::time::now());
                Ok(())
            })
            .await
            .expect("finish");
        assert_eq!(
            store.job_table(id).await.expect("where"),
            Some(JobTable::Archived)
        );
        assert!(archived.get(JobAttr::endTime).as_time().is_some());

        let stored = store.get_job(id).await.expect("read").expect("exists");
        assert_eq!(stored.status(), Some(JobStatus::Finished));
        assert_eq!(stored.files.len(), 1);
        assert_eq!(stored.get_str(JobAttr::jobParameters), Some("--run 1"));

        let mut tx = store.begin(TxMode::Read).await.expect("tx");
        let log = tx
            .fetch(
                "SELECT jobstatus FROM jobs_statuslog WHERE pandaid = $1 ORDER BY modiftime_extended",
                &[Value::Int(Some(id))],
                &[ColumnType::Text],
            )
            .await
            .expect("status log");
        let statuses: Vec<_> = log.iter().map(|r| r[0].render()).collect();
        assert_eq!(
            statuses,
            ["defined", "activated", "running", "finished"],
            "{backend:?}"
        );
        let stamped = tx
            .fetch(
                "SELECT modificationtime FROM jobparamstable WHERE pandaid = $1",
                &[Value::Int(Some(id))],
                &[ColumnType::Timestamp],
            )
            .await
            .expect("params row");
        assert_eq!(
            stamped[0][0],
            *archived.get(JobAttr::modificationTime),
            "{backend:?}"
        );
    }
}

#[tokio::test]
async fn changing_a_missing_job_reports_it_missing() {
    for backend in backends() {
        let (_db, store) = migrated_store(backend).await;
        let result = store.modify_job(424242, |_, _| Ok(())).await;
        assert!(
            matches!(result, Err(StoreError::JobNotFound(424242))),
            "{backend:?}"
        );
        assert!(store.get_job(424242).await.expect("read").is_none());
    }
}

#[tokio::test]
async fn a_claimed_job_comes_with_its_files_and_parameters_and_the_recent_sent_count() {
    for backend in backends() {
        let (_db, store) = migrated_store(backend).await;
        // Two managed jobs of one queue, and a user job there that a production count skips.
        let mut jobs: Vec<JobSpec> = ["managed", "managed", "user"]
            .iter()
            .map(|label| {
                let mut job = full_job(JobStatus::Activated);
                job.set_str(JobAttr::prodSourceLabel, label).expect("label");
                job
            })
            .collect();
        store.insert_jobs(&mut jobs).await.expect("insert");
        let inserted = &jobs[0];
        let site = inserted.get_str(JobAttr::computingSite).expect("site");
        let request = |labels: &[&str], count_recently_sent: bool| panda_store::ClaimRequest {
            site: site.into(),
            labels: panda_store::LabelFilter::AnyOf(labels.iter().map(|l| l.to_string()).collect()),
            memory: None,
            disk: None,
            remaining_time: None,
            background: false,
            resource_type: None,
            prod_user_name: None,
            task_id: None,
            limit: 1,
            node: "node-1".into(),
            computing_element: None,
            scheduler_id: None,
            count_recently_sent,
        };
        let claimed = store
            .claim_jobs(&request(&["managed"], true))
            .await
            .expect("claim");
        assert_eq!(claimed.jobs.len(), 1, "{backend:?}");
        assert_eq!(
            claimed.recently_sent, 1,
            "{backend:?}: the claimed job counts"
        );
        let job = &claimed.jobs[0];
        assert_eq!(job.panda_id(), inserted.panda_id(), "{backend:?}");
        assert_eq!(job.status(), Some(JobStatus::Sent), "{backend:?}");
        assert_eq!(job.files, inserted.files, "{backend:?}: files");
        assert_eq!(
            job.get(JobAttr::jobParameters),
            inserted.get(JobAttr::jobParameters),
            "{backend:?}: parameters"
        );
        // The job description never carries the metadata, so the claim does not read it.
        assert_eq!(job.get_str(JobAttr::metadata), None, "{backend:?}");

        // The user job is claimed without a count; the second managed one sees both sent.
        let user = store
            .claim_jobs(&request(&["user"], false))
            .await
            .expect("user claim");
        assert_eq!((user.jobs.len(), user.recently_sent), (1, 0), "{backend:?}");
        let second = store
            .claim_jobs(&request(&["managed"], true))
            .await
            .expect("claim 2");
        assert_eq!(second.jobs.len(), 1, "{backend:?}");
        assert_eq!(
            second.recently_sent, 2,
            "{backend:?}: user jobs are not counted"
        );

        let again = store
            .claim_jobs(&request(&["managed"], true))
            .await
            .expect("claim again");
        assert!(
            again.jobs.is_empty(),
            "{backend:?}: a job was handed out twice"
        );
        assert_eq!(
            again.recently_sent, 0,
            "{backend:?}: nothing claimed, nothing counted"
        );
    }
}

#[tokio::test]
async fn concurrent_changes_to_a_job_row_lose_no_update() {
    // Heartbeats change a job without holding its row lock on PostgreSQL; a change that lost
    // the race must be redone on the row as the other writer left it.
    for backend in backends() {
        let (_db, store) = migrated_store(backend).await;
        let mut job = simple_job("SITE_A");
        job.set_str(JobAttr::jobStatus, "running").expect("status");
        job.set(JobAttr::nEvents, Value::Int(Some(0)));
        let mut jobs = vec![job];
        store.insert_jobs(&mut jobs).await.expect("insert");
        let id = jobs[0].panda_id();
        let writers = 12;
        let mut tasks = Vec::new();
        for _ in 0..writers {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                for _ in 0..3 {
                    store
                        .change_job_row(id, &[JobAttr::nEvents], |job, _| {
                            let n = job.get_i64(JobAttr::nEvents).unwrap_or(0);
                            job.set(JobAttr::nEvents, Value::Int(Some(n + 1)));
                            Ok(panda_store::Decision::Write(()))
                        })
                        .await
                        .expect("change");
                }
            }));
        }
        for task in tasks {
            task.await.expect("writer");
        }
        let stored = store.get_job(id).await.expect("read").expect("exists");
        assert_eq!(
            stored.get_i64(JobAttr::nEvents),
            Some(writers * 3),
            "{backend:?}: an update was lost"
        );
    }
}

#[tokio::test]
async fn concurrent_inserts_never_share_a_panda_id() {
    for backend in backends() {
        let (_db, store) = migrated_store(backend).await;
        let mut tasks = Vec::new();
        for t in 0..8 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                let mut ids = Vec::new();
                for _ in 0..10 {
                    let mut jobs: Vec<JobSpec> =
                        (0..4).map(|_| simple_job(&format!("SITE_{t}"))).collect();
                    store.insert_jobs(&mut jobs).await.expect("insert");
                    ids.extend(jobs.iter().map(JobSpec::panda_id));
                    ids.extend(store.allocate_panda_ids(3).await.expect("allocate"));
                }
                ids
            }));
        }
        let mut all = Vec::new();
        for task in tasks {
            all.extend(task.await.expect("task"));
        }
        let unique: HashSet<_> = all.iter().collect();
        assert_eq!(all.len(), 8 * 10 * 7);
        assert_eq!(
            unique.len(),
            all.len(),
            "{backend:?}: a PandaID was handed out twice"
        );
    }
}

#[tokio::test]
async fn schema_check_on_fresh_migrated_older_and_newer_databases() {
    for backend in backends() {
        if backend == Backend::Postgres && panda_store::testing::upstream_template().is_some() {
            // A copy of upstream's database is at upstream's layout, not empty.
            eprintln!("note: the fresh-database check skipped on upstream's layout");
            continue;
        }
        let db = TestDb::new(backend);
        let store = Store::open(&db.config, StoreOptions::default())
            .await
            .expect("open");
        assert!(
            matches!(store.check_schema().await, Err(StoreError::SchemaMissing)),
            "{backend:?}"
        );

        let older = SchemaVersion::new(0, 1, 5);
        store
            .migrate_to(older)
            .await
            .expect("migrate to the older layout");
        let err = store.check_schema().await.expect_err("older is refused");
        let text = err.to_string();
        assert!(
            text.contains("0.1.5") && text.contains(&SCHEMA_VERSION.to_string()),
            "{text}"
        );

        let report = store.migrate().await.expect("migrate");
        assert_eq!(report.from, Some(older));
        assert_eq!(
            report.applied,
            vec![SchemaVersion::new(0, 1, 6), SchemaVersion::new(0, 1, 7)]
        );
        assert_eq!(
            report.extensions_applied,
            vec![
                SchemaVersion::new(0, 0, 1),
                SchemaVersion::new(0, 0, 2),
                SchemaVersion::new(0, 0, 3),
                EXTENSION_VERSION
            ]
        );
        assert_eq!(store.check_schema().await.expect("current"), SCHEMA_VERSION);
        assert!(
            store.migrate().await.expect("again").applied.is_empty(),
            "idempotent"
        );

        store
            .force_schema_version(SchemaVersion::new(0, 2, 0))
            .await
            .expect("fake newer");
        let err = store.check_schema().await.expect_err("newer is refused");
        assert!(matches!(err, StoreError::SchemaTooNew { .. }));
        assert!(
            err.to_string().contains("0.2.0")
                && err.to_string().contains(&SCHEMA_VERSION.to_string())
        );
        assert!(matches!(
            store.migrate().await,
            Err(StoreError::SchemaTooNew { .. })
        ));
    }
}

#[tokio::test]
async fn a_database_at_upstreams_version_without_our_own_steps_is_sent_to_migrate() {
    for backend in backends() {
        let db = TestDb::new(backend);
        let store = Store::open(&db.config, StoreOptions::default())
            .await
            .expect("open");
        store.migrate().await.expect("migrate");
        // As a database of an earlier release of ours: upstream's version, none of our steps.
        let mut tx = store.begin(TxMode::Write).await.expect("tx");
        tx.execute(
            "DELETE FROM pandadb_version WHERE component = 'panda-server-rs'",
            &[],
        )
        .await
        .expect("delete");
        tx.commit().await.expect("commit");
        let err = store.check_schema().await.expect_err("refused");
        assert!(matches!(err, StoreError::ExtensionsMissing { .. }), "{err}");
        assert!(err.to_string().contains("schema migrate"), "{err}");
        let report = store.migrate().await.expect("migrate again");
        assert!(report.applied.is_empty(), "{backend:?}");
        assert_eq!(
            report.extensions_applied,
            vec![
                SchemaVersion::new(0, 0, 1),
                SchemaVersion::new(0, 0, 2),
                SchemaVersion::new(0, 0, 3),
                EXTENSION_VERSION
            ]
        );
        assert!(store.check_schema().await.is_ok());
    }
}

#[tokio::test]
async fn user_secrets_change_under_a_row_lock_and_concurrent_changes_all_hold() {
    for backend in backends() {
        let (_db, store) = migrated_store(backend).await;
        assert_eq!(store.user_secrets("Anna").await.expect("read"), None);
        // A refused change leaves no row behind.
        let written = store
            .change_user_secrets("Anna", &mut |_| None)
            .await
            .expect("refused change");
        assert!(!written);
        assert_eq!(store.user_secrets("Anna").await.expect("read"), None);
        // Sixteen writers each add one name to the same document.
        let writers: Vec<_> = (0..16)
            .map(|i| {
                let store = store.clone();
                tokio::spawn(async move {
                    store
                        .change_user_secrets("Anna", &mut |stored| {
                            let mut doc: serde_json::Map<String, serde_json::Value> = stored
                                .and_then(|s| serde_json::from_str(s).ok())
                                .unwrap_or_default();
                            doc.insert(format!("k{i}"), serde_json::json!(i));
                            Some(serde_json::Value::Object(doc).to_string())
                        })
                        .await
                })
            })
            .collect();
        for writer in writers {
            assert!(writer.await.expect("task").expect("write"));
        }
        let doc: serde_json::Map<String, serde_json::Value> = serde_json::from_str(
            &store
                .user_secrets("Anna")
                .await
                .expect("read")
                .expect("a document"),
        )
        .expect("json");
        assert_eq!(doc.len(), 16, "{backend:?}: no change lost");
    }
}

#[tokio::test]
async fn sealed_credentials_are_stored_replaced_listed_and_removed() {
    for backend in backends() {
        let (_db, store) = migrated_store(backend).await;
        let at = |d| {
            NaiveDate::from_ymd_opt(2026, 1, d)
                .and_then(|d| d.and_hms_opt(0, 0, 0))
                .expect("date")
        };
        let proxy = SealedCredential {
            kind: "proxy".into(),
            name: "/DC=ch/CN=pilot".into(),
            label: "atlas".into(),
            sealed: "v1:abcd:AAAA".into(),
            key_id: "abcd".into(),
            created: at(1),
            expires: Some(at(20)),
        };
        store.put_sealed_credential(&proxy).await.expect("put");
        let newer = SealedCredential {
            sealed: "v1:abcd:BBBB".into(),
            created: at(2),
            ..proxy.clone()
        };
        store.put_sealed_credential(&newer).await.expect("replace");
        let token = SealedCredential {
            kind: "token_key".into(),
            name: "pilot_server".into(),
            label: "k1".into(),
            expires: None,
            created: at(3),
            ..proxy.clone()
        };
        store.put_sealed_credential(&token).await.expect("put");
        let found = store
            .sealed_credential("proxy", "/DC=ch/CN=pilot", "atlas")
            .await
            .expect("read");
        assert_eq!(found, Some(newer.clone()), "{backend:?}");
        assert_eq!(
            store
                .sealed_credential("proxy", "/DC=ch/CN=pilot", "")
                .await
                .expect("read"),
            None,
            "the label is part of the key"
        );
        let all = store.sealed_credentials(None, None).await.expect("list");
        assert_eq!(all, vec![token.clone(), newer.clone()], "newest first");
        let tokens = store
            .sealed_credentials(Some("token_key"), Some("pilot_server"))
            .await
            .expect("list");
        assert_eq!(tokens, vec![token]);
        assert!(store
            .remove_sealed_credential("proxy", "/DC=ch/CN=pilot", "atlas")
            .await
            .expect("remove"));
        assert!(!store
            .remove_sealed_credential("proxy", "/DC=ch/CN=pilot", "atlas")
            .await
            .expect("remove again"));
    }
}

#[tokio::test]
async fn user_permissions_are_gridpref_letters_of_users_not_banned() {
    for backend in backends() {
        let (_db, store) = migrated_store(backend).await;
        assert_eq!(store.user_permissions("Pat").await.expect("read"), None);
        store
            .set_user_permissions("Pat", Some("pk"))
            .await
            .expect("grant");
        assert_eq!(
            store
                .user_permissions("Pat")
                .await
                .expect("read")
                .as_deref(),
            Some("pk")
        );
        store
            .set_user_status("Pat", Some("disabled"))
            .await
            .expect("ban");
        assert_eq!(store.user_permissions("Pat").await.expect("read"), None);
        // What an operator changes is the stored letters, banned or not.
        assert_eq!(
            store.user_gridpref("Pat").await.expect("read").as_deref(),
            Some("pk")
        );
    }
}

#[tokio::test]
async fn concurrent_migrations_from_many_nodes_apply_once() {
    for backend in backends() {
        let db = TestDb::new(backend);
        let mut nodes = Vec::new();
        for _ in 0..4 {
            nodes.push(
                Store::open(&db.config, StoreOptions::default())
                    .await
                    .expect("open"),
            );
        }
        let runs: Vec<_> = nodes
            .iter()
            .map(|node| {
                let node = node.clone();
                tokio::spawn(async move { node.migrate().await })
            })
            .collect();
        let mut applied_runs = 0;
        for run in runs {
            let report = run
                .await
                .expect("task")
                .expect("migration succeeds on every node");
            if !report.applied.is_empty() {
                applied_runs += 1;
            }
        }
        assert_eq!(
            applied_runs, 1,
            "{backend:?}: exactly one node applies the steps"
        );
        assert!(nodes[0].check_schema().await.is_ok());
    }
}

/// Runs only when `PANDA_TEST_UPSTREAM_DATABASE_URL` names a database created by upstream's
/// own schema scripts (panda-database, `schema/postgres`, 0.1.6): the store must pass the
/// schema check there and store, read and move jobs in upstream's partitioned tables. The
/// jobs it creates are deleted again.
#[tokio::test]
async fn the_store_runs_on_a_database_made_by_upstreams_scripts() {
    let Some(url) = std::env::var("PANDA_TEST_UPSTREAM_DATABASE_URL")
        .ok()
        .filter(|u| !u.is_empty())
    else {
        eprintln!("note: upstream-schema check skipped (set PANDA_TEST_UPSTREAM_DATABASE_URL)");
        return;
    };
    let config = panda_store::testing::parse_postgres_url(&url).expect("a postgres:// URL");
    let store = Store::open(&config, StoreOptions::default())
        .await
        .expect("open");
    // Upstream's scripts make 0.1.6; our 0.1.7 step adds the (existing) task-processing
    // tables IF NOT EXISTS and records the version.
    store
        .migrate()
        .await
        .expect("migrate an upstream-made database");
    assert_eq!(store.check_schema().await.expect("check"), SCHEMA_VERSION);
    let mut jobs = vec![full_job(JobStatus::Defined)];
    store
        .insert_jobs(&mut jobs)
        .await
        .expect("insert into upstream's tables");
    let id = jobs[0].panda_id();
    let stored = store.get_job(id).await.expect("read").expect("exists");
    // jobsdefined4 is narrower than jobsactive4 upstream (integer counts, shorter texts).
    assert_eq!(stored.files, jobs[0].files);
    for status in [
        JobStatus::Activated,
        JobStatus::Running,
        JobStatus::Finished,
    ] {
        store
            .modify_job(id, |job, _| {
                job.set_status(status, panda_core::time::now());
                Ok(())
            })
            .await
            .expect("move");
    }
    assert_eq!(
        store.job_table(id).await.expect("where"),
        Some(JobTable::Archived)
    );
    let archived = store.get_job(id).await.expect("read").expect("exists");
    assert_eq!(archived.status(), Some(JobStatus::Finished));
    assert_eq!(archived.files.len(), 2);
    let mut tx = store.begin(TxMode::Write).await.expect("tx");
    for table in [
        "jobsarchived4",
        "filestable4",
        "jobparamstable",
        "metatable",
        "jobs_statuslog",
    ] {
        tx.execute(
            &format!("DELETE FROM {table} WHERE pandaid = $1"),
            &[Value::Int(Some(id))],
        )
        .await
        .expect("clean up");
    }
    tx.commit().await.expect("commit");
}

#[tokio::test]
async fn a_connection_given_back_mid_transaction_or_mid_statement_is_not_reused_as_it_was() {
    for backend in backends() {
        let db = TestDb::new(backend);
        // One connection, so that every transaction below gets the one given back before.
        let mut config = db.config.clone();
        config.pool_size = 1;
        let store = Store::open(&config, StoreOptions::default())
            .await
            .expect("open");
        store.migrate().await.expect("migrate");
        let count = || async {
            let mut tx = store.begin(TxMode::Read).await.expect("read");
            let rows = tx
                .fetch(
                    "SELECT pandaid FROM jobparamstable WHERE pandaid = 77",
                    &[],
                    &[ColumnType::BigInt],
                )
                .await
                .expect("count");
            tx.commit().await.expect("end");
            rows.len()
        };
        {
            let mut tx = store.begin(TxMode::Write).await.expect("write");
            tx.execute(
                "INSERT INTO jobparamstable (pandaid, jobparameters) VALUES (77, 'x')",
                &[],
            )
            .await
            .expect("insert");
            // Dropped without a commit.
        }
        assert_eq!(
            count().await,
            0,
            "{backend:?}: an uncommitted insert was kept"
        );
        if backend == Backend::Postgres {
            // A request that gives up during a statement: the connection is replaced.
            let mut tx = store.begin(TxMode::Read).await.expect("read");
            let slow = tx.fetch("SELECT pg_sleep(5)", &[], &[]);
            assert!(
                tokio::time::timeout(std::time::Duration::from_millis(200), slow)
                    .await
                    .is_err()
            );
            drop(tx);
            let started = std::time::Instant::now();
            assert_eq!(count().await, 0);
            assert!(
                started.elapsed() < std::time::Duration::from_secs(3),
                "waited for the abandoned statement"
            );
        }
        let mut jobs = vec![simple_job("SITE_A")];
        store
            .insert_jobs(&mut jobs)
            .await
            .expect("the store still works");
    }
}

/// A node that hangs or loses its network in the middle of a transaction must not keep its
/// row locks from the other nodes: PostgreSQL ends a transaction left idle too long, and the
/// hung node's own commit fails (so its client sends the request again).
#[tokio::test]
async fn a_transaction_left_idle_releases_its_locks() {
    if !backends().contains(&Backend::Postgres) {
        return;
    }
    let (db, other) = migrated_store(Backend::Postgres).await;
    let mut config = db.config.clone();
    config.pool_size = 1;
    let hung = Store::open(&config, StoreOptions::default())
        .await
        .expect("open a second pool");
    let mut setup = other.begin(TxMode::Write).await.expect("write");
    setup
        .execute(
            "CREATE TABLE idle_lock_probe (id INTEGER PRIMARY KEY, n INTEGER)",
            &[],
        )
        .await
        .expect("create");
    setup
        .execute("INSERT INTO idle_lock_probe VALUES (1, 0)", &[])
        .await
        .expect("insert");
    setup.commit().await.expect("commit");

    let mut stalled = hung.begin(TxMode::Write).await.expect("write");
    stalled
        .execute("UPDATE idle_lock_probe SET n = n + 1 WHERE id = 1", &[])
        .await
        .expect("lock the row");
    let limit = u64::from(panda_store::IDLE_IN_TRANSACTION_TIMEOUT_MS);
    tokio::time::sleep(std::time::Duration::from_millis(limit + 1000)).await;

    let update = async {
        let mut tx = other.begin(TxMode::Write).await?;
        tx.execute("UPDATE idle_lock_probe SET n = n + 10 WHERE id = 1", &[])
            .await?;
        tx.commit().await
    };
    tokio::time::timeout(std::time::Duration::from_secs(5), update)
        .await
        .expect("the row is still locked by the idle transaction")
        .expect("update");
    assert!(
        stalled.commit().await.is_err(),
        "the idle transaction was not ended"
    );
    let mut tx = other.begin(TxMode::Read).await.expect("read");
    let rows = tx
        .fetch(
            "SELECT n FROM idle_lock_probe WHERE id = 1",
            &[],
            &[ColumnType::Int],
        )
        .await
        .expect("read");
    assert_eq!(
        rows[0][0].as_i64(),
        Some(10),
        "the idle transaction's write was kept"
    );
}

#[tokio::test]
async fn a_connection_the_database_dropped_is_replaced() {
    if !backends().contains(&Backend::Postgres) {
        return;
    }
    let db = TestDb::new(Backend::Postgres);
    let mut config = db.config.clone();
    config.pool_size = 1;
    let store = Store::open(&config, StoreOptions::default())
        .await
        .expect("open");
    let other = Store::open(&db.config, StoreOptions::default())
        .await
        .expect("open a second pool");
    let backend_pid = || async {
        let mut tx = store.begin(TxMode::Read).await.expect("read");
        let rows = tx
            .fetch("SELECT pg_backend_pid()", &[], &[ColumnType::Int])
            .await;
        rows.map(|r| r[0][0].as_i64().expect("a pid"))
    };
    let first = backend_pid().await.expect("first connection");
    let mut tx = other.begin(TxMode::Read).await.expect("read");
    let terminated = tx
        .fetch(
            "SELECT CASE WHEN pg_terminate_backend(CAST($1 AS INTEGER), 5000) THEN 1 ELSE 0 END",
            &[Value::Int(Some(first))],
            &[ColumnType::Int],
        )
        .await
        .expect("terminate");
    assert_eq!(
        terminated[0][0].as_i64(),
        Some(1),
        "the backend was not terminated"
    );
    drop(tx);
    // The request that meets the dropped connection fails; the next gets a new one.
    let mut answers = Vec::new();
    for _ in 0..3 {
        answers.push(backend_pid().await.ok());
    }
    let recovered = answers.iter().flatten().next().copied();
    assert!(
        recovered.is_some_and(|pid| pid != first),
        "no new connection after the database dropped one: {answers:?}"
    );
    assert!(
        answers[1].is_some(),
        "more than one request failed: {answers:?}"
    );
}

/// A running event-service job (a consumer) of `task` and `jobset`.
fn running_es_job(task: i64, jobset: i64) -> JobSpec {
    let mut job = simple_job("ES_SITE");
    job.set_status(JobStatus::Running, panda_core::time::now());
    job.set(JobAttr::eventService, Value::Int(Some(1)));
    job.set(JobAttr::jediTaskID, Value::Int(Some(task)));
    job.set(JobAttr::jobsetID, Value::Int(Some(jobset)));
    job
}

/// Four consumers of one jobset taking ranges at once never get the same range, and all are
/// handed out; a report names the consumer in its range ID, so one consumer cannot change
/// another's range; a consumer's end settles its ranges as upstream does and is safe to
/// repeat.
#[tokio::test]
async fn consumers_of_a_jobset_never_share_a_range_and_settle_only_their_own() {
    use panda_core::event::{cut_ranges, EventStatus};
    use panda_store::{NewEventRanges, RangeReport};
    for backend in backends() {
        let (_db, store) = migrated_store(backend).await;
        let (task, jobset) = (77, 990_001);
        let mut jobs: Vec<JobSpec> = (0..4).map(|_| running_es_job(task, jobset)).collect();
        store.insert_jobs(&mut jobs).await.expect("insert");
        let added = store
            .insert_event_ranges(&[NewEventRanges {
                task_id: task,
                dataset_id: 5,
                file_id: 6,
                jobset_id: jobset,
                ranges: cut_ranges(0, 200, 1),
                attempts: 3,
            }])
            .await
            .expect("ranges");
        assert_eq!(added, 200);
        let mut takers = Vec::new();
        for job in &jobs {
            let (store, id) = (store.clone(), job.panda_id());
            takers.push(tokio::spawn(async move {
                let mut got = Vec::new();
                for _ in 0..100 {
                    let ranges = store.acquire_event_ranges(id, 7).await.expect("acquire");
                    if ranges.is_empty() {
                        break;
                    }
                    assert!(ranges.iter().all(|r| r.id.panda_id == id));
                    got.extend(ranges.into_iter().map(|r| r.id));
                }
                got
            }));
        }
        let mut taken = Vec::new();
        for taker in takers {
            taken.push(taker.await.expect("taker"));
        }
        let all: Vec<_> = taken.iter().flatten().map(|id| id.process_id).collect();
        let unique: HashSet<_> = all.iter().collect();
        assert_eq!((all.len(), unique.len()), (200, 200), "{backend:?}");

        // Consumer 0 reports its ranges finished, and one of consumer 1's under its own
        // PandaID: that one does not exist as consumer 0's and stays consumer 1's.
        let (mine, theirs) = (&taken[0], &taken[1]);
        let mut reports: Vec<RangeReport> = mine
            .iter()
            .map(|id| RangeReport {
                id: *id,
                status: EventStatus::Finished,
                error_code: None,
                error_diag: None,
                objstore_id: None,
                path_convention: None,
                zip: None,
            })
            .collect();
        if let Some(other) = theirs.first() {
            let mut forged = *other;
            forged.panda_id = jobs[0].panda_id();
            reports.push(RangeReport {
                id: forged,
                ..reports[0].clone()
            });
        }
        store
            .report_event_ranges(&reports, &[])
            .await
            .expect("report");
        let statuses = store
            .event_range_statuses(task, jobs[1].panda_id(), 1000)
            .await
            .expect("statuses");
        assert!(
            statuses.iter().all(|s| s.status == Some(EventStatus::Sent)),
            "{backend:?}: another consumer's range changed"
        );
        let end = store
            .end_event_consumer(task, jobs[0].panda_id(), jobset)
            .await
            .expect("end");
        assert_eq!(end.done_by_consumer, mine.len() as i64);
        let again = store
            .end_event_consumer(task, jobs[0].panda_id(), jobset)
            .await
            .expect("again");
        assert_eq!((again.done_by_consumer, again.done), (0, end.done));
        // Consumer 1 ends without reporting: its ranges go back with one attempt fewer.
        let end = store
            .end_event_consumer(task, jobs[1].panda_id(), jobset)
            .await
            .expect("end");
        assert_eq!(end.ready, theirs.len() as i64, "{backend:?}");
        let back = store
            .acquire_event_ranges(jobs[2].panda_id(), 1000)
            .await
            .expect("acquire");
        assert_eq!(back.len(), theirs.len());
        assert!(back.iter().all(|r| r.id.attempt_nr == 2), "{backend:?}");
    }
}

/// Many consumers taking and reporting at once (on PostgreSQL grouped into shared statements,
/// and with group commit off): each gets ranges of its own jobset only, each report gets its
/// own answers and commands, each zip file is recorded once for its own consumer, and a
/// report the database rejects (a zip file name longer than its column) fails alone.
#[tokio::test]
async fn consumers_taking_and_reporting_at_once_each_get_their_own_answer() {
    use panda_core::event::{cut_ranges, EventStatus};
    use panda_store::{NewEventRanges, RangeAnswer, RangeReport, ZipFile};
    const CONSUMERS: i64 = 24;
    for backend in backends() {
        for group_commit in [true, false] {
            if backend == Backend::Sqlite && !group_commit {
                continue; // SQLite has no group commit to turn off
            }
            let db = TestDb::new(backend);
            let options = StoreOptions {
                group_commit,
                ..StoreOptions::default()
            };
            let store = Store::open(&db.config, options).await.expect("open");
            store.migrate().await.expect("migrate");
            let task = 79;
            let mut jobs: Vec<JobSpec> = (0..CONSUMERS)
                .map(|i| running_es_job(task, 995_000 + i))
                .collect();
            store.insert_jobs(&mut jobs).await.expect("insert");
            let files: Vec<NewEventRanges> = (0..CONSUMERS)
                .map(|i| NewEventRanges {
                    task_id: task,
                    dataset_id: 5,
                    file_id: 100 + i,
                    jobset_id: 995_000 + i,
                    ranges: cut_ranges(0, 20, 1),
                    attempts: 3,
                })
                .collect();
            store.insert_event_ranges(&files).await.expect("ranges");
            // The first consumer's zip file name does not fit PostgreSQL's column (4,000).
            let poisoned = jobs[0].panda_id();
            let mut runs = Vec::new();
            let consumers = jobs.iter().map(|j| (j.panda_id(), true));
            let strangers = (0..4).map(|i| (999_999_900 + i, false));
            for (panda_id, active) in consumers.chain(strangers) {
                let store = store.clone();
                runs.push(tokio::spawn(async move {
                    let taken = store.acquire_event_ranges(panda_id, 8).await;
                    let taken = taken.expect("take");
                    let ids: Vec<_> = match active {
                        true => taken.iter().map(|r| r.id).collect(),
                        false => {
                            assert!(taken.is_empty(), "a stranger was given ranges");
                            let forged = panda_core::event::EventRangeId {
                                task_id: task,
                                panda_id,
                                file_id: 100,
                                process_id: 1,
                                attempt_nr: 3,
                            };
                            vec![forged]
                        }
                    };
                    let zip = ZipFile {
                        lfn: match panda_id == poisoned {
                            true => "z".repeat(5_000),
                            false => format!("EventService_premerge_{panda_id}.tar"),
                        },
                        guid: format!("00000000-0000-4000-8000-{panda_id:012}"),
                        objstore_id: 1318,
                        ..ZipFile::default()
                    };
                    let reports: Vec<RangeReport> = ids
                        .iter()
                        .map(|id| RangeReport {
                            id: *id,
                            status: EventStatus::Finished,
                            error_code: None,
                            error_diag: None,
                            objstore_id: None,
                            path_convention: None,
                            zip: Some(0),
                        })
                        .collect();
                    let outcome = store.report_event_ranges(&reports, &[zip]).await;
                    (panda_id, active, taken, outcome)
                }));
            }
            let mut handed_out = HashSet::new();
            for run in runs {
                let (panda_id, active, taken, outcome) = run.await.expect("consumer");
                let label = format!("{backend:?}, group commit {group_commit}, job {panda_id}");
                if !active {
                    let outcome = outcome.expect("a stranger's report is answered");
                    assert_eq!(outcome.answers, vec![RangeAnswer::Refused], "{label}");
                    assert_eq!(
                        outcome.commands,
                        vec![(panda_id, "tobekilled".to_string())],
                        "{label}"
                    );
                    continue;
                }
                assert_eq!(taken.len(), 8, "{label}");
                let index = jobs.iter().position(|j| j.panda_id() == panda_id);
                let file = 100 + index.expect("a consumer") as i64;
                for range in &taken {
                    assert_eq!((range.id.panda_id, range.id.file_id), (panda_id, file));
                    assert!(handed_out.insert((file, range.id.process_id)), "{label}");
                }
                let statuses = store
                    .event_range_statuses(task, panda_id, 100)
                    .await
                    .expect("statuses");
                if backend == Backend::Postgres && panda_id == poisoned {
                    assert!(outcome.is_err(), "{label}: the rejected report failed");
                    assert!(
                        statuses.iter().all(|s| s.status == Some(EventStatus::Sent)),
                        "{label}"
                    );
                    continue;
                }
                let outcome = outcome.expect("report");
                assert_eq!(outcome.answers, vec![RangeAnswer::Accepted; 8], "{label}");
                assert_eq!(
                    outcome.commands,
                    vec![(panda_id, "NULL".to_string())],
                    "{label}"
                );
                assert_eq!(statuses.len(), 8, "{label}");
                assert!(
                    statuses
                        .iter()
                        .all(|s| s.status == Some(EventStatus::Finished)),
                    "{label}"
                );
                let mut tx = store.begin(TxMode::Read).await.expect("tx");
                let zips = tx
                    .fetch(
                        "SELECT f.lfn, COUNT(e.pandaid) FROM filestable4 f \
                         LEFT JOIN jedi_events e ON e.ziprow_id = f.row_id \
                         WHERE f.pandaid = $1 AND f.type = 'zipoutput' GROUP BY f.lfn",
                        &[Value::Int(Some(panda_id))],
                        &[ColumnType::Text, ColumnType::BigInt],
                    )
                    .await
                    .expect("zip files");
                tx.commit().await.expect("commit");
                let name = match panda_id == poisoned {
                    true => "z".repeat(5_000), // SQLite does not enforce the length
                    false => format!("EventService_premerge_{panda_id}.tar"),
                };
                assert_eq!(
                    zips,
                    vec![vec![Value::Text(Some(name)), Value::Int(Some(8))]],
                    "{label}"
                );
            }
            let stats = store.group_commit_stats();
            if backend == Backend::Postgres && group_commit {
                for kind in &stats {
                    assert!(kind.requests > kind.batches, "{kind:?}: no batch formed");
                }
                assert!(stats.iter().any(|k| k.split > 0), "{stats:?}");
            } else {
                assert!(stats.is_empty(), "{stats:?}");
            }
        }
    }
}

/// A report of more ranges than one statement takes is applied whole, its zip file recorded
/// once; the same report sent again changes nothing and adds no file.
#[tokio::test]
async fn a_large_report_is_applied_whole_and_a_repeat_adds_nothing() {
    use panda_core::event::{cut_ranges, EventStatus};
    use panda_store::{NewEventRanges, RangeReport, ZipFile};
    for backend in backends() {
        let (_db, store) = migrated_store(backend).await;
        let (task, jobset) = (78, 990_002);
        let mut jobs = vec![running_es_job(task, jobset)];
        store.insert_jobs(&mut jobs).await.expect("insert");
        let consumer = jobs[0].panda_id();
        store
            .insert_event_ranges(&[NewEventRanges {
                task_id: task,
                dataset_id: 5,
                file_id: 6,
                jobset_id: jobset,
                ranges: cut_ranges(0, 2_500, 1),
                attempts: 3,
            }])
            .await
            .expect("ranges");
        let taken = store
            .acquire_event_ranges(consumer, 2_500)
            .await
            .expect("acquire");
        assert_eq!(taken.len(), 2_500);
        let zip = ZipFile {
            lfn: "EventService_premerge_big.tar".into(),
            guid: "00000000-0000-4000-8000-000000000001".into(),
            objstore_id: 1318,
            fsize: Some(1),
            adler32: Some("0a0b0c0d".into()),
            num_events: Some(2_500),
            path_convention: Some(1000),
        };
        let reports: Vec<RangeReport> = taken
            .iter()
            .map(|r| RangeReport {
                id: r.id,
                status: EventStatus::Finished,
                error_code: None,
                error_diag: None,
                objstore_id: None,
                path_convention: None,
                zip: Some(0),
            })
            .collect();
        for _ in 0..2 {
            let outcome = store
                .report_event_ranges(&reports, std::slice::from_ref(&zip))
                .await
                .expect("report");
            assert_eq!(outcome.answers.len(), 2_500);
        }
        let statuses = store
            .event_range_statuses(task, consumer, 10_000)
            .await
            .expect("statuses");
        assert!(
            statuses
                .iter()
                .all(|s| s.status == Some(EventStatus::Finished)),
            "{backend:?}"
        );
        let mut tx = store.begin(TxMode::Read).await.expect("tx");
        let counts = tx
            .fetch(
                "SELECT COUNT(*), COUNT(DISTINCT ziprow_id) FROM jedi_events WHERE pandaid = $1",
                &[Value::Int(Some(consumer))],
                &[ColumnType::BigInt, ColumnType::BigInt],
            )
            .await
            .expect("count");
        let files = tx
            .fetch(
                "SELECT COUNT(*) FROM filestable4 WHERE pandaid = $1 AND type = 'zipoutput'",
                &[Value::Int(Some(consumer))],
                &[ColumnType::BigInt],
            )
            .await
            .expect("files");
        tx.commit().await.expect("commit");
        assert_eq!(counts[0][0].as_i64(), Some(2_500));
        assert_eq!(
            counts[0][1].as_i64(),
            Some(1),
            "{backend:?}: one zip row for all"
        );
        assert_eq!(
            files[0][0].as_i64(),
            Some(1),
            "{backend:?}: the repeat added a file"
        );
    }
}
