//! The [`EventStore`] implementation of the in-memory store.

use super::*;

#[async_trait]
impl EventStore for MemoryStore {
    fn partitions(&self) -> u32 {
        self.config.partitions
    }

    async fn append(&self, mut request: AppendRequest) -> Result<AppendResult, StoreError> {
        if request.events.is_empty() {
            return Err(StoreError::Invalid(
                "an append needs at least one event".into(),
            ));
        }
        let partition = partition_of(&request.stream, self.config.partitions);
        let events = std::mem::take(&mut request.events);
        let mut inner = self.lock();
        let inner = &mut *inner;
        let now = Instant::now();
        if let Some(idem) = &request.idempotency {
            let k = (request.stream.clone(), idem.key.clone());
            if let Some(prev) = inner.idempotency.get(&k).filter(|p| p.expires > now) {
                if prev.fingerprint != idem.fingerprint {
                    return Err(StoreError::IdempotencyKeyReused {
                        key: idem.key.clone(),
                    });
                }
                let mut result = prev.result.clone();
                result.replayed = true;
                return Ok(result);
            }
        }
        let current = inner
            .streams
            .get(&request.stream)
            .map_or(0, |s| s.entries.len() as u64);
        if !request.expected.matches(current) {
            return Err(StoreError::Conflict {
                stream: request.stream,
                expected: request.expected,
                actual: current,
            });
        }
        inner
            .queue
            .check(partition, &request.stream, &request.queue)?;
        let log = &mut inner.logs[partition as usize];
        let stream = match inner.streams.get_mut(&request.stream) {
            Some(s) => s,
            None => inner
                .streams
                .entry(request.stream.clone())
                .or_insert_with(|| StreamState::named(&request.stream)),
        };
        let mut positions = Vec::with_capacity(events.len());
        for (i, event) in events.into_iter().enumerate() {
            let version = current + 1 + i as u64;
            let event_type = inner.types.intern(&event.event_type);
            let id = next_id(log.last().map(|e| e.id));
            stream.entries.push(log.len());
            log.push(Entry {
                id,
                event: Box::new(Stored::new(event, stream.name.clone(), event_type, version)),
            });
            positions.push(Position::new(partition, id));
        }
        let result = AppendResult {
            stream: request.stream,
            first_version: current + 1,
            last_version: current + positions.len() as u64,
            positions,
            replayed: false,
        };
        inner.queue.apply(
            partition,
            &result.stream,
            result.last_version,
            &request.queue,
        );
        if let Some(idem) = request.idempotency {
            let retention = self.config.idempotency_retention;
            inner.idempotency.insert(
                (result.stream.clone(), idem.key),
                Idem {
                    fingerprint: idem.fingerprint,
                    result: result.clone(),
                    expires: now + retention,
                },
            );
            inner.appends_since_sweep += 1;
            if inner.appends_since_sweep > 10_000 {
                inner.appends_since_sweep = 0;
                inner.idempotency.retain(|_, v| v.expires > now);
            }
        }
        self.shared.appended.notify_waiters();
        Ok(result)
    }

    async fn recall(
        &self,
        stream: &str,
        idempotency: &Idempotency,
    ) -> Result<Option<AppendResult>, StoreError> {
        let inner = self.lock();
        let k = (stream.to_owned(), idempotency.key.clone());
        match inner
            .idempotency
            .get(&k)
            .filter(|p| p.expires > Instant::now())
        {
            None => Ok(None),
            Some(prev) if prev.fingerprint != idempotency.fingerprint => {
                Err(StoreError::IdempotencyKeyReused {
                    key: idempotency.key.clone(),
                })
            }
            Some(prev) => {
                let mut result = prev.result.clone();
                result.replayed = true;
                Ok(Some(result))
            }
        }
    }

    async fn reserve(&self, name: &str, value: &str) -> Result<String, StoreError> {
        let now = Instant::now();
        let retention = self.config.idempotency_retention;
        let mut inner = self.lock();
        if inner.reservations.len() > 10_000 {
            inner.reservations.retain(|_, (_, expires)| *expires > now);
        }
        match inner.reservations.get(name) {
            Some((held, expires)) if *expires > now => Ok(held.clone()),
            _ => {
                inner
                    .reservations
                    .insert(name.to_owned(), (value.to_owned(), now + retention));
                Ok(value.to_owned())
            }
        }
    }

    async fn stream_version(&self, stream: &str) -> Result<u64, StoreError> {
        Ok(self
            .lock()
            .streams
            .get(stream)
            .map_or(0, |s| s.entries.len() as u64))
    }

    async fn read_stream(
        &self,
        stream: &str,
        from_version: u64,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let inner = self.lock();
        let Some(s) = inner.streams.get(stream) else {
            return Ok(Vec::new());
        };
        let partition = partition_of(stream, self.config.partitions);
        let log = &inner.logs[partition as usize];
        let start = from_version.max(1) as usize - 1;
        s.entries
            .iter()
            .skip(start)
            .take(limit)
            .map(|&i| recorded(partition, &log[i]))
            .collect()
    }

    async fn read_partition(
        &self,
        partition: u32,
        after: LogId,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let inner = self.lock();
        let log = inner.logs.get(partition as usize).ok_or_else(|| {
            StoreError::Invalid(format!(
                "partition {partition} does not exist (store has {})",
                self.config.partitions
            ))
        })?;
        let start = log.partition_point(|e| e.id <= after);
        log[start..]
            .iter()
            .take(limit)
            .map(|e| recorded(partition, e))
            .collect()
    }

    async fn partition_len(&self, partition: u32) -> Result<u64, StoreError> {
        Ok(self
            .lock()
            .logs
            .get(partition as usize)
            .map_or(0, |l| l.len() as u64))
    }

    async fn head(&self) -> Result<Cursor, StoreError> {
        let inner = self.lock();
        Ok(Cursor::from_ids(
            inner
                .logs
                .iter()
                .map(|l| l.last().map_or(LogId::ZERO, |e| e.id))
                .collect(),
        ))
    }

    async fn claim(&self, partition: u32, spec: &ClaimSpec) -> Result<Option<Claimed>, StoreError> {
        if partition >= self.config.partitions {
            return Err(StoreError::Invalid(format!(
                "partition {partition} does not exist"
            )));
        }
        let mut inner = self.lock();
        let inner = &mut *inner;
        inner.queue.promote(partition, spec.now_ms);
        loop {
            let Some(picked) = inner
                .queue
                .pick(partition, &spec.capabilities, spec.gpu_memory)
            else {
                return Ok(None);
            };
            let Some(state) = inner.streams.get_mut(&picked.stream) else {
                continue;
            };
            let version = state.entries.len() as u64;
            if version != picked.version {
                // The index is stale for this entry (cannot happen while every append
                // keeps it, but a claim must never assign on a stale view): drop it.
                continue;
            }
            let job_id = picked.stream.strip_prefix(STREAM_PREFIX).unwrap_or("");
            let json = fill_template(&spec.template, job_id, version + 1, picked.attempt);
            let log = &mut inner.logs[partition as usize];
            let id = next_id(log.last().map(|e| e.id));
            let envelope = crate::codec::decode(json.as_bytes(), &Position::new(partition, id))?;
            let event_type = inner.types.intern(&envelope.event_type);
            state.entries.push(log.len());
            log.push(Entry {
                id,
                event: Box::new(Stored::from_envelope(
                    envelope,
                    state.name.clone(),
                    event_type,
                )),
            });
            inner.queue.apply(
                partition,
                &picked.stream,
                version + 1,
                &[crate::queue::QueueOp::Lease {
                    worker_id: spec.worker_id.clone(),
                    machine_id: spec.machine_id.clone(),
                    attempt: picked.attempt,
                    lease_ms: spec.lease_ms,
                    deadline_ms: spec.now_ms + spec.lease_ms,
                }],
            );
            let history = state
                .entries
                .iter()
                .map(|&i| recorded(partition, &log[i]))
                .collect::<Result<Vec<_>, _>>()?;
            self.shared.appended.notify_waiters();
            return Ok(Some(Claimed {
                stream: picked.stream,
                history,
            }));
        }
    }

    async fn renew_lease(
        &self,
        stream: &str,
        worker_id: &str,
        now_ms: u64,
    ) -> Result<Option<u64>, StoreError> {
        let p = partition_of(stream, self.config.partitions);
        Ok(self.lock().queue.renew(p, stream, Some(worker_id), now_ms))
    }

    async fn lease(&self, stream: &str) -> Result<Option<LeaseEntry>, StoreError> {
        let p = partition_of(stream, self.config.partitions);
        Ok(self.lock().queue.lease(p, stream))
    }

    async fn due_leases(
        &self,
        partition: u32,
        now_ms: u64,
        limit: usize,
    ) -> Result<Vec<LeaseEntry>, StoreError> {
        if partition >= self.config.partitions {
            return Ok(Vec::new());
        }
        Ok(self.lock().queue.due(partition, now_ms, limit))
    }

    async fn leases_of_machine(&self, machine_id: &str) -> Result<Vec<LeaseEntry>, StoreError> {
        Ok(self.lock().queue.of_machine(machine_id))
    }

    async fn ready_hint(&self, now_ms: u64) -> Result<Vec<bool>, StoreError> {
        Ok(self.lock().queue.hint(now_ms))
    }

    async fn tail(&self, from: Cursor) -> Result<EventStream, StoreError> {
        // The tail reads batches under the lock and sleeps on a notification when caught
        // up: no per-event task, and a slow consumer only delays itself.
        let shared = self.shared.clone();
        // After an undecodable entry the stream yields the error and ends, like the Redis
        // tail: moving on past it would skip an event silently.
        let stream = futures::stream::unfold(
            (
                from,
                Vec::<Result<RecordedEvent, StoreError>>::new(),
                shared,
                false,
            ),
            |(mut cursor, mut buf, shared, stopped)| async move {
                if stopped {
                    return None;
                }
                loop {
                    if let Some(item) = buf.pop() {
                        let failed = match &item {
                            Ok(ev) => {
                                cursor.advance(ev.position);
                                false
                            }
                            Err(_) => true,
                        };
                        return Some((item, (cursor, buf, shared, failed)));
                    }
                    let notified = shared.appended.notified();
                    tokio::pin!(notified);
                    // Register before reading so an append between read and wait is seen.
                    notified.as_mut().enable();
                    let mut batch = shared.read_after(&cursor, 1000);
                    if batch.is_empty() {
                        let _ = tokio::time::timeout(Duration::from_millis(500), notified).await;
                        continue;
                    }
                    batch.reverse();
                    buf = batch;
                }
            },
        );
        Ok(Box::pin(stream))
    }
}
