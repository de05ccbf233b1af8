//! The [`EventStore`] implementation over the partition streams, the stream indexes and
//! the Lua scripts.

use super::*;

#[async_trait]
impl EventStore for RedisStore {
    fn partitions(&self) -> u32 {
        self.config.partitions
    }

    async fn append(&self, request: AppendRequest) -> Result<AppendResult, StoreError> {
        if request.events.is_empty() {
            return Err(StoreError::Invalid(
                "an append needs at least one event".into(),
            ));
        }
        let p = partition_of(&request.stream, self.config.partitions);
        let mut inv = self.append_script.prepare_invoke();
        inv.key(self.keys.versions(p, &request.stream))
            .key(self.keys.history(p, &request.stream))
            .key(self.keys.log(p));
        // KEYS[4] is only touched when a fingerprint is passed; without a key it is a
        // name in the same slot that is never read or written.
        match &request.idempotency {
            Some(idem) => inv.key(self.keys.idempotency(p, &request.stream, &idem.key)),
            None => inv.key(self.keys.idempotency(p, &request.stream, "-")),
        };
        for k in queue::index_keys(self, p) {
            inv.key(k);
        }
        let (kind, n) = match request.expected {
            ExpectedVersion::Any => ("any", 0),
            ExpectedVersion::NoStream => ("none", 0),
            ExpectedVersion::Exact(n) => ("exact", n),
        };
        inv.arg(&request.stream)
            .arg(kind)
            .arg(n)
            .arg(
                request
                    .idempotency
                    .as_ref()
                    .map_or("", |i| i.fingerprint.as_str()),
            )
            .arg(
                // PX 0 is an error, and an error after the writes would report a failure
                // for an append that happened: clamp to at least 1 ms.
                (self.config.idempotency_retention.as_millis() as u64).max(1),
            )
            .arg(request.events.len());
        match request.expected {
            // The version of every event is known unless the caller said Any (a mismatch
            // is refused by the script before anything is written), so the envelope is
            // sent whole and the script does no string building.
            ExpectedVersion::NoStream | ExpectedVersion::Exact(_) => {
                inv.arg("j");
                for (i, e) in request.events.iter().enumerate() {
                    let split = codec::encode_split(&request.stream, e);
                    inv.arg(split.join(n + 1 + i as u64));
                }
            }
            ExpectedVersion::Any => {
                inv.arg("s");
                for e in &request.events {
                    let split = codec::encode_split(&request.stream, e);
                    inv.arg(split.head).arg(split.tail);
                }
            }
        }
        queue::push_ops(
            &mut inv,
            &self.keys.tag(p),
            crate::queue::now_ms(),
            &request.queue,
        );
        let mut conn = self.conn.clone();
        let reply: Vec<String> = inv
            .invoke_async(&mut conn)
            .await
            .map_err(|e| self.map_err(e))?;
        let unexpected = || StoreError::Backend(format!("unexpected append reply {reply:?}"));
        match reply.first().map(String::as_str) {
            Some("OK") => {
                let first: u64 = reply
                    .get(1)
                    .and_then(|v| v.parse().ok())
                    .ok_or_else(unexpected)?;
                let positions = parse_positions(p, reply[2..].iter().map(String::as_str))
                    .ok_or_else(unexpected)?;
                Ok(AppendResult {
                    stream: request.stream,
                    first_version: first,
                    last_version: first + positions.len() as u64 - 1,
                    positions,
                    replayed: false,
                })
            }
            Some("CONFLICT") => Err(StoreError::Conflict {
                actual: reply
                    .get(1)
                    .and_then(|v| v.parse().ok())
                    .ok_or_else(unexpected)?,
                stream: request.stream,
                expected: request.expected,
            }),
            Some("NOT_DUE") => Err(StoreError::LeaseNotDue {
                stream: request.stream,
            }),
            Some("IDEM_MISMATCH") => Err(StoreError::IdempotencyKeyReused {
                key: request.idempotency.map(|i| i.key).unwrap_or_default(),
            }),
            Some("REPLAY") => {
                let record = reply.get(1).ok_or_else(unexpected)?;
                parse_record(p, request.stream, record).ok_or_else(unexpected)
            }
            _ => Err(unexpected()),
        }
    }

    async fn recall(
        &self,
        stream: &str,
        idempotency: &Idempotency,
    ) -> Result<Option<AppendResult>, StoreError> {
        let p = partition_of(stream, self.config.partitions);
        let mut conn = self.conn.clone();
        let record: Option<String> = conn
            .get(self.keys.idempotency(p, stream, &idempotency.key))
            .await
            .map_err(|e| self.map_err(e))?;
        let Some(record) = record else {
            return Ok(None);
        };
        let bad = || StoreError::Backend(format!("unreadable idempotency record for {stream}"));
        let (fingerprint, rest) = record.split_once('\n').ok_or_else(bad)?;
        if fingerprint != idempotency.fingerprint {
            return Err(StoreError::IdempotencyKeyReused {
                key: idempotency.key.clone(),
            });
        }
        parse_record(p, stream.to_owned(), rest)
            .map(Some)
            .ok_or_else(bad)
    }

    async fn reserve(&self, name: &str, value: &str) -> Result<String, StoreError> {
        let mut conn = self.conn.clone();
        // SET NX GET: sets when absent and returns the previous value either way (Redis 7).
        let previous: Option<String> = redis::cmd("SET")
            .arg(self.keys.reservation(name))
            .arg(value)
            .arg("NX")
            .arg("GET")
            .arg("PX")
            .arg((self.config.idempotency_retention.as_millis() as u64).max(1))
            .query_async(&mut conn)
            .await
            .map_err(|e| self.map_err(e))?;
        Ok(previous.unwrap_or_else(|| value.to_owned()))
    }

    async fn stream_version(&self, stream: &str) -> Result<u64, StoreError> {
        let p = partition_of(stream, self.config.partitions);
        let mut conn = self.conn.clone();
        let v: Option<u64> = conn
            .hget(self.keys.versions(p, stream), stream)
            .await
            .map_err(|e| self.map_err(e))?;
        Ok(v.unwrap_or(0))
    }

    async fn read_stream(
        &self,
        stream: &str,
        from_version: u64,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let p = partition_of(stream, self.config.partitions);
        let first = from_version.max(1) - 1;
        let last = first + limit as u64 - 1;
        let mut conn = self.conn.clone();
        let flat: Vec<Vec<u8>> = self
            .read_script
            .key(self.keys.history(p, stream))
            .key(self.keys.log(p))
            .arg(first)
            .arg(last)
            .invoke_async(&mut conn)
            .await
            .map_err(|e| self.map_err(e))?;
        let mut out = Vec::with_capacity(flat.len() / 2);
        for (i, pair) in flat.chunks(2).enumerate() {
            let version = first + i as u64 + 1;
            let at = format!("{stream}@{version}");
            let id: LogId = std::str::from_utf8(&pair[0])
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| DecodeError {
                    at: at.clone(),
                    message: "history holds an invalid log id".into(),
                })?;
            let position = Position::new(p, id);
            let json = pair
                .get(1)
                .filter(|j| !j.is_empty())
                .ok_or_else(|| DecodeError {
                    at: format!("{at} ({position})"),
                    message: "log entry missing".into(),
                })?;
            let envelope = codec::decode(json, &position)?;
            out.push(RecordedEvent { position, envelope });
        }
        Ok(out)
    }

    async fn read_partition(
        &self,
        partition: u32,
        after: LogId,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        if partition >= self.config.partitions {
            return Err(StoreError::Invalid(format!(
                "partition {partition} does not exist (store has {})",
                self.config.partitions
            )));
        }
        let mut conn = self.conn.clone();
        let entries: Value = redis::cmd("XRANGE")
            .arg(self.keys.log(partition))
            .arg(format!("({after}"))
            .arg("+")
            .arg("COUNT")
            .arg(limit)
            .query_async(&mut conn)
            .await
            .map_err(|e| self.map_err(e))?;
        match entries {
            Value::Array(items) => items
                .iter()
                .map(|item| decode_entry(partition, item))
                .collect(),
            Value::Nil => Ok(Vec::new()),
            other => Err(StoreError::Backend(format!(
                "unexpected XRANGE reply {other:?}"
            ))),
        }
    }

    async fn partition_len(&self, partition: u32) -> Result<u64, StoreError> {
        let mut conn = self.conn.clone();
        conn.xlen(self.keys.log(partition))
            .await
            .map_err(|e| self.map_err(e))
    }

    async fn head(&self) -> Result<Cursor, StoreError> {
        let mut pipe = redis::pipe();
        for p in 0..self.config.partitions {
            pipe.cmd("XREVRANGE")
                .arg(self.keys.log(p))
                .arg("+")
                .arg("-")
                .arg("COUNT")
                .arg(1);
        }
        let mut conn = self.conn.clone();
        let replies: Vec<Vec<(String, Value)>> = pipe
            .query_async(&mut conn)
            .await
            .map_err(|e| self.map_err(e))?;
        let ids = replies
            .iter()
            .map(|r| {
                r.first()
                    .map(|(id, _)| id.parse().unwrap_or(LogId::ZERO))
                    .unwrap_or(LogId::ZERO)
            })
            .collect();
        Ok(Cursor::from_ids(ids))
    }

    async fn tail(&self, from: Cursor) -> Result<EventStream, StoreError> {
        tail::spawn(self.clone(), from).await
    }

    async fn claim(
        &self,
        partition: u32,
        spec: &crate::queue::ClaimSpec,
    ) -> Result<Option<crate::queue::Claimed>, StoreError> {
        self.claim_in(partition, spec).await
    }

    async fn renew_lease(
        &self,
        stream: &str,
        worker_id: &str,
        now_ms: u64,
    ) -> Result<Option<u64>, StoreError> {
        self.renew_in(stream, worker_id, now_ms).await
    }

    async fn lease(&self, stream: &str) -> Result<Option<crate::queue::LeaseEntry>, StoreError> {
        self.lease_of(stream).await
    }

    async fn due_leases(
        &self,
        partition: u32,
        now_ms: u64,
        limit: usize,
    ) -> Result<Vec<crate::queue::LeaseEntry>, StoreError> {
        self.due_in(partition, now_ms, limit).await
    }

    async fn leases_of_machine(
        &self,
        machine_id: &str,
    ) -> Result<Vec<crate::queue::LeaseEntry>, StoreError> {
        self.machine_leases(machine_id).await
    }

    async fn ready_hint(&self, now_ms: u64) -> Result<Vec<bool>, StoreError> {
        self.hint(now_ms).await
    }
}
