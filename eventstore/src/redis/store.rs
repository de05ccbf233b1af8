//! The [`EventStore`] implementation over the partition streams, the stream indexes and
//! the Lua scripts.

use super::*;

impl RedisStore {
    /// Group commit so far: (append script calls sent, append commands they carried).
    /// Their ratio is the mean batch size.
    pub fn group_commit_stats(&self) -> (u64, u64) {
        self.groups.stats()
    }
}

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
        let command = group::prepare(self, p, request);
        group::submit(self, p, command).await
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
