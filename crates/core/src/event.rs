//! The event service's rules, free of I/O: the status codes of `jedi_events` rows, the
//! event-range ID and how a file's events are cut into ranges.
//!
//! An event-service job does not process a file as a whole: the file's events are cut into
//! ranges (rows of `jedi_events`), the pilot asks for a few ranges at a time and reports each
//! one. The codes and the range-ID format are upstream's, so rows written by either server
//! read the same.

use std::fmt;

/// The status of one event range (`jedi_events.status`), with upstream's codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventStatus {
    Ready,
    Sent,
    Running,
    Finished,
    Cancelled,
    Discarded,
    Done,
    Failed,
    Fatal,
    Merged,
    Corrupted,
    ReservedFail,
    ReservedGet,
}

impl EventStatus {
    pub const ALL: [EventStatus; 13] = [
        EventStatus::Ready,
        EventStatus::Sent,
        EventStatus::Running,
        EventStatus::Finished,
        EventStatus::Cancelled,
        EventStatus::Discarded,
        EventStatus::Done,
        EventStatus::Failed,
        EventStatus::Fatal,
        EventStatus::Merged,
        EventStatus::Corrupted,
        EventStatus::ReservedFail,
        EventStatus::ReservedGet,
    ];

    /// The code stored in `jedi_events.status`.
    pub const fn code(self) -> i64 {
        match self {
            EventStatus::Ready => 0,
            EventStatus::Sent => 1,
            EventStatus::Running => 2,
            EventStatus::Finished => 3,
            EventStatus::Cancelled => 4,
            EventStatus::Discarded => 5,
            EventStatus::Done => 6,
            EventStatus::Failed => 7,
            EventStatus::Fatal => 8,
            EventStatus::Merged => 9,
            EventStatus::Corrupted => 10,
            EventStatus::ReservedFail => 98,
            EventStatus::ReservedGet => 99,
        }
    }

    pub fn from_code(code: i64) -> Option<EventStatus> {
        EventStatus::ALL.into_iter().find(|s| s.code() == code)
    }

    /// The name clients use (`get_events_status` answers with it).
    pub const fn name(self) -> &'static str {
        match self {
            EventStatus::Ready => "ready",
            EventStatus::Sent => "sent",
            EventStatus::Running => "running",
            EventStatus::Finished => "finished",
            EventStatus::Cancelled => "cancelled",
            EventStatus::Discarded => "discarded",
            EventStatus::Done => "done",
            EventStatus::Failed => "failed",
            EventStatus::Fatal => "fatal",
            EventStatus::Merged => "merged",
            EventStatus::Corrupted => "corrupted",
            EventStatus::ReservedFail => "reserved_fail",
            EventStatus::ReservedGet => "reserved_get",
        }
    }

    /// What a pilot or Harvester may report for a range it holds: `running`, `finished`,
    /// `failed`, `fatal`, `cancelled` and `discarded`. The other states are the server's.
    pub fn reported(word: &str) -> Option<EventStatus> {
        match word {
            "running" => Some(EventStatus::Running),
            "finished" => Some(EventStatus::Finished),
            "failed" => Some(EventStatus::Failed),
            "fatal" => Some(EventStatus::Fatal),
            "cancelled" => Some(EventStatus::Cancelled),
            "discarded" => Some(EventStatus::Discarded),
            _ => None,
        }
    }

    /// A range in one of these states is out of a consumer's hands for good.
    pub const fn is_terminal(self) -> bool {
        matches!(
            self,
            EventStatus::Finished
                | EventStatus::Done
                | EventStatus::Fatal
                | EventStatus::Merged
                | EventStatus::Cancelled
                | EventStatus::Discarded
                | EventStatus::Corrupted
        )
    }
}

impl fmt::Display for EventStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The key of one `jedi_events` row, which is also its range ID
/// `"<jediTaskID>-<PandaID>-<fileID>-<job_processID>-<attemptNr>"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct EventRangeId {
    pub task_id: i64,
    pub panda_id: i64,
    pub file_id: i64,
    pub process_id: i64,
    pub attempt_nr: i64,
}

/// Longest range ID accepted: five 19-digit numbers and their dashes.
pub const MAX_RANGE_ID_LEN: usize = 5 * 19 + 4;

impl EventRangeId {
    /// Parses a range ID; `None` for anything but five non-negative decimal numbers
    /// separated by dashes.
    pub fn parse(text: &str) -> Option<EventRangeId> {
        if text.len() > MAX_RANGE_ID_LEN {
            return None;
        }
        let mut parts = text.split('-').map(|p| {
            (!p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
                .then(|| p.parse::<i64>().ok())
                .flatten()
        });
        let mut next = || parts.next().flatten();
        let id = EventRangeId {
            task_id: next()?,
            panda_id: next()?,
            file_id: next()?,
            process_id: next()?,
            attempt_nr: next()?,
        };
        parts.next().is_none().then_some(id)
    }
}

impl fmt::Display for EventRangeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}-{}-{}-{}-{}",
            self.task_id, self.panda_id, self.file_id, self.process_id, self.attempt_nr
        )
    }
}

/// Cuts the `n_events` events of a file that start after event `start` into ranges of at
/// most `per_range`: `(job_processID, first event, last event)`. Upstream's numbering:
/// events are counted from 1 (`start + 1` is the first), both ends are inclusive, and a
/// range's process ID is its first event.
pub fn cut_ranges(start: i64, n_events: i64, per_range: i64) -> Vec<(i64, i64, i64)> {
    let per_range = per_range.max(1);
    if n_events < 1 {
        return Vec::new();
    }
    let count = (n_events - 1) / per_range + 1;
    (0..count)
        .map(|i| {
            let first = start + 1 + i * per_range;
            (
                first,
                first,
                (start + (i + 1) * per_range).min(start + n_events),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_upstreams_and_round_trip() {
        assert_eq!(EventStatus::Ready.code(), 0);
        assert_eq!(EventStatus::Fatal.code(), 8);
        assert_eq!(EventStatus::ReservedGet.code(), 99);
        for s in EventStatus::ALL {
            assert_eq!(EventStatus::from_code(s.code()), Some(s));
        }
        assert_eq!(EventStatus::from_code(42), None);
    }

    #[test]
    fn only_a_consumers_words_may_be_reported() {
        assert_eq!(
            EventStatus::reported("finished"),
            Some(EventStatus::Finished)
        );
        assert_eq!(EventStatus::reported("failed"), Some(EventStatus::Failed));
        for word in ["ready", "sent", "done", "merged", "Finished", ""] {
            assert_eq!(EventStatus::reported(word), None, "{word}");
        }
    }

    #[test]
    fn range_ids_parse_strictly() {
        let id = EventRangeId::parse("12-3400-56-7-1").expect("parses");
        assert_eq!(
            id,
            EventRangeId {
                task_id: 12,
                panda_id: 3400,
                file_id: 56,
                process_id: 7,
                attempt_nr: 1
            }
        );
        assert_eq!(id.to_string(), "12-3400-56-7-1");
        for bad in [
            "",
            "1-2-3-4",
            "1-2-3-4-5-6",
            "1-2-3-4-x",
            "1-2--4-5",
            "-1-2-3-4-5",
            "1-2-3-4-99999999999999999999",
            "1-2-3-4-+5",
        ] {
            assert_eq!(EventRangeId::parse(bad), None, "{bad}");
        }
        assert_eq!(EventRangeId::parse(&"1".repeat(1000)), None);
    }

    #[test]
    fn ranges_cover_the_events_without_overlap() {
        assert_eq!(cut_ranges(0, 10, 4), vec![(1, 1, 4), (5, 5, 8), (9, 9, 10)]);
        assert_eq!(cut_ranges(20, 1, 10), vec![(21, 21, 21)]);
        assert_eq!(cut_ranges(5, 0, 1), vec![]);
        assert_eq!(cut_ranges(0, 2, 0), vec![(1, 1, 1), (2, 2, 2)]);
        let all: i64 = cut_ranges(100, 1000, 7)
            .iter()
            .map(|(_, a, b)| b - a + 1)
            .sum();
        assert_eq!(all, 1000);
    }
}
