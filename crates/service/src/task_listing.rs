//! Which tasks a listing shows (`task/get_tasks_modified_since`,
//! `task/get_tasks_detailed_info_since`): the time window, and the caller's filters; and
//! which datasets a task's parameters name (`task/get_details`).
//!
//! A listing reaches back at most [`LISTING_WINDOW_DAYS`], whatever `since` asks. A filter is a
//! JSON object of task attribute names to strings: `NULL` and `NOT NULL` test for a value, a
//! string with regular-expression characters (upstream's test; the dot does not count) is
//! matched as a regular expression against the listed value, anything else must equal the
//! attribute, converted to its column's type. The caller's own tasks are listed unless a
//! `userName` filter names someone else's.

use chrono::{Duration, NaiveDateTime};
use panda_core::{AttrSet, TaskAttr, Value};
use panda_store::TaskCriterion;
use serde_json::{Map, Value as Json};

use crate::ServiceError;

/// How far back task listings reach, as upstream.
pub const LISTING_WINDOW_DAYS: i64 = 90;

fn bad(message: String) -> ServiceError {
    ServiceError::BadRequest(message)
}

/// `since` as upstream reads it (`YYYY-mm-dd HH:MM:SS`), no further back than `window_days`.
pub fn listing_since(since: Option<&str>, window_days: i64) -> Result<NaiveDateTime, ServiceError> {
    let floor = panda_core::time::now() - Duration::days(window_days);
    match since {
        None => Ok(floor),
        Some(text) => NaiveDateTime::parse_from_str(text.trim(), "%Y-%m-%d %H:%M:%S")
            .map(|t| t.max(floor))
            .map_err(|_| {
                bad(format!(
                    "since={text:?} is not a time of the form YYYY-mm-dd HH:MM:SS"
                ))
            }),
    }
}

/// Whether a filter value is a regular expression.
fn looks_like_regex(value: &str) -> bool {
    value.contains(['^', '$', '*', '+', '?', '\\', '|', '(', ')'])
}

/// A listing's filters: conditions for the database, and patterns for the listed values.
#[derive(Debug)]
pub struct TaskFilter {
    pub criteria: Vec<TaskCriterion>,
    /// (attribute name, pattern): the listed value of the attribute must match.
    pub patterns: Vec<(String, regex::Regex)>,
}

impl TaskFilter {
    /// The filters of `user`'s listing; a `userName` filter replaces the owner.
    pub fn parse(user: &str, filters: &Map<String, Json>) -> Result<TaskFilter, ServiceError> {
        let mut criteria = vec![TaskCriterion::Equals(
            TaskAttr::userName,
            Value::Text(Some(user.to_string())),
        )];
        let mut patterns = Vec::new();
        for (key, value) in filters {
            let Some(attr) = TaskAttr::by_name(key) else {
                return Err(bad(format!("filters: {key} is not a task attribute")));
            };
            let Some(text) = value.as_str() else {
                return Err(bad(format!("filters: the value of {key} must be a string")));
            };
            if looks_like_regex(text) {
                let pattern = regex::Regex::new(text)
                    .map_err(|e| bad(format!("filters: {key}: bad pattern: {e}")))?;
                patterns.push((key.clone(), pattern));
                continue;
            }
            let criterion = match text {
                "NULL" => TaskCriterion::IsNull(attr),
                "NOT NULL" => TaskCriterion::IsNotNull(attr),
                _ => {
                    let column_type = TaskAttr::attributes()[attr.index()].column_type;
                    let value = Value::parse(column_type, text)
                        .map_err(|e| bad(format!("filters: {key}: {e}")))?;
                    TaskCriterion::Equals(attr, value)
                }
            };
            if attr == TaskAttr::userName {
                criteria.remove(0);
            }
            criteria.push(criterion);
        }
        Ok(TaskFilter { criteria, patterns })
    }

    /// Whether a listed task (its values by attribute name) matches every pattern; a
    /// missing or null value matches none.
    pub fn matches(&self, listed: &Map<String, Json>) -> bool {
        self.patterns
            .iter()
            .all(|(key, pattern)| match listed.get(key) {
                Some(Json::String(s)) => pattern.is_match(s),
                Some(Json::Null) | None => false,
                Some(other) => pattern.is_match(&other.to_string()),
            })
    }
}

/// Which datasets of a task [`task_datasets`] names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DatasetRole {
    /// The `input` datasets of its job parameters.
    Input,
    /// The `output` datasets, and the log's.
    Output,
}

/// The datasets a task's parameters name in `role`, in order, without repeats in a row (as
/// upstream lists them in `get_details`).
pub fn task_datasets(parameters: &Map<String, Json>, role: DatasetRole) -> Vec<String> {
    let param_type = match role {
        DatasetRole::Input => "input",
        DatasetRole::Output => "output",
    };
    let mut names: Vec<String> = parameters
        .get("jobParameters")
        .and_then(Json::as_array)
        .into_iter()
        .flatten()
        .filter(|p| p.get("param_type").and_then(Json::as_str) == Some(param_type))
        .filter_map(|p| p.get("dataset").and_then(Json::as_str).map(str::to_string))
        .collect();
    if role == DatasetRole::Output {
        if let Some(log) = parameters
            .get("log")
            .and_then(|l| l.get("dataset"))
            .and_then(Json::as_str)
        {
            names.push(log.to_string());
        }
    }
    names.dedup();
    names
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn map(value: Json) -> Map<String, Json> {
        value.as_object().cloned().expect("object")
    }

    #[test]
    fn filters_become_conditions_and_patterns() {
        let filter = TaskFilter::parse(
            "Alice",
            &map(json!({"status": "running", "taskName": "user.alice.*", "site": "NOT NULL"})),
        )
        .expect("valid");
        assert_eq!(
            filter.criteria.len(),
            3,
            "owner, status, site: {:?}",
            filter.criteria
        );
        assert_eq!(filter.patterns.len(), 1);
        assert!(filter.matches(&map(json!({"taskName": "user.alice.test"}))));
        assert!(!filter.matches(&map(json!({"taskName": null}))));
        let other = TaskFilter::parse("Alice", &map(json!({"userName": "Bob"}))).expect("valid");
        assert!(matches!(
            &other.criteria[..],
            [TaskCriterion::Equals(TaskAttr::userName, Value::Text(Some(name)))] if name == "Bob"
        ));
    }

    #[test]
    fn datasets_come_from_the_job_parameters_and_the_log() {
        let params = map(json!({
            "jobParameters": [
                {"param_type": "input", "dataset": "data.in"},
                {"param_type": "output", "dataset": "user.out"},
                {"param_type": "output", "dataset": "user.out"},
                {"param_type": "constant", "value": "-x"}
            ],
            "log": {"dataset": "user.log"}
        }));
        assert_eq!(task_datasets(&params, DatasetRole::Input), ["data.in"]);
        assert_eq!(
            task_datasets(&params, DatasetRole::Output),
            ["user.out", "user.log"]
        );
        assert!(task_datasets(&Map::new(), DatasetRole::Input).is_empty());
    }

    #[test]
    fn bad_filters_are_refused_by_name() {
        let err = TaskFilter::parse("A", &map(json!({"colour": "red"}))).expect_err("unknown");
        assert!(
            err.to_string().contains("colour is not a task attribute"),
            "{err}"
        );
        let err = TaskFilter::parse("A", &map(json!({"status": 3}))).expect_err("not a string");
        assert!(err.to_string().contains("must be a string"), "{err}");
        let err = TaskFilter::parse("A", &map(json!({"taskName": "(("}))).expect_err("pattern");
        assert!(err.to_string().contains("bad pattern"), "{err}");
        let err = listing_since(Some("yesterday"), 90).expect_err("not a time");
        assert!(err.to_string().contains("since=\"yesterday\""), "{err}");
        let floor = listing_since(Some("2000-01-01 00:00:00"), 90).expect("old");
        assert!(
            floor
                > NaiveDateTime::parse_from_str("2000-01-01 00:00:00", "%Y-%m-%d %H:%M:%S")
                    .expect("t")
        );
    }
}
