//! Job statuses and the table each one lives in.
//!
//! Upstream keeps a job in one of three tables by status: waiting-for-dispatch states in
//! `jobsdefined4`, dispatchable and running states in `jobsactive4`, final states in
//! `jobsarchived4`. A status change that crosses tables is a DELETE plus INSERT in one
//! transaction.

/// The three job tables.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum JobTable {
    Defined,
    Active,
    Archived,
}

impl JobTable {
    pub const ALL: [JobTable; 3] = [JobTable::Defined, JobTable::Active, JobTable::Archived];

    pub fn name(self) -> &'static str {
        match self {
            JobTable::Defined => "jobsdefined4",
            JobTable::Active => "jobsactive4",
            JobTable::Archived => "jobsarchived4",
        }
    }
}

macro_rules! statuses {
    ($( $variant:ident = $text:literal in $table:ident ),+ $(,)?) => {
        /// A job status, spelled on the wire and in the database as upstream spells it.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum JobStatus { $( $variant, )+ }

        impl JobStatus {
            pub const ALL: &'static [JobStatus] = &[ $( JobStatus::$variant, )+ ];

            pub fn as_str(self) -> &'static str {
                match self { $( JobStatus::$variant => $text, )+ }
            }

            /// The table a job with this status lives in.
            pub fn table(self) -> JobTable {
                match self { $( JobStatus::$variant => JobTable::$table, )+ }
            }

            pub fn parse(text: &str) -> Option<JobStatus> {
                match text { $( $text => Some(JobStatus::$variant), )+ _ => None }
            }
        }
    };
}

statuses! {
    Pending = "pending" in Defined,
    Defined = "defined" in Defined,
    Waiting = "waiting" in Defined,
    Assigned = "assigned" in Defined,
    Activated = "activated" in Active,
    Throttled = "throttled" in Active,
    Sent = "sent" in Active,
    Starting = "starting" in Active,
    Running = "running" in Active,
    Stagein = "stagein" in Active,
    Stageout = "stageout" in Active,
    Holding = "holding" in Active,
    Transferring = "transferring" in Active,
    Merging = "merging" in Active,
    Finished = "finished" in Archived,
    Failed = "failed" in Archived,
    Cancelled = "cancelled" in Archived,
    Closed = "closed" in Archived,
}

impl JobStatus {
    /// Final statuses: the job is archived and will not change again.
    pub fn is_final(self) -> bool {
        self.table() == JobTable::Archived
    }
}

impl std::fmt::Display for JobStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_status_round_trips_through_its_text() {
        for s in JobStatus::ALL {
            assert_eq!(JobStatus::parse(s.as_str()), Some(*s));
        }
        assert_eq!(JobStatus::parse("bogus"), None);
    }

    #[test]
    fn statuses_live_in_upstreams_tables() {
        assert_eq!(JobStatus::Defined.table().name(), "jobsdefined4");
        assert_eq!(JobStatus::Sent.table().name(), "jobsactive4");
        assert!(JobStatus::Cancelled.is_final());
    }
}
