//! The one scheduler every executor runs on.
//!
//! An executor hands it [`Task`]s — one per (destination, blob): a cache repository for warm
//! and verify, a registry repository for copy and import, the bundle or layout for export —
//! already in the order it wants them started (biggest first, or a bundle's stream order),
//! and an [`Arrangement`] saying what to do before an image's blobs (warm: pull its manifests
//! through the cache), with each blob, and after an image's blobs (copy, import: push its
//! manifests, children before the index; the tags follow the whole run).
//!
//! The scheduler keeps `jobs` blob transfers in flight, and separately `jobs` manifest stages,
//! so manifests and blobs are pipelined: an image's blobs start as soon as its manifests are
//! through, and its manifests are pushed as soon as its blobs are. Tasks of one digest form a
//! [`Chain`]: a cache that must not be asked for one blob through two repositories at once
//! gets them one after another; a registry gets the first upload, then mounts of it. A failed
//! blob fails every image that needs it and no other; an image whose blobs failed gets no
//! manifests pushed, so no tag ever points at something incomplete.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant};

use futures::stream::FuturesUnordered;
use futures::StreamExt;

use super::{ImageOutcomes, TransferError};
use crate::progress::Reporter;
use crate::reference::Digest;

/// One blob into one destination place.
#[derive(Debug, Clone)]
pub struct Task {
    /// The destination repository (cache or registry); empty for a bundle or a layout.
    pub repository: String,
    pub digest: Digest,
    pub size: u64,
    /// Indexes into `plan.images` of the images that need it; the first one's source is read
    /// for the bytes.
    pub images: Vec<usize>,
}

/// What one task did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Done {
    /// This many blob bytes moved (read through a cache, uploaded, written).
    Moved(u64),
    /// Mounted from another repository of the same registry: no bytes moved.
    Mounted,
    /// The destination held it already (its digest or size said so).
    Present,
    /// Warmed by an earlier run (the state says so) and the cache answered for it again.
    Confirmed,
    /// `verify`: not there.
    Missing,
}

/// How the tasks of one digest relate.
#[derive(Debug, Clone, Copy)]
pub enum Chain {
    /// Every task on its own (one destination, or presence checks).
    Independent,
    /// One after another, `pause` apart: a distribution proxy asked for a blob through a
    /// second repository while it still stores it through the first serves it without
    /// keeping it.
    OneAtATime { pause: Duration },
    /// The first task (an upload) before the others (mounts from its repository); when the
    /// first fails, the others fail with its error.
    FirstThenRest,
}

/// What an executor does around and with each blob. `before`/`after` run per image when
/// `stages()` says so.
pub(crate) trait Arrangement {
    /// Whether `before` and `after` do anything (skipped otherwise).
    fn stages(&self) -> (bool, bool);
    /// Before any blob of image `i` (warm: its manifests through the cache).
    async fn before(&self, _i: usize) -> Result<(), TransferError> {
        Ok(())
    }
    /// One blob. `head` is the chain's first task (where a mount comes from) for the others.
    async fn blob(&self, task: &Task, head: Option<&Task>) -> Result<Done, TransferError>;
    /// After every blob of image `i` arrived (copy/import: manifests, then the tag).
    async fn after(&self, _i: usize) -> Result<(), TransferError> {
        Ok(())
    }
}

/// Put tasks biggest first (ties by digest, then repository): long transfers start early, so
/// the run does not end waiting on one big blob.
pub fn biggest_first(tasks: &mut [Task]) {
    tasks.sort_by(|a, b| {
        b.size
            .cmp(&a.size)
            .then_with(|| a.digest.cmp(&b.digest))
            .then_with(|| a.repository.cmp(&b.repository))
    });
}

enum Event {
    Before(usize, Result<(), TransferError>),
    Blob(usize, Result<Done, TransferError>),
    After(usize, Result<(), TransferError>),
}

type Running<'a> = FuturesUnordered<Pin<Box<dyn Future<Output = Event> + 'a>>>;

/// Run `tasks` (in the order given) for `images` images. Outcomes go to `outcomes`; progress
/// to `reporter` (one item per task, one image as its last stage ends). The tasks run and the
/// blob bytes they moved.
pub(crate) async fn run<A: Arrangement>(
    arrangement: &A,
    images: usize,
    tasks: Vec<Task>,
    chain: Chain,
    jobs: usize,
    outcomes: &ImageOutcomes,
    reporter: &dyn Reporter,
) -> (u64, u64) {
    let jobs = jobs.max(1);
    let mut moved = 0u64;
    let (has_before, has_after) = arrangement.stages();
    let n = tasks.len();

    // Chains: each task's successor of the same digest, and whether it waits on one.
    let mut next_of: Vec<Option<usize>> = vec![None; n];
    let mut head_of: Vec<usize> = (0..n).collect();
    let mut rest_of: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    let mut chain_ok = vec![true; n];
    if !matches!(chain, Chain::Independent) {
        let mut last: BTreeMap<&Digest, (usize, usize)> = BTreeMap::new();
        for (t, task) in tasks.iter().enumerate() {
            if let Some((head, prev)) = last.get(&task.digest).copied() {
                next_of[prev] = Some(t);
                head_of[t] = head;
                rest_of.entry(head).or_default().push(t);
                chain_ok[t] = false;
                last.insert(&task.digest, (head, t));
            } else {
                last.insert(&task.digest, (t, t));
            }
        }
    }

    // Images: blobs left, manifests stage done, tasks each image releases.
    let mut left = vec![0usize; images];
    let mut released = vec![!has_before; n];
    let mut releases: Vec<Vec<usize>> = vec![Vec::new(); images];
    for (t, task) in tasks.iter().enumerate() {
        for &i in &task.images {
            left[i] += 1;
            if has_before {
                releases[i].push(t);
            }
        }
    }
    let mut before_done = vec![!has_before; images];
    let mut before_queue: VecDeque<usize> = if has_before {
        (0..images).collect()
    } else {
        VecDeque::new()
    };
    let mut after_queue: VecDeque<usize> = VecDeque::new();
    let mut ready: BTreeSet<usize> = BTreeSet::new();
    let mut timed: BinaryHeap<Reverse<(Instant, usize)>> = BinaryHeap::new();
    let mut finished_images = 0usize;
    reporter.images(images as u64);

    // An image is done when its manifests stage and its blobs are; then its after-stage.
    let finish_image = |i: usize, after_queue: &mut VecDeque<usize>, finished: &mut usize| {
        if has_after && !outcomes.has_failed(i) {
            after_queue.push_back(i);
        } else {
            *finished += 1;
            reporter.image_done(!outcomes.has_failed(i));
        }
    };
    if !has_before {
        for (i, _) in left.iter().enumerate().filter(|(_, n)| **n == 0) {
            finish_image(i, &mut after_queue, &mut finished_images);
        }
        ready.extend(0..n);
        ready.retain(|&t| chain_ok[t]);
    }

    let (mut in_before, mut in_blobs, mut in_after) = (0usize, 0usize, 0usize);
    let mut running: Running<'_> = FuturesUnordered::new();
    let tasks = &tasks;
    loop {
        while in_before < jobs {
            let Some(i) = before_queue.pop_front() else {
                break;
            };
            in_before += 1;
            running.push(Box::pin(async move {
                Event::Before(i, arrangement.before(i).await)
            }));
        }
        let now = Instant::now();
        while let Some(Reverse((at, t))) = timed.peek().copied() {
            if at > now {
                break;
            }
            timed.pop();
            ready.insert(t);
        }
        while in_blobs < jobs {
            let Some(t) = ready.pop_first() else {
                break;
            };
            in_blobs += 1;
            let head = (head_of[t] != t).then(|| &tasks[head_of[t]]);
            running.push(Box::pin(async move {
                Event::Blob(t, arrangement.blob(&tasks[t], head).await)
            }));
        }
        while in_after < jobs {
            let Some(i) = after_queue.pop_front() else {
                break;
            };
            in_after += 1;
            running.push(Box::pin(async move {
                Event::After(i, arrangement.after(i).await)
            }));
        }
        let event = match (running.is_empty(), timed.peek().copied()) {
            (true, None) => break,
            (true, Some(Reverse((at, _)))) => {
                tokio::time::sleep_until(at.into()).await;
                continue;
            }
            (false, None) => running.next().await.expect("a running stage"),
            (false, Some(Reverse((at, _)))) => {
                tokio::select! {
                    e = running.next() => e.expect("a running stage"),
                    _ = tokio::time::sleep_until(at.into()) => continue,
                }
            }
        };
        match event {
            Event::Before(i, result) => {
                in_before -= 1;
                before_done[i] = true;
                if let Err(e) = result {
                    outcomes.fail(i, e);
                }
                for t in std::mem::take(&mut releases[i]) {
                    if !released[t] {
                        released[t] = true;
                        if chain_ok[t] {
                            ready.insert(t);
                        }
                    }
                }
                if left[i] == 0 {
                    finish_image(i, &mut after_queue, &mut finished_images);
                }
            }
            Event::Blob(t, result) => {
                in_blobs -= 1;
                let mut settled = vec![(t, result.clone())];
                // The chain goes on.
                match chain {
                    Chain::Independent => {}
                    Chain::OneAtATime { pause } => {
                        if let Some(next) = next_of[t] {
                            chain_ok[next] = true;
                            if released[next] {
                                timed.push(Reverse((Instant::now() + pause, next)));
                            }
                        }
                    }
                    Chain::FirstThenRest => {
                        for rest in rest_of.remove(&t).unwrap_or_default() {
                            chain_ok[rest] = true;
                            match &result {
                                Err(e) => settled.push((rest, Err(e.clone()))),
                                Ok(_) if released[rest] => {
                                    ready.insert(rest);
                                }
                                Ok(_) => {}
                            }
                        }
                    }
                }
                for (t, result) in settled {
                    let task = &tasks[t];
                    if let Ok(Done::Moved(n)) = &result {
                        moved += n;
                    }
                    outcomes.record(&task.images, &task.digest, &result);
                    reporter.item_done(&task.digest.short(), result.is_ok());
                    for &i in &task.images {
                        left[i] -= 1;
                        if left[i] == 0 && before_done[i] {
                            finish_image(i, &mut after_queue, &mut finished_images);
                        }
                    }
                }
            }
            Event::After(i, result) => {
                in_after -= 1;
                if let Err(e) = result {
                    outcomes.fail(i, e);
                }
                finished_images += 1;
                reporter.image_done(!outcomes.has_failed(i));
            }
        }
    }
    debug_assert_eq!(finished_images, images);
    (n as u64, moved)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// Records the order blobs started and ended in; fails the blobs it is told to.
    struct Recorder {
        log: Mutex<Vec<String>>,
        fail: Vec<Digest>,
        in_flight: Mutex<(usize, usize)>,
        stages: (bool, bool),
    }

    impl Arrangement for Recorder {
        fn stages(&self) -> (bool, bool) {
            self.stages
        }
        async fn before(&self, i: usize) -> Result<(), TransferError> {
            self.log.lock().unwrap().push(format!("before {i}"));
            tokio::task::yield_now().await;
            Ok(())
        }
        async fn blob(&self, task: &Task, head: Option<&Task>) -> Result<Done, TransferError> {
            {
                let mut f = self.in_flight.lock().unwrap();
                f.0 += 1;
                f.1 = f.1.max(f.0);
            }
            self.log.lock().unwrap().push(format!(
                "start {} {} {}",
                task.digest.short(),
                task.repository,
                head.map(|h| h.repository.as_str()).unwrap_or("-")
            ));
            tokio::time::sleep(Duration::from_millis(5)).await;
            self.in_flight.lock().unwrap().0 -= 1;
            if self.fail.contains(&task.digest) {
                return Err(TransferError::Bundle(format!(
                    "blob {} broke",
                    task.digest.short()
                )));
            }
            Ok(Done::Moved(task.size))
        }
        async fn after(&self, i: usize) -> Result<(), TransferError> {
            self.log.lock().unwrap().push(format!("after {i}"));
            Ok(())
        }
    }

    fn task(repo: &str, d: &Digest, size: u64, images: Vec<usize>) -> Task {
        Task {
            repository: repo.into(),
            digest: d.clone(),
            size,
            images,
        }
    }

    #[tokio::test]
    async fn chains_failures_and_stages() {
        let (a, b, c) = (
            Digest::sha256_of(b"a"),
            Digest::sha256_of(b"b"),
            Digest::sha256_of(b"c"),
        );
        // Image 0 needs a (in r1) and b; image 1 needs a (in r2); image 2 needs c, which fails.
        let mut tasks = vec![
            task("r1", &a, 30, vec![0]),
            task("r2", &a, 30, vec![1]),
            task("r1", &b, 20, vec![0]),
            task("r3", &c, 10, vec![2]),
        ];
        biggest_first(&mut tasks);
        let recorder = Recorder {
            log: Mutex::new(Vec::new()),
            fail: vec![c.clone()],
            in_flight: Mutex::new((0, 0)),
            stages: (true, true),
        };
        let plan_images = 3;
        let outcomes = ImageOutcomes::with_images(plan_images);
        run(
            &recorder,
            plan_images,
            tasks,
            Chain::FirstThenRest,
            2,
            &outcomes,
            &crate::progress::Quiet,
        )
        .await;
        let log = recorder.log.lock().unwrap().clone();
        let pos = |s: &str| log.iter().position(|l| l.starts_with(s)).unwrap();
        // The second task of `a` starts after the first, mounting from its repository.
        assert!(
            pos(&format!("start {} r2 r1", a.short())) > pos(&format!("start {} r1 -", a.short()))
        );
        // Each image's after-stage comes after its blobs; the failed image gets none.
        assert!(pos("after 0") > pos(&format!("start {}", b.short())));
        assert!(log.iter().any(|l| l == "after 1"));
        assert!(!log.iter().any(|l| l == "after 2"));
        assert!(recorder.in_flight.lock().unwrap().1 <= 2);
        assert!(!outcomes.has_failed(0) && !outcomes.has_failed(1));
        assert!(outcomes.has_failed(2));
    }

    #[tokio::test]
    async fn one_at_a_time_keeps_one_digest_out_of_two_repositories_at_once() {
        let a = Digest::sha256_of(b"a");
        let tasks: Vec<Task> = (0..4)
            .map(|r| task(&format!("r{r}"), &a, 5, vec![r]))
            .collect();
        let recorder = Recorder {
            log: Mutex::new(Vec::new()),
            fail: vec![],
            in_flight: Mutex::new((0, 0)),
            stages: (false, false),
        };
        let outcomes = ImageOutcomes::with_images(4);
        run(
            &recorder,
            4,
            tasks,
            Chain::OneAtATime {
                pause: Duration::from_millis(1),
            },
            8,
            &outcomes,
            &crate::progress::Quiet,
        )
        .await;
        assert_eq!(recorder.in_flight.lock().unwrap().1, 1);
        assert_eq!(recorder.log.lock().unwrap().len(), 4);
    }
}
