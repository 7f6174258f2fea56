//! `statistics`: the wire side of the job counts (`panda_service::statistics` builds them):
//! which function is which view, and the arguments `time_window` and `type`.

use panda_service::statistics::{JobStatistics, DEFAULT_WINDOW_MINUTES, MAX_WINDOW_MINUTES};

use super::args::ArgsExt;
use super::{Call, Envelope};
use crate::AppState;

pub(crate) async fn route(state: &AppState, call: &Call, function: &str) -> Envelope {
    let view = match function {
        "job_stats_by_cloud" => match call.args.text("type").unwrap_or("production") {
            "production" => JobStatistics::ByCloud { analysis: false },
            "analysis" => JobStatistics::ByCloud { analysis: true },
            _ => {
                return Envelope::fail(
                    "Parameter \"type\" needs to be either \"production\" or \"analysis\"",
                )
            }
        },
        "production_job_stats_by_cloud_and_processing_type" => {
            JobStatistics::ProductionByCloudAndProcessingType
        }
        "active_job_stats_by_site" => JobStatistics::ActiveBySite,
        "active_job_detailed_stats_by_site" => JobStatistics::ActiveDetailedBySite,
        "job_stats_by_site_and_resource_type" => JobStatistics::BySiteAndResourceType,
        "job_stats_by_site_share_and_resource_type" => JobStatistics::BySiteShareAndResourceType,
        other => return Envelope::fail(format!("statistics/{other} is not implemented")),
    };
    let window =
        match view {
            JobStatistics::BySiteAndResourceType | JobStatistics::BySiteShareAndResourceType => {
                match call.args.int("time_window") {
                    None => DEFAULT_WINDOW_MINUTES,
                    Some(w) if (0..=MAX_WINDOW_MINUTES).contains(&w) => w,
                    Some(_) => return Envelope::fail(
                        "Parameter \"time_window\" needs to be a positive integer smaller than \
                         10080 min (7 days)",
                    ),
                }
            }
            _ => DEFAULT_WINDOW_MINUTES,
        };
    match state.service.job_statistics(view, window).await {
        Ok(data) => Envelope::ok(data),
        Err(e) => {
            tracing::error!(target: "panda::api", error = %e, "job statistics failed");
            Envelope::fail("Database failure getting the job statistics")
        }
    }
}
