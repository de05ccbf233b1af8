//! The command path: load (or take from the cache) the stream's folded state, decide,
//! derive the queue index changes, append with the expected version, and on a conflict
//! decide again. Every command of both HTTP surfaces, the orchestrator and the timers goes
//! through [`Service::execute_all`].

use jobsource_domain::{Aggregate, DomainError};
use jobsource_eventstore::typed::{from_envelope, to_new_event, EventPayload};
use jobsource_eventstore::{AppendRequest, AppendResult, ExpectedVersion, QueueOp, StoreError};
use serde_json::Value;
use uuid::Uuid;

use super::queue::{QueueConfig, QueueHooks};
use super::{CommandContext, Outcome, Service, ServiceError, CONFLICT_RETRIES};

impl Service {
    pub(crate) async fn execute<A>(
        &self,
        stream: &str,
        command: A::Command,
        creates: bool,
        ctx: &CommandContext,
    ) -> Result<Outcome<A>, ServiceError>
    where
        A: Aggregate + QueueHooks + Send + Sync + 'static,
        A::Event: EventPayload,
    {
        self.execute_all(stream, vec![command], creates, ctx).await
    }

    /// Decides `commands` one after the other on the folded state and appends all their
    /// events in one atomic append (all or nothing; one version check).
    pub(crate) async fn execute_all<A>(
        &self,
        stream: &str,
        commands: Vec<A::Command>,
        creates: bool,
        ctx: &CommandContext,
    ) -> Result<Outcome<A>, ServiceError>
    where
        A: Aggregate + QueueHooks + Send + Sync + 'static,
        A::Event: EventPayload,
    {
        let _guard = self.locks.lock(stream).await;
        if let Some(idem) = &ctx.idempotency {
            if let Some(prev) = self.store.recall(stream, idem).await? {
                metrics::counter!(crate::metrics::IDEMPOTENT_REPLAYS).increment(1);
                return self.replayed(stream, &prev).await;
            }
        }
        let mut use_cache = true;
        for _ in 0..CONFLICT_RETRIES {
            let cached = if use_cache && !creates {
                self.states.get::<A>(stream)
            } else {
                None
            };
            let from_cache = cached.is_some();
            let state = match cached {
                Some(state) => state,
                // A creation is decided against "no stream"; the store's NoStream check
                // turns an existing stream into AlreadyExists below.
                None if creates => A::default(),
                None => self.load::<A>(stream).await?.0,
            };
            if let Some(expected) = ctx.expected_version {
                if expected != state.version() {
                    if from_cache {
                        use_cache = false;
                        continue;
                    }
                    return Err(ServiceError::VersionConflict {
                        kind: A::KIND,
                        expected,
                        current: state.version(),
                    });
                }
            }
            let (events, ops) = match decide_all(&state, &commands, &self.queue) {
                Ok(decided) => decided,
                // The cached state may be behind the store: decide again on a fresh fold.
                Err(_) if from_cache => {
                    self.states.forget(stream);
                    use_cache = false;
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            if events.is_empty() && from_cache {
                // "Nothing to do" is only an answer when the state is the store's.
                use_cache = false;
                continue;
            }
            if events.is_empty() {
                let version = state.version();
                return Ok(Outcome {
                    state,
                    version,
                    position: None,
                    replayed: false,
                    event_ids: Vec::new(),
                });
            }
            let mut new_events = Vec::with_capacity(events.len());
            for e in &events {
                let mut ne = to_new_event(e).with_correlation(ctx.correlation_id.clone());
                if let Some(c) = &ctx.causation_id {
                    ne = ne.with_causation(c.clone());
                }
                if let Some(actor) = &ctx.actor {
                    ne = ne.with_meta("actor", Value::from(actor.clone()));
                }
                new_events.push(ne);
            }
            let expected = if creates {
                ExpectedVersion::NoStream
            } else {
                ExpectedVersion::Exact(state.version())
            };
            let event_ids: Vec<Uuid> = new_events.iter().map(|e| e.event_id).collect();
            let makes_ready = ops.iter().any(|o| matches!(o, QueueOp::Ready { .. }));
            let mut request = AppendRequest::new(stream, expected, new_events).with_queue(ops);
            request.idempotency = ctx.idempotency.clone();
            let started = std::time::Instant::now();
            let appended = self.store.append(request).await;
            metrics::histogram!(crate::metrics::APPEND_DURATION).record(started.elapsed());
            match appended {
                Ok(result) if result.replayed => {
                    metrics::counter!(crate::metrics::IDEMPOTENT_REPLAYS).increment(1);
                    return self.replayed(stream, &result).await;
                }
                Ok(result) => {
                    if makes_ready {
                        self.ready.notify_one();
                    }
                    for e in &events {
                        metrics::counter!(crate::metrics::EVENTS_APPENDED, "type" => e.event_type())
                            .increment(1);
                    }
                    let mut state = state;
                    for e in &events {
                        state.apply(e);
                    }
                    self.states.put(stream, state.clone());
                    return Ok(Outcome {
                        state,
                        version: result.last_version,
                        position: result.last_position(),
                        replayed: false,
                        event_ids,
                    });
                }
                Err(StoreError::Conflict { actual, .. }) => {
                    metrics::counter!(crate::metrics::APPEND_CONFLICTS).increment(1);
                    self.states.forget(stream);
                    if from_cache {
                        // Our cached state was behind, not the client's.
                        use_cache = false;
                        continue;
                    }
                    if creates {
                        return Err(DomainError::AlreadyExists { kind: A::KIND }.into());
                    }
                    if let Some(expected) = ctx.expected_version {
                        return Err(ServiceError::VersionConflict {
                            kind: A::KIND,
                            expected,
                            current: actual,
                        });
                    }
                    tracing::debug!(stream, actual, "conflict; deciding again");
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(ServiceError::Contention { kind: A::KIND })
    }

    async fn replayed<A>(
        &self,
        stream: &str,
        recorded: &AppendResult,
    ) -> Result<Outcome<A>, ServiceError>
    where
        A: Aggregate,
        A::Event: EventPayload,
    {
        let version = recorded.last_version;
        // The state as of the recorded result, not what happened since.
        let history = self.store.read_stream(stream, 1, version as usize).await?;
        let mut state = A::default();
        let mut event_ids = Vec::new();
        for e in &history {
            let event: A::Event = from_envelope(&e.envelope)
                .map_err(|d| ServiceError::Internal(StoreError::Decode(d).to_string()))?;
            state.apply(&event);
            if e.envelope.version >= recorded.first_version {
                event_ids.push(e.envelope.event_id);
            }
        }
        Ok(Outcome {
            state,
            version,
            position: recorded.last_position(),
            replayed: true,
            event_ids,
        })
    }
}

/// Decides `commands` in order, each on the state the previous ones' events left, with the
/// queue index changes of each.
fn decide_all<A: Aggregate + QueueHooks>(
    state: &A,
    commands: &[A::Command],
    config: &QueueConfig,
) -> Result<(Vec<A::Event>, Vec<QueueOp>), DomainError> {
    let mut scratch = state.clone();
    let mut events = Vec::new();
    let mut ops = Vec::new();
    for command in commands {
        let prepared = scratch.prepare(command, config);
        let command = prepared.as_ref().unwrap_or(command);
        let decided = scratch.decide(command)?;
        ops.extend(scratch.queue_ops(command, &decided, config));
        for e in &decided {
            scratch.apply(e);
        }
        events.extend(decided);
    }
    Ok((events, ops))
}
