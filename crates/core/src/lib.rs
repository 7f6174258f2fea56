//! The PanDA domain model, free of I/O.
//!
//! A job (`JobSpec`) and a file (`FileSpec`) are rows of fixed attribute tables that mirror
//! upstream's Python classes one to one: same attribute names, same order, same column types.
//! Keeping them table-driven lets the store, the wire encoders and the tests iterate over the
//! attributes instead of repeating 126 names in each place.

mod attrs;
pub mod event;
pub mod file;
pub mod identity;
pub mod jedi;
pub mod job;
pub mod queue;
pub mod record;
pub mod split_rule;
pub mod status;
pub mod task;
pub mod time;
pub mod value;

pub use file::{FileAttr, FileSpec};
pub use jedi::{DatasetAttr, DatasetSpec, TaskFileAttr, TaskFileSpec};
pub use job::{JobAttr, JobSpec};
pub use queue::{QueueSpec, QueueStatus, QueueType};
pub use record::{AttrSet, Record};
pub use status::{JobStatus, JobTable};
pub use task::{task_status_is_final, TaskAttr, TaskSpec};
pub use value::{Attribute, ColumnType, Value, ValueError};
