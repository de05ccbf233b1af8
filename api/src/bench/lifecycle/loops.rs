//! The producer and worker loops of `bench lifecycle` and what they share: per-stage
//! call latencies and failures, the end-to-end histogram, completions seen.

use super::*;

/// The request stages whose failures are counted.
#[derive(Debug, Clone, Copy)]
pub(super) enum Stage {
    Submit = 0,
    Claim = 1,
    Progress = 2,
    Complete = 3,
}

pub(super) const STAGES: [&str; 4] = ["submit", "claim", "progress", "complete"];

/// What every producer and worker shares.
pub(super) struct Shared {
    pub(super) http: reqwest::Client,
    pub(super) base: String,
    pub(super) job_type: String,
    pub(super) blob: String,
    pub(super) jobs: u64,
    pub(super) no_next: bool,
    pub(super) wait_ms: u64,
    pub(super) next_wait_ms: u64,
    pub(super) deadline: Instant,
    /// Submits started (the producers' shared counter).
    pub(super) next_submit: AtomicU64,
    /// Submits answered 201.
    pub(super) submitted: AtomicU64,
    pub(super) producers_done: AtomicBool,
    /// Complete calls answered 200.
    pub(super) completed: AtomicU64,
    pub(super) empty_claims: AtomicU64,
    pub(super) duplicate_claims: AtomicU64,
    pub(super) claimed: Mutex<HashSet<Uuid>>,
    pub(super) errors: [AtomicU64; 4],
}

impl Shared {
    /// Whether the workers are done: every job that was (or may still be) submitted has
    /// completed, or the time is up.
    pub(super) fn finished(&self) -> bool {
        let target = if self.producers_done.load(Ordering::SeqCst) {
            self.submitted.load(Ordering::SeqCst)
        } else {
            self.jobs
        };
        self.completed.load(Ordering::SeqCst) >= target || Instant::now() >= self.deadline
    }

    /// Counts a failure; prints the first few of each stage.
    pub(super) fn fail(&self, stage: Stage, detail: impl FnOnce() -> String) {
        if self.errors[stage as usize].fetch_add(1, Ordering::Relaxed) < 5 {
            eprintln!("{} failed: {}", STAGES[stage as usize], detail());
        }
    }

    /// Records a claimed job (counting one already handed out).
    pub(super) fn note_claimed(&self, id: Uuid) {
        let fresh = self
            .claimed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id);
        if !fresh {
            self.duplicate_claims.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(super) fn claim_body(&self, wait_ms: u64) -> Value {
        json!({"machine_id": "m1", "capabilities": [self.job_type], "wait_ms": wait_ms})
    }
}

/// Latency histogram in microseconds.
pub(super) fn histogram() -> anyhow::Result<Histogram<u64>> {
    Ok(Histogram::new_with_bounds(1, 3_600_000_000, 3)?)
}

pub(super) fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

pub(super) fn ms(h: &Histogram<u64>, q: f64) -> f64 {
    if h.is_empty() {
        0.0
    } else {
        h.value_at_quantile(q) as f64 / 1000.0
    }
}

/// Latencies of the individual calls.
pub(super) struct CallTimes {
    pub(super) submit: Histogram<u64>,
    pub(super) claim: Histogram<u64>,
    pub(super) claim_empty: Histogram<u64>,
    pub(super) progress: Histogram<u64>,
    pub(super) complete: Histogram<u64>,
}

impl CallTimes {
    pub(super) fn new() -> anyhow::Result<Self> {
        Ok(CallTimes {
            submit: histogram()?,
            claim: histogram()?,
            claim_empty: histogram()?,
            progress: histogram()?,
            complete: histogram()?,
        })
    }

    pub(super) fn merge(&mut self, o: &CallTimes) -> anyhow::Result<()> {
        self.submit.add(&o.submit)?;
        self.claim.add(&o.claim)?;
        self.claim_empty.add(&o.claim_empty)?;
        self.progress.add(&o.progress)?;
        self.complete.add(&o.complete)?;
        Ok(())
    }
}

/// One producer's submits: job id and the time just before its call, and the time of its
/// first call.
pub(super) struct Produced {
    pub(super) submits: Vec<(Uuid, Instant)>,
    pub(super) first: Option<Instant>,
    pub(super) times: CallTimes,
}

/// One worker's completes: job id and the time its complete answered 200.
pub(super) struct Worked {
    pub(super) completes: Vec<(Uuid, Instant)>,
    pub(super) times: CallTimes,
}

pub(super) async fn producer(s: Arc<Shared>) -> anyhow::Result<Produced> {
    let mut out = Produced {
        submits: Vec::new(),
        first: None,
        times: CallTimes::new()?,
    };
    let body = serde_json::to_vec(&json!({"type": s.job_type, "parameters": {"blob": s.blob}}))?;
    let url = format!("{}/v1/jobs", s.base);
    while Instant::now() < s.deadline && s.next_submit.fetch_add(1, Ordering::SeqCst) < s.jobs {
        let t = Instant::now();
        out.first.get_or_insert(t);
        let res = s
            .http
            .post(&url)
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await;
        match res {
            Ok(r) if r.status() == reqwest::StatusCode::CREATED => {
                let v: Value = match r.json().await {
                    Ok(v) => v,
                    Err(e) => {
                        s.fail(Stage::Submit, || format!("201 body: {e}"));
                        continue;
                    }
                };
                out.times.submit.saturating_record(micros(t.elapsed()));
                match v["job_id"].as_str().and_then(|id| id.parse::<Uuid>().ok()) {
                    Some(id) => {
                        out.submits.push((id, t));
                        s.submitted.fetch_add(1, Ordering::SeqCst);
                    }
                    None => s.fail(Stage::Submit, || format!("201 without job_id: {v}")),
                }
            }
            Ok(r) => {
                let status = r.status();
                let text = r.text().await.unwrap_or_default();
                s.fail(Stage::Submit, || format!("{status} {text}"));
            }
            Err(e) => s.fail(Stage::Submit, || e.to_string()),
        }
    }
    Ok(out)
}

/// The job id of a claim answer (`{job: {id}, version, position}`).
pub(super) fn claimed_id(v: &Value) -> Option<Uuid> {
    v["job"]["id"].as_str()?.parse().ok()
}

pub(super) async fn worker(s: Arc<Shared>, i: usize) -> anyhow::Result<Worked> {
    let mut out = Worked {
        completes: Vec::new(),
        times: CallTimes::new()?,
    };
    let worker_id = format!("w{i}");
    let claim_url = format!("{}/v1/workers/{worker_id}/claim", s.base);
    let claim_body = serde_json::to_vec(&s.claim_body(s.wait_ms))?;
    let progress_body = serde_json::to_vec(&json!({"progress": 50, "worker_id": worker_id}))?;
    let complete_body = serde_json::to_vec(&if s.no_next {
        json!({"result": {"ok": true}, "worker_id": worker_id})
    } else {
        json!({"result": {"ok": true}, "worker_id": worker_id, "next": s.claim_body(s.next_wait_ms)})
    })?;
    let mut current: Option<Uuid> = None;
    while !s.finished() {
        let id = match current.take() {
            Some(id) => id,
            None => {
                let t = Instant::now();
                let res = s
                    .http
                    .post(&claim_url)
                    .header("content-type", "application/json")
                    .body(claim_body.clone())
                    .send()
                    .await;
                match res {
                    Ok(r) if r.status() == reqwest::StatusCode::NO_CONTENT => {
                        out.times.claim_empty.saturating_record(micros(t.elapsed()));
                        s.empty_claims.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    Ok(r) if r.status() == reqwest::StatusCode::OK => {
                        let v: Value = r.json().await.unwrap_or(Value::Null);
                        out.times.claim.saturating_record(micros(t.elapsed()));
                        match claimed_id(&v) {
                            Some(id) => id,
                            None => {
                                s.fail(Stage::Claim, || format!("200 without job.id: {v}"));
                                tokio::time::sleep(Duration::from_millis(5)).await;
                                continue;
                            }
                        }
                    }
                    Ok(r) => {
                        let status = r.status();
                        let text = r.text().await.unwrap_or_default();
                        s.fail(Stage::Claim, || format!("{status} {text}"));
                        tokio::time::sleep(Duration::from_millis(5)).await;
                        continue;
                    }
                    Err(e) => {
                        s.fail(Stage::Claim, || e.to_string());
                        tokio::time::sleep(Duration::from_millis(5)).await;
                        continue;
                    }
                }
            }
        };
        s.note_claimed(id);

        let t = Instant::now();
        let res = s
            .http
            .post(format!("{}/v1/jobs/{id}/progress", s.base))
            .header("content-type", "application/json")
            .body(progress_body.clone())
            .send()
            .await;
        match res {
            Ok(r) if r.status() == reqwest::StatusCode::OK => {
                let _ = r.bytes().await;
                out.times.progress.saturating_record(micros(t.elapsed()));
            }
            Ok(r) => {
                let status = r.status();
                let text = r.text().await.unwrap_or_default();
                s.fail(Stage::Progress, || format!("{id}: {status} {text}"));
                continue;
            }
            Err(e) => {
                s.fail(Stage::Progress, || format!("{id}: {e}"));
                continue;
            }
        }

        let t = Instant::now();
        let res = s
            .http
            .post(format!("{}/v1/jobs/{id}/complete", s.base))
            .header("content-type", "application/json")
            .body(complete_body.clone())
            .send()
            .await;
        match res {
            Ok(r) if r.status() == reqwest::StatusCode::OK => {
                let done = Instant::now();
                let v: Value = r.json().await.unwrap_or(Value::Null);
                out.times.complete.saturating_record(micros(t.elapsed()));
                out.completes.push((id, done));
                s.completed.fetch_add(1, Ordering::SeqCst);
                if !s.no_next {
                    match v.get("next") {
                        Some(Value::Null) => {
                            s.empty_claims.fetch_add(1, Ordering::Relaxed);
                        }
                        Some(next) => match claimed_id(next) {
                            Some(n) => current = Some(n),
                            None => s.fail(Stage::Complete, || format!("{id}: bad next: {next}")),
                        },
                        None => s.fail(Stage::Complete, || format!("{id}: 200 without next: {v}")),
                    }
                }
            }
            Ok(r) => {
                let status = r.status();
                let text = r.text().await.unwrap_or_default();
                s.fail(Stage::Complete, || format!("{id}: {status} {text}"));
            }
            Err(e) => s.fail(Stage::Complete, || format!("{id}: {e}")),
        }
    }
    Ok(out)
}
