//! `job/generate_offline_execution_script` (upstream's `getScriptOfflineRunning`): a bash
//! script that runs a job again by hand, from its record: its inputs, its transformation and
//! its parameters, step by step. Open to anyone, as upstream: it shows what a job's pilot is
//! shown. Jobs archived more than `days` ago (30 by default, at most [`MAX_DAYS`]) are not
//! looked for.

use chrono::Duration;
use panda_core::{FileAttr, JobAttr, JobSpec, JobTable};

use crate::{JobService, ServiceError};

/// Furthest back an archived job is looked for.
pub const MAX_DAYS: i64 = 3650;

/// Whether a job is a user job: an analysis transformation or the `user` label.
fn is_user_job(job: &JobSpec) -> bool {
    let trf = job.get_str(JobAttr::transformation).unwrap_or("");
    [
        "runAthena",
        "runGen",
        "runcontainer",
        "runMerge",
        "buildJob",
        "buildGen",
    ]
    .iter()
    .any(|t| trf.contains(t))
        || job.get_str(JobAttr::prodSourceLabel) == Some("user")
}

/// A value as one bash word in single quotes.
fn quoted(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

/// The script, or why there is none.
pub fn offline_script(job: &JobSpec) -> Result<String, String> {
    let text = |attr| -> &str { job.get_str(attr).filter(|v| *v != "NULL").unwrap_or("") };
    let user = is_user_job(job);
    // Production jobs run several steps, one per line of these four; user jobs one.
    let split = |value: &str| -> Vec<String> {
        match user {
            true => vec![value.to_string()],
            false => value.split('\n').map(str::to_string).collect(),
        }
    };
    let (trfs, params) = (
        split(text(JobAttr::transformation)),
        split(text(JobAttr::jobParameters)),
    );
    let (releases, packages) = (
        split(text(JobAttr::AtlasRelease)),
        split(text(JobAttr::homepackage)),
    );
    if trfs.len() != params.len()
        || (!user && (releases.len() != trfs.len() || packages.len() != trfs.len()))
    {
        return Err(
            "ERROR: The number of releases or parameters or trfs is inconsistent with others"
                .into(),
        );
    }
    let id = job.panda_id();
    let mut out = String::new();
    out.push_str("#!/bin/bash\n");
    out.push_str(&format!(
        "# Runs PanDA job {id} ({}) again by hand, from its record on this server.\n",
        text(JobAttr::jobName)
    ));
    out.push_str(&format!(
        "# It ran at {} as attempt {} and is {}. Its inputs are fetched with rucio when it is\n\
         # installed, and must otherwise be present in the working directory.\n",
        text(JobAttr::computingSite),
        job.get_i64(JobAttr::attemptNr).unwrap_or(0),
        text(JobAttr::jobStatus)
    ));
    out.push_str(
        "#\n# usage: bash <this file> [--dry-run]   (--dry-run: print each command instead)\n",
    );
    out.push_str("set -eu\ndry_run=0\n[ \"${1:-}\" = --dry-run ] && dry_run=1\n");
    out.push_str("run() { if [ \"$dry_run\" = 1 ]; then echo \"+ $*\"; else eval \"$@\"; fi; }\n");
    out.push_str(&format!(
        "workdir=$(mktemp -d \"${{TMPDIR:-/tmp}}/panda-job-{id}.XXXXXX\")\ncd \"$workdir\"\necho \"INFO: working in $workdir\"\n"
    ));
    let inputs: Vec<String> = job
        .files
        .iter()
        .filter(|f| f.get_str(FileAttr::r#type) == Some("input"))
        .filter_map(|f| {
            let lfn = f.get_str(FileAttr::lfn)?;
            Some(
                match f
                    .get_str(FileAttr::scope)
                    .filter(|s| !s.is_empty() && *s != "NULL")
                {
                    Some(scope) => format!("{scope}:{lfn}"),
                    None => lfn.to_string(),
                },
            )
        })
        .collect();
    out.push_str("inputs=(\n");
    for did in &inputs {
        out.push_str(&format!("  {}\n", quoted(did)));
    }
    out.push_str(")\n");
    out.push_str(
        "for did in ${inputs[@]+\"${inputs[@]}\"}; do\n\
         \x20 file=${did#*:}\n\
         \x20 if [ -e \"$file\" ]; then continue; fi\n\
         \x20 if command -v rucio >/dev/null; then run rucio download --no-subdir \"$did\";\n\
         \x20 else echo \"WARNING: $file is not here and rucio is not installed\"; fi\n\
         done\n",
    );
    for (step, (trf, parameters)) in trfs.iter().zip(&params).enumerate() {
        out.push_str(&format!("# step {}", step + 1));
        if let (Some(release), Some(package)) = (releases.get(step), packages.get(step)) {
            if !release.is_empty() || !package.is_empty() {
                out.push_str(&format!(": release {release}, package {package}"));
            }
        }
        out.push('\n');
        let name = trf.rsplit('/').next().unwrap_or(trf);
        let command = if trf.starts_with("http://") || trf.starts_with("https://") {
            out.push_str(&format!(
                "run curl -fsSL -o {} {}\nrun chmod +x {}\n",
                quoted(name),
                quoted(trf),
                quoted(name)
            ));
            format!("./{name}")
        } else {
            trf.to_string()
        };
        if let Some(cores) = job.get_i64(JobAttr::coreCount).filter(|c| *c > 1) {
            out.push_str(&format!(
                "export ATHENA_PROC_NUMBER={cores} ATHENA_CORE_NUMBER={cores}\n"
            ));
        }
        // The parameters are the job's own command-line text, which the pilot hands to a
        // shell as it is.
        out.push_str(&format!(
            "run {} {}\n",
            quoted(&command),
            quoted(parameters)
        ));
    }
    Ok(out)
}

impl JobService {
    /// The offline script of a job; `Ok(Err(message))` when the job is not found (or was
    /// archived more than `days` ago) or its record cannot make one.
    pub async fn offline_script(
        &self,
        panda_id: i64,
        days: Option<i64>,
    ) -> Result<Result<String, String>, ServiceError> {
        if days.is_some_and(|d| !(1..=MAX_DAYS).contains(&d)) {
            return Err(ServiceError::BadRequest(format!(
                "days must be from 1 to {MAX_DAYS}"
            )));
        }
        let window = days.unwrap_or(30);
        let since = panda_core::time::now() - Duration::days(window);
        let job = self.stores.jobs.get_job(panda_id).await?.filter(|job| {
            job.status().map(|s| s.table()) != Some(JobTable::Archived)
                || job
                    .get(JobAttr::modificationTime)
                    .as_time()
                    .is_some_and(|t| t >= since)
        });
        let Some(job) = job else {
            let hint = match days {
                None => "for the last 30 days. You may add &days=N to the URL".to_string(),
                Some(d) => format!("for the last {d} days. You may change &days=N in the URL"),
            };
            return Ok(Err(format!(
                "ERROR: Cannot get PandaID={panda_id} in DB {hint}"
            )));
        };
        Ok(offline_script(&job))
    }
}
