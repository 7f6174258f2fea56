//! The data-management step between submission and dispatch (upstream's setupper plugins), and
//! its no-op default.
//!
//! A plugin decides, per job, whether its inputs are where it will run. A Rucio-backed plugin
//! would create dispatch datasets and subscriptions and answer `Assign` (wait for transfers);
//! the default moves no data and activates every job at once.

use panda_core::JobSpec;

/// What the data-management step decided for a new job.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SetupDecision {
    /// Inputs are in place: `defined` → `activated`.
    Activate,
    /// Inputs are being moved: `defined` → `assigned`, activated later.
    Assign,
    /// The job cannot run: `failed`, with this diagnostic.
    Fail(String),
}

/// What the data-management step decided for a finished job's outputs (upstream's adder
/// plugin: register them, subscribe them to their destination).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FinalizeDecision {
    Done,
    /// The outputs could not be handled: the job fails with this ddm diagnostic.
    Failed(String),
}

pub trait DataManagement: Send + Sync + 'static {
    fn setup(&self, job: &JobSpec) -> SetupDecision;

    /// Called by the Adder before a job is finished. The default moves nothing.
    fn finalize(&self, _job: &JobSpec) -> FinalizeDecision {
        FinalizeDecision::Done
    }
}

/// No data movement: every job with a queue is activated at once (upstream's dummy setupper).
#[derive(Clone, Copy, Debug, Default)]
pub struct NoDataMovement;

impl DataManagement for NoDataMovement {
    fn setup(&self, _job: &JobSpec) -> SetupDecision {
        SetupDecision::Activate
    }
}
