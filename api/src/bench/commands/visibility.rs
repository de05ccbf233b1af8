//! The read-model visibility probe of `bench commands`: how long after its `201` a
//! submitted job is visible in the read model (sampled, bounded in flight).

use super::*;

/// Result of the visibility phase.
#[derive(Debug, Default)]
pub(super) struct Visibility {
    /// Delays from a submit's answer until the read model showed the job.
    pub(super) lat: Latencies,
    /// Submits seen in the read model within 2 s.
    pub(super) samples: u64,
    /// Submits not seen within 2 s.
    pub(super) misses: u64,
    /// Submits that failed or did not answer 201 with a position (not probed).
    pub(super) submit_errors: u64,
    /// Submits per second actually sent (below the target rate when the in-flight cap of
    /// [`VISIBILITY_IN_FLIGHT`] requests held the sender back).
    pub(super) rate: f64,
}

/// At most this many phase-2 submits in flight: an open loop against a server that falls
/// behind would otherwise open a connection per request until file descriptors run out.
pub(super) const VISIBILITY_IN_FLIGHT: usize = 1024;

/// Open-loop submits at `visibility_rate`; returns delays, samples and misses.
///
/// With Redis, one prober reads the `redis` projection's checkpoint hash every millisecond
/// and resolves every answered submit whose position it has passed (the checkpoint moves in
/// the same script call that writes the job's hash, so passing it means the hash is
/// there); one call per millisecond keeps the probe from loading Redis itself. With
/// `--probe exists` it instead sends one pipeline of `EXISTS <rm>:job:<id>` for every
/// pending submit each millisecond.
pub(super) async fn visibility(
    args: &CommandsArgs,
    base: &str,
    rm: &str,
    probe_redis: bool,
) -> anyhow::Result<Visibility> {
    use jobsource_eventstore::{LogId, Position};
    use std::sync::Mutex;

    let http = client(256)?;
    let pending: Arc<Mutex<Vec<(Instant, Position, String)>>> = Arc::new(Mutex::new(Vec::new()));
    let per_ms = (args.visibility_rate as f64 / 1000.0).max(0.001);
    let total = args.visibility_rate * args.visibility_seconds;
    let finished = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut ticker = tokio::time::interval(Duration::from_millis(1));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let started = Instant::now();
    let mut sent = 0u64;
    let mut senders = Vec::with_capacity(total as usize);
    let keys = jobsource_projections::redis::model::RmKeys::new(rm);
    let prober = {
        let (pending, finished, http, base) = (
            pending.clone(),
            finished.clone(),
            http.clone(),
            base.to_owned(),
        );
        let checkpoint_key = keys.checkpoint();
        let exists = args.probe == Probe::Exists;
        let mut redis = if probe_redis {
            Some(jobsource_eventstore::redis::RedisConn::open(&args.redis.target()?).await?)
        } else {
            None
        };
        tokio::spawn(async move {
            let mut lat = Latencies::default();
            let (mut samples, mut misses) = (0u64, 0u64);
            loop {
                let all_sent = finished.load(Ordering::SeqCst);
                let batch: Vec<(Instant, Position, String)> = {
                    let mut p = pending
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    std::mem::take(&mut *p)
                };
                // Which answered submits the read model shows now.
                let visible: Vec<bool> = match &mut redis {
                    Some(_) if batch.is_empty() => Vec::new(),
                    Some(conn) if exists => {
                        let mut pipe = redis::pipe();
                        for (_, _, id) in &batch {
                            pipe.exists(keys.job(id));
                        }
                        pipe.query_async(conn).await.unwrap_or_default()
                    }
                    Some(conn) => {
                        let cp: std::collections::HashMap<u32, String> = redis::cmd("HGETALL")
                            .arg(&checkpoint_key)
                            .query_async(conn)
                            .await
                            .unwrap_or_default();
                        batch
                            .iter()
                            .map(|(_, pos, _)| {
                                cp.get(&pos.partition)
                                    .and_then(|c| c.parse::<LogId>().ok())
                                    .is_some_and(|c| c >= pos.id)
                            })
                            .collect()
                    }
                    None => {
                        let mut v = Vec::with_capacity(batch.len());
                        for (_, _, id) in &batch {
                            v.push(
                                http.get(format!("{base}/v1/jobs/{id}"))
                                    .send()
                                    .await
                                    .is_ok_and(|r| r.status().is_success()),
                            );
                        }
                        v
                    }
                };
                let mut keep = Vec::new();
                for ((t, pos, id), seen) in batch.into_iter().zip(visible) {
                    if seen {
                        samples += 1;
                        lat.record(t.elapsed().as_micros());
                    } else if t.elapsed() > Duration::from_secs(2) {
                        misses += 1;
                    } else {
                        keep.push((t, pos, id));
                    }
                }
                let left = {
                    let mut p = pending
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    p.extend(keep);
                    p.len()
                };
                if all_sent && left == 0 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            (lat, samples, misses)
        })
    };
    let in_flight = Arc::new(tokio::sync::Semaphore::new(VISIBILITY_IN_FLIGHT));
    let submit_errors = Arc::new(AtomicU64::new(0));
    while sent < total {
        ticker.tick().await;
        let due = ((started.elapsed().as_secs_f64() * 1000.0) * per_ms) as u64;
        while sent < due.min(total) {
            sent += 1;
            let permit = in_flight.clone().acquire_owned().await?;
            let (http, base, pending) = (http.clone(), base.to_owned(), pending.clone());
            let submit_errors = submit_errors.clone();
            senders.push(tokio::spawn(async move {
                let _permit = permit;
                let res = http
                    .post(format!("{base}/v1/jobs"))
                    .header("content-type", "application/json")
                    .body(BODY)
                    .send()
                    .await;
                let body: Option<Value> = match res {
                    Ok(r) if r.status() == reqwest::StatusCode::CREATED => r.json().await.ok(),
                    Ok(r) => {
                        if submit_errors.fetch_add(1, Ordering::Relaxed) == 0 {
                            let status = r.status();
                            eprintln!(
                                "first visibility-phase error: {status} {}",
                                r.text().await.unwrap_or_default()
                            );
                        }
                        return;
                    }
                    Err(e) => {
                        if submit_errors.fetch_add(1, Ordering::Relaxed) == 0 {
                            eprintln!("first visibility-phase error: {e}");
                        }
                        return;
                    }
                };
                let at = Instant::now();
                let parsed = body.as_ref().and_then(|b| {
                    Some((
                        b["position"].as_str()?.parse::<Position>().ok()?,
                        b["job_id"].as_str()?.to_owned(),
                    ))
                });
                match parsed {
                    Some((pos, id)) => pending
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .push((at, pos, id)),
                    None => {
                        if submit_errors.fetch_add(1, Ordering::Relaxed) == 0 {
                            eprintln!("first visibility-phase error: 201 without job_id/position");
                        }
                    }
                }
            }));
        }
    }
    let rate = sent as f64 / started.elapsed().as_secs_f64();
    for s in senders {
        s.await?;
    }
    // Every submit has answered; the prober resolves what is pending (or times it out).
    finished.store(true, Ordering::SeqCst);
    let (lat, samples, misses) = prober.await?;
    Ok(Visibility {
        lat,
        samples,
        misses,
        submit_errors: submit_errors.load(Ordering::Relaxed),
        rate,
    })
}
