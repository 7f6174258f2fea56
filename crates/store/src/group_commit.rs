//! Group commit: concurrent requests of one kind applied together, in one statement and one
//! commit, each answered with its own result only after that commit.
//!
//! Policy:
//! - No request waits for a timer. A few workers each take the oldest waiting request and
//!   whatever else is waiting at that moment (up to the batch bound) and apply them
//!   together. While they work, new requests queue, so batches grow with the load and a
//!   request that arrives alone goes straight through, as one.
//! - Two requests that name the same job never share a batch (the later waits for the next
//!   one): in one statement, PostgreSQL would apply only one of two changes of a row.
//! - A batch that fails is applied again one request at a time: one request's error (a
//!   deadlock, a bad row) is its own and no other's.
//! - A caller that goes away does not cancel its request: it is applied with its batch, as a
//!   request already in flight would be.
//! - The queue is bounded; when it is full, callers wait for room (the web tier's own
//!   bounds on connections and request time hold the rest).

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use tokio::sync::{mpsc, oneshot, Mutex};

use crate::error::{Result, StoreError};
use crate::{Inner, Store};

/// Requests waiting for a worker, at most.
const QUEUE_BOUND: usize = 4_096;

/// How one kind of request is applied: to a batch of them, one answer per request in order.
pub(crate) type Apply<R, A> =
    fn(Store, Arc<Vec<R>>) -> Pin<Box<dyn Future<Output = Result<Vec<A>>> + Send>>;

/// The sizes of a group committer.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Bounds {
    /// Requests in one batch, at most.
    pub max_batch: usize,
    /// Batches applied at once (each on its own connection).
    pub workers: usize,
}

type Pending<R, A> = (R, oneshot::Sender<Result<A>>);

/// A queue of requests of one kind and the workers that apply them in batches.
pub(crate) struct GroupCommit<R, A> {
    kind: &'static str,
    queue: mpsc::Sender<Pending<R, A>>,
    counts: Arc<Counts>,
}

/// What a group committer has done so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GroupCommitStats {
    /// Which requests (e.g. `event-range takes`).
    pub kind: &'static str,
    /// Batches applied.
    pub batches: u64,
    /// Requests in them.
    pub requests: u64,
    /// Batches that failed and were applied again one request at a time.
    pub split: u64,
}

#[derive(Default)]
struct Counts {
    batches: AtomicU64,
    requests: AtomicU64,
    split: AtomicU64,
}

impl<R, A> GroupCommit<R, A>
where
    R: Clone + Send + Sync + 'static,
    A: Send + 'static,
{
    /// Starts the workers. They hold the store weakly and stop when it is dropped.
    /// `jobs` names the jobs a request touches (two requests sharing one never share a
    /// batch).
    pub(crate) fn start(
        kind: &'static str,
        store: Weak<Inner>,
        bounds: Bounds,
        jobs: fn(&R) -> Vec<i64>,
        apply: Apply<R, A>,
    ) -> GroupCommit<R, A> {
        let (queue, receiver) = mpsc::channel(QUEUE_BOUND);
        let receiver = Arc::new(Mutex::new(receiver));
        let counts = Arc::new(Counts::default());
        for _ in 0..bounds.workers.max(1) {
            let worker = Worker {
                kind,
                receiver: receiver.clone(),
                store: store.clone(),
                max_batch: bounds.max_batch.max(1),
                jobs,
                apply,
                counts: counts.clone(),
            };
            tokio::spawn(worker.run());
        }
        GroupCommit {
            kind,
            queue,
            counts,
        }
    }

    /// What it has done so far.
    pub(crate) fn stats(&self) -> GroupCommitStats {
        GroupCommitStats {
            kind: self.kind,
            batches: self.counts.batches.load(Ordering::Relaxed),
            requests: self.counts.requests.load(Ordering::Relaxed),
            split: self.counts.split.load(Ordering::Relaxed),
        }
    }

    /// Applies `request` with whatever else is waiting, and returns its own answer once
    /// the batch has been committed.
    pub(crate) async fn submit(&self, request: R) -> Result<A> {
        let (answer, wait) = oneshot::channel();
        let gone = || StoreError::Unavailable("the store is shutting down".into());
        self.queue
            .send((request, answer))
            .await
            .map_err(|_| gone())?;
        wait.await.map_err(|_| gone())?
    }
}

/// One worker: takes a batch off the queue, applies it, answers each request.
struct Worker<R, A> {
    kind: &'static str,
    receiver: Arc<Mutex<mpsc::Receiver<Pending<R, A>>>>,
    store: Weak<Inner>,
    max_batch: usize,
    jobs: fn(&R) -> Vec<i64>,
    apply: Apply<R, A>,
    counts: Arc<Counts>,
}

impl<R, A> Worker<R, A>
where
    R: Clone + Send + Sync + 'static,
    A: Send + 'static,
{
    async fn run(self) {
        // A request that named a job already in the batch: first of the next batch.
        let mut held: Option<Pending<R, A>> = None;
        loop {
            let Some(batch) = self.next_batch(&mut held).await else {
                return;
            };
            let Some(inner) = self.store.upgrade() else {
                return;
            };
            let store = Store { inner };
            let (requests, answers): (Vec<R>, Vec<_>) = batch.into_iter().unzip();
            let requests = Arc::new(requests);
            self.counts.batches.fetch_add(1, Ordering::Relaxed);
            self.counts
                .requests
                .fetch_add(requests.len() as u64, Ordering::Relaxed);
            let started = std::time::Instant::now();
            let applied = (self.apply)(store.clone(), requests.clone()).await;
            tracing::debug!(
                kind = self.kind,
                size = requests.len(),
                ms = started.elapsed().as_secs_f64() * 1e3,
                ok = applied.is_ok(),
                "group commit"
            );
            let results = match applied {
                Ok(results) if results.len() == requests.len() => {
                    results.into_iter().map(Ok).collect()
                }
                outcome => {
                    if requests.len() > 1 {
                        self.counts.split.fetch_add(1, Ordering::Relaxed);
                        if let Err(e) = &outcome {
                            tracing::debug!(kind = self.kind, error = %e, size = requests.len(),
                                "a group commit failed; its requests are applied one by one");
                        }
                    }
                    retry_one_by_one(&store, &requests, outcome, self.apply).await
                }
            };
            for (answer, result) in answers.into_iter().zip(results) {
                // A caller that went away no longer wants its answer.
                let _ = answer.send(result);
            }
        }
    }

    /// The oldest waiting request (`held` first) and what else is waiting now, up to the
    /// bound, with no two naming one job; `None` once the queue is closed.
    async fn next_batch(&self, held: &mut Option<Pending<R, A>>) -> Option<Vec<Pending<R, A>>> {
        let mut receiver = self.receiver.lock().await;
        let first = match held.take() {
            Some(pending) => pending,
            None => receiver.recv().await?,
        };
        let mut named: HashSet<i64> = (self.jobs)(&first.0).into_iter().collect();
        let mut batch = vec![first];
        while batch.len() < self.max_batch {
            let Ok(pending) = receiver.try_recv() else {
                break;
            };
            let its_jobs = (self.jobs)(&pending.0);
            if its_jobs.iter().any(|j| named.contains(j)) {
                *held = Some(pending);
                break;
            }
            named.extend(its_jobs);
            batch.push(pending);
        }
        Some(batch)
    }
}

/// The answers of a batch that failed (or of a single request that did): each request
/// applied alone.
async fn retry_one_by_one<R, A>(
    store: &Store,
    requests: &Arc<Vec<R>>,
    outcome: Result<Vec<A>>,
    apply: Apply<R, A>,
) -> Vec<Result<A>>
where
    R: Clone + Send + Sync + 'static,
    A: Send + 'static,
{
    if requests.len() == 1 {
        return vec![outcome.and_then(|mut answers| {
            answers
                .pop()
                .ok_or_else(|| StoreError::Corrupt("a batch gave no answer".into()))
        })];
    }
    let mut results = Vec::with_capacity(requests.len());
    for request in requests.iter() {
        let one = apply(store.clone(), Arc::new(vec![request.clone()])).await;
        results.push(one.and_then(|mut answers| {
            answers
                .pop()
                .ok_or_else(|| StoreError::Corrupt("a batch gave no answer".into()))
        }));
    }
    results
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex as StdMutex;

    use super::*;
    use crate::testing::TestDb;
    use crate::{Backend, StoreOptions};

    /// The batches the test committers were given, by test (each test its own list).
    static SEEN: StdMutex<Vec<(u8, Vec<i64>)>> = StdMutex::new(Vec::new());

    /// A request: (test, job); the answer is the job times ten, and job 13 poisons its batch.
    fn apply(
        _store: Store,
        batch: Arc<Vec<(u8, i64)>>,
    ) -> Pin<Box<dyn Future<Output = Result<Vec<i64>>> + Send>> {
        Box::pin(async move {
            let test = batch[0].0;
            let jobs: Vec<i64> = batch.iter().map(|r| r.1).collect();
            SEEN.lock().expect("lock").push((test, jobs.clone()));
            // A moment's work, so that later requests queue behind this batch.
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            if jobs.contains(&13) {
                return Err(StoreError::Conflict("job 13 is poison".into()));
            }
            Ok(jobs.iter().map(|j| j * 10).collect())
        })
    }

    async fn committer(workers: usize) -> (TestDb, Store, GroupCommit<(u8, i64), i64>) {
        let db = TestDb::new(Backend::Sqlite);
        let store = Store::open(&db.config, StoreOptions::default())
            .await
            .expect("open");
        let bounds = Bounds {
            max_batch: 4,
            workers,
        };
        let group = GroupCommit::start(
            "test",
            Arc::downgrade(&store.inner),
            bounds,
            |r| vec![r.1],
            apply,
        );
        (db, store, group)
    }

    fn batches_of(test: u8) -> Vec<Vec<i64>> {
        let seen = SEEN.lock().expect("lock");
        seen.iter()
            .filter(|(t, _)| *t == test)
            .map(|(_, b)| b.clone())
            .collect()
    }

    #[tokio::test]
    async fn waiting_requests_share_a_batch_but_never_with_their_own_job() {
        let (_db, _store, group) = committer(1).await;
        let jobs = [1, 2, 3, 2, 4, 5, 6, 7, 8, 9];
        let answers =
            futures_util::future::join_all(jobs.iter().map(|j| group.submit((1, *j)))).await;
        let answers: Vec<i64> = answers.into_iter().map(|a| a.expect("answer")).collect();
        assert_eq!(
            answers,
            jobs.map(|j| j * 10).to_vec(),
            "each its own answer"
        );
        let batches = batches_of(1);
        assert!(batches.iter().all(|b| b.len() <= 4), "{batches:?}");
        assert!(batches.iter().any(|b| b.len() > 1), "{batches:?}");
        for batch in &batches {
            let distinct: HashSet<_> = batch.iter().collect();
            assert_eq!(distinct.len(), batch.len(), "a job twice in {batch:?}");
        }
        assert_eq!(batches.iter().map(Vec::len).sum::<usize>(), jobs.len());
        let stats = group.stats();
        assert_eq!(stats.requests, jobs.len() as u64);
        assert_eq!(stats.batches, batches.len() as u64);
    }

    #[tokio::test]
    async fn a_failing_batch_fails_only_the_request_that_fails_alone() {
        let (_db, _store, group) = committer(2).await;
        let jobs = [11, 12, 13, 14, 15, 16];
        let answers =
            futures_util::future::join_all(jobs.iter().map(|j| group.submit((2, *j)))).await;
        for (job, answer) in jobs.iter().zip(answers) {
            match job {
                13 => assert!(matches!(answer, Err(StoreError::Conflict(_)))),
                _ => assert_eq!(answer.expect("answer"), job * 10),
            }
        }
        assert!(group.stats().split >= 1, "the poisoned batch was split");
    }

    #[tokio::test]
    async fn the_workers_stop_with_the_store() {
        let (_db, store, group) = committer(2).await;
        assert_eq!(group.submit((3, 1)).await.expect("answer"), 10);
        drop(store);
        let after = group.submit((3, 2)).await;
        assert!(
            matches!(after, Err(StoreError::Unavailable(_))),
            "{after:?}"
        );
    }
}
