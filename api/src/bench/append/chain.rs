//! `bench append --chain`: writers of the same stream in this process chain their decisions
//! on the folded state and append them together, in one call.
//!
//! Each stream has a slot holding its folded state *including* every command decided but
//! not yet acknowledged. A writer decides on that state, applies its events to it, queues
//! them and waits. One leader task per stream sends what is queued as one append with
//! `Exact(acknowledged version)`: one atomic append for many commands, so a hot stream no
//! longer makes one round trip per command. When the group answers, every command gets
//! its own part of the result (its versions and positions). When it fails, the group and
//! everything queued behind it were decided on a state that did not happen: the slot is
//! reloaded from the store and each of those commands gets a conflict and is decided
//! again, so nothing is ever appended on a guessed state.

use tokio::sync::oneshot;

use super::*;

type Answer = oneshot::Sender<Result<AppendResult, StoreError>>;

/// The chained state of one stream.
#[derive(Default)]
pub(super) struct Slot {
    /// Folded state after every queued and in-flight command.
    job: Job,
    /// Version after every queued and in-flight command.
    version: u64,
    /// Version acknowledged by the store: what the next group expects.
    base: u64,
    /// A leader task is running for this stream.
    leading: bool,
    queued: Vec<NewEvent>,
    waiters: Vec<(usize, Answer)>,
}

/// The slots of every stream (striped like [`StreamLocks`]).
pub(super) type Slots = StreamLocks<HashMap<usize, Slot>>;

/// Decides, queues and waits for the job's next event; false when its lifecycle is done.
pub(super) async fn chained_one(
    store: &Arc<dyn EventStore>,
    slots: &Arc<Slots>,
    jobs: &Arc<Vec<String>>,
    j: usize,
    args: &AppendArgs,
    pad: &str,
    totals: &mut Totals,
) -> anyhow::Result<bool> {
    let stream = &jobs[j];
    loop {
        let answer = {
            let mut stripe = slots.lock(stream).await;
            let slot = stripe.entry(j).or_default();
            if slot.version >= args.events_per_job {
                return Ok(false);
            }
            let command = next_command(stream, slot.version, args.events_per_job, pad);
            let events = slot.job.decide(&command)?;
            for e in &events {
                slot.job.apply(e);
            }
            slot.version += events.len() as u64;
            slot.queued.extend(events.iter().map(to_new_event));
            let (tx, rx) = oneshot::channel();
            slot.waiters.push((events.len(), tx));
            if !std::mem::replace(&mut slot.leading, true) {
                tokio::spawn(lead(store.clone(), slots.clone(), jobs.clone(), j));
            }
            rx
        };
        match answer.await {
            Ok(Ok(_)) => return Ok(true),
            // Decided on a state that did not happen: decide again on the reloaded one.
            Ok(Err(StoreError::Conflict { .. })) => totals.conflicts += 1,
            Ok(Err(e)) => return Err(e.into()),
            Err(_) => anyhow::bail!("the leader of {stream} ended without an answer"),
        }
    }
}

/// Sends the stream's queued commands, one append per group, until none is queued.
async fn lead(store: Arc<dyn EventStore>, slots: Arc<Slots>, jobs: Arc<Vec<String>>, j: usize) {
    let stream = &jobs[j];
    loop {
        let (events, waiters, base) = {
            let mut stripe = slots.lock(stream).await;
            let slot = stripe.entry(j).or_default();
            if slot.waiters.is_empty() {
                slot.leading = false;
                return;
            }
            (
                std::mem::take(&mut slot.queued),
                std::mem::take(&mut slot.waiters),
                slot.base,
            )
        };
        let expected = ExpectedVersion::Exact(base);
        let result = store
            .append(AppendRequest::new(stream, expected, events))
            .await;
        let mut stripe = slots.lock(stream).await;
        let slot = stripe.entry(j).or_default();
        match result {
            Ok(r) => {
                slot.base = r.last_version;
                let mut at = 0;
                for (n, answer) in waiters {
                    let part = AppendResult {
                        stream: r.stream.clone(),
                        first_version: r.first_version + at as u64,
                        last_version: r.first_version + (at + n) as u64 - 1,
                        positions: r.positions[at..at + n].to_vec(),
                        replayed: false,
                    };
                    at += n;
                    let _ = answer.send(Ok(part));
                }
            }
            Err(e) => {
                // Everything queued behind the group was decided on top of it.
                let behind = std::mem::take(&mut slot.waiters);
                slot.queued.clear();
                let reloaded = reload(&*store, stream).await;
                // Unreadable: start from nothing; the next group's Exact(0) fails and
                // reloads again.
                let (job, actual) = reloaded.unwrap_or_default();
                (slot.job, slot.version, slot.base) = (job, actual, actual);
                for (_, answer) in waiters.into_iter().chain(behind) {
                    let _ = answer.send(Err(match &e {
                        StoreError::Conflict { .. } => StoreError::Conflict {
                            stream: stream.clone(),
                            expected,
                            actual,
                        },
                        other => StoreError::Backend(other.to_string()),
                    }));
                }
            }
        }
    }
}

/// The stream's folded state and version, from the store.
async fn reload(store: &dyn EventStore, stream: &str) -> anyhow::Result<(Job, u64)> {
    let mut job = Job::default();
    let mut version = 0;
    for e in store.read_stream_all(stream).await? {
        job.apply(&job_event_from(&e.envelope)?);
        version = e.envelope.version;
    }
    Ok((job, version))
}
