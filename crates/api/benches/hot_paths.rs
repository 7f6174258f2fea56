//! `cargo bench -p panda-api`: the pure hot code of the pilot and client paths, timed without
//! a server or a database. Each case runs in batches; the median time per operation over the
//! batches is printed (medians, because these machines are shared).

use std::hint::black_box;
use std::io::Write;
use std::time::{Duration, Instant};

use panda_api::hot;
use panda_core::{FileSpec, JobAttr, JobSpec};
use serde_json::json;

/// Median nanoseconds per call of `f` over `batches` batches sized to run ~20 ms each.
fn time<R>(name: &str, mut f: impl FnMut() -> R) {
    let start = Instant::now();
    let mut calibrate = 0u64;
    while start.elapsed() < Duration::from_millis(20) {
        black_box(f());
        calibrate += 1;
    }
    let per_batch = calibrate.max(1);
    let mut samples: Vec<f64> = (0..15)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..per_batch {
                black_box(f());
            }
            t.elapsed().as_nanos() as f64 / per_batch as f64
        })
        .collect();
    samples.sort_by(f64::total_cmp);
    let median = samples[samples.len() / 2];
    println!(
        "{name:<48} {:>12.1} µs/op  ({per_batch} ops per batch)",
        median / 1000.0
    );
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(data).expect("gzip");
    encoder.finish().expect("gzip")
}

/// An updateJob as pilot 3.11 sends it at the end of a job.
fn update_job_fields() -> serde_json::Value {
    json!({
        "jobId": "4000000001", "state": "finished", "timestamp": "2026-11-25T10:00:00+00:00",
        "siteName": "TEST_QUEUE", "node": "wn01.example.org", "attemptNr": 1,
        "schedulerID": "unknown", "pilotID": "unknown|PR|3.11.5.1", "startTime": 1795624967.7,
        "coreCount": 8, "cpuConsumptionTime": 1234, "cpuConsumptionUnit": "s+AMD EPYC 7452",
        "maxRSS": 2500000, "maxVMEM": 4000000, "avgRSS": 2000000, "totRCHAR": 123456789,
        "pilotTiming": "1|2|300|4|5|6", "transExitCode": 0, "pilotErrorCode": 0,
        "xml": json!({"out.root": {"guid": "a-b-c", "fsize": 12345, "adler32": "0a0b0c0d",
                                   "surl": "file:///se/out.root", "endpoint": "TEST_DISK"},
                      "job.log.tgz": {"guid": "d-e-f", "fsize": 999, "adler32": "01020304",
                                      "surl": "file:///se/job.log.tgz", "endpoint": "TEST_DISK"}})
            .to_string(),
        "metaData": json!({"exeErrorCode": 0, "files": {"output": []}}).to_string(),
    })
}

fn job() -> JobSpec {
    let mut job = JobSpec::new();
    for (attr, value) in [
        (JobAttr::PandaID, "4000000001"),
        (JobAttr::jobDefinitionID, "1"),
        (JobAttr::jobName, "user.tester.benchmark.job"),
        (JobAttr::prodSourceLabel, "managed"),
        (JobAttr::computingSite, "TEST_QUEUE"),
        (JobAttr::jobStatus, "activated"),
        (
            JobAttr::transformation,
            "http://localhost/jobO.runpayload.tar.gz",
        ),
        (
            JobAttr::jobParameters,
            "--input in.root --output out.root --events 1000",
        ),
        (JobAttr::currentPriority, "1000"),
        (JobAttr::creationTime, "2026-11-25 10:00:00"),
    ] {
        job.set_str(attr, value).expect("attr");
    }
    for (lfn, kind) in [
        ("in.root", "input"),
        ("out.root", "output"),
        ("job.log.tgz", "log"),
    ] {
        let mut file = FileSpec::new();
        file.set_str(panda_core::FileAttr::lfn, lfn).expect("lfn");
        file.set_str(panda_core::FileAttr::r#type, kind)
            .expect("type");
        file.set_str(panda_core::FileAttr::dataset, "user.tester.ds")
            .expect("dataset");
        file.set_str(panda_core::FileAttr::scope, "user.tester")
            .expect("scope");
        job.files.push(file);
    }
    job
}

/// 100 jobs in panda-client's positional submission format.
fn submission() -> String {
    let state = |n: usize| {
        let mut values = vec![json!("NULL"); 126];
        values[JobAttr::jobName as usize] = json!(format!("bench.{n}"));
        values[JobAttr::computingSite as usize] = json!("TEST_QUEUE");
        values[JobAttr::prodSourceLabel as usize] = json!("managed");
        values[JobAttr::jobParameters as usize] = json!("/bin/echo hello");
        let mut log = vec![json!("NULL"); 18];
        log[3] = json!(format!("bench.{n}.log.tgz"));
        log[4] = json!("log");
        log.push(serde_json::Value::Null);
        values.push(json!([log]));
        serde_json::Value::Array(values)
    };
    serde_json::Value::Array((0..100).map(state).collect()).to_string()
}

fn main() {
    // `cargo bench` passes `--bench`; a name narrows the run.
    let filter: Option<String> = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let wanted = |name: &str| filter.as_deref().is_none_or(|f| name.contains(f));
    let fields = update_job_fields();
    let gzipped = gzip(fields.to_string().as_bytes());
    let form = serde_urlencoded::to_string(
        fields
            .as_object()
            .expect("object")
            .iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    v.as_str().map(str::to_string).unwrap_or(v.to_string()),
                )
            })
            .collect::<Vec<_>>(),
    )
    .expect("form");
    let job = job();
    let jobs = submission();
    println!("{:<48} {:>12}", "case", "median");
    if wanted("decode updateJob gzip JSON") {
        time("decode updateJob gzip JSON (pilot 3.11)", || {
            hot::decode_legacy(&gzipped, "application/json").expect("decode")
        });
    }
    if wanted("decode updateJob form") {
        time("decode updateJob form (pilot 3.7, curl)", || {
            hot::decode_legacy(form.as_bytes(), "application/x-www-form-urlencoded")
                .expect("decode")
        });
    }
    if wanted("encode getJob urlencoded") {
        time("encode getJob urlencoded", || {
            hot::encode_get_job(&job, false)
        });
    }
    if wanted("encode getJob JSON") {
        time("encode getJob JSON", || hot::encode_get_job(&job, true));
    }
    if wanted("encode job description") {
        time("encode job/get_description dict", || {
            hot::encode_job_description(&job)
        });
    }
    if wanted("decode job/submit") {
        time("decode job/submit, 100 jobs", || {
            hot::decode_submission(&jobs).expect("decode")
        });
    }
}
