//! `statistics`: the wire side of the job counts (`panda_service::statistics` builds them):
//! which function is which view, and the arguments `time_window` and `type`.

use panda_service::statistics::{JobStatistics, DEFAULT_WINDOW_MINUTES, MAX_WINDOW_MINUTES};

use super::args::ArgsExt;
use super::{Call, Envelope};
use crate::AppState;

/// One `/api/v1/statistics` function: the view its table entry names. `job_stats_by_cloud`
/// is declared as the production view; its `type` argument may ask for analysis instead.
pub(crate) async fn counts(state: &AppState, call: &Call, view: JobStatistics) -> Envelope {
    let view = match view {
        JobStatistics::ByCloud { .. } => match call.args.text("type").unwrap_or("production") {
            "production" => JobStatistics::ByCloud { analysis: false },
            "analysis" => JobStatistics::ByCloud { analysis: true },
            _ => {
                return Envelope::fail(
                    "Parameter \"type\" needs to be either \"production\" or \"analysis\"",
                )
            }
        },
        other => other,
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
