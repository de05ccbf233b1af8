//! The writer loops of `bench append`: the commands of each job lifecycle, appended
//! through the EventStore API with the expected version.

use super::*;

pub(super) async fn writer(
    w: u64,
    store: Arc<dyn EventStore>,
    jobs: Arc<Vec<String>>,
    (shared, slots): (
        Arc<StreamLocks<HashMap<usize, Cached>>>,
        Arc<super::chain::Slots>,
    ),
    pad: Arc<String>,
    args: AppendArgs,
) -> anyhow::Result<Totals> {
    let mut totals = Totals {
        latencies: Latencies::default(),
        conflicts: 0,
        events: 0,
    };
    let mut cache: HashMap<usize, Cached> = HashMap::new();
    let n = jobs.len() as u64;
    // Which jobs this writer works on: its own share, or a shared hot job.
    let mine: Vec<usize> = if n >= args.concurrency {
        (w..n)
            .step_by(args.concurrency as usize)
            .map(|j| j as usize)
            .collect()
    } else {
        vec![(w % n) as usize]
    };
    // A writer that owns its jobs drops a job's cached state once its lifecycle is done
    // (as an aggregate cache evicts finished aggregates); shared hot jobs stay cached.
    let owned = n >= args.concurrency;
    for j in mine {
        let stream = &jobs[j];
        loop {
            let t0 = Instant::now();
            let written = if args.chain {
                super::chain::chained_one(&store, &slots, &jobs, j, &args, &pad, &mut totals)
                    .await?
            } else if args.no_serialize {
                let cached = cache.entry(j).or_default();
                write_one(&*store, stream, cached, &args, &pad, &mut totals).await?
            } else {
                // Same-stream writers of this process queue here and share one folded
                // state, so they neither conflict nor re-read each other's events.
                let mut stripe = shared.lock(stream).await;
                let cached = stripe.entry(j).or_default();
                let written = write_one(&*store, stream, cached, &args, &pad, &mut totals).await?;
                if !written && owned {
                    stripe.remove(&j);
                }
                written
            };
            if !written {
                cache.remove(&j);
                break;
            }
            totals.latencies.record(t0.elapsed().as_micros());
            totals.events += 1;
        }
    }
    Ok(totals)
}

/// Loads, decides and appends the job's next event; false when the lifecycle is complete.
pub(super) async fn write_one(
    store: &dyn EventStore,
    stream: &str,
    cached: &mut Cached,
    args: &AppendArgs,
    pad: &str,
    totals: &mut Totals,
) -> anyhow::Result<bool> {
    let mut trust_cache = args.load == Load::Cache;
    loop {
        // Load: the authoritative version, then any events we have not folded yet.
        let version = if trust_cache {
            cached.version
        } else {
            store.stream_version(stream).await?
        };
        if version > cached.version {
            for e in store
                .read_stream(stream, cached.version + 1, 10_000)
                .await?
            {
                cached.job.apply(&job_event_from(&e.envelope)?);
                cached.version = e.envelope.version;
            }
        }
        if cached.version >= args.events_per_job {
            return Ok(false);
        }
        let command = next_command(stream, cached.version, args.events_per_job, pad);
        let events = cached.job.decide(&command)?;
        let new_events = events.iter().map(to_new_event).collect();
        let request =
            AppendRequest::new(stream, ExpectedVersion::Exact(cached.version), new_events);
        match store.append(request).await {
            Ok(r) => {
                for e in &events {
                    cached.job.apply(e);
                }
                cached.version = r.last_version;
                return Ok(true);
            }
            Err(StoreError::Conflict { .. }) => {
                totals.conflicts += 1;
                trust_cache = false;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// The lifecycle step after `version` events: submit, assign, progress..., complete.
pub(super) fn next_command(
    stream: &str,
    version: u64,
    events_per_job: u64,
    pad: &str,
) -> JobCommand {
    let progress_steps = events_per_job - 3;
    match version {
        0 => JobCommand::Submit(jobsource_domain::job::SubmitJob {
            job_id: stream
                .strip_prefix("job-")
                .and_then(|s| s.parse().ok())
                .unwrap_or_else(Uuid::now_v7),
            job_type: "text-to-image".into(),
            prompt: Some(pad.to_owned()),
            ..Default::default()
        }),
        1 => JobCommand::Assign(jobsource_domain::job::AssignJob {
            lease_expires_at: None,
            worker_id: "bench-worker".into(),
            machine_id: format!("machine-{pad}"),
        }),
        v if v < events_per_job - 1 => {
            let step = v - 1; // 1..=progress_steps
            JobCommand::ReportProgress(jobsource_domain::job::ReportProgress {
                worker_id: None,
                progress: (step * 99 / progress_steps.max(1)) as u8,
                stage: Some("render".into()),
                message: Some(pad.to_owned()),
            })
        }
        _ => JobCommand::Complete(jobsource_domain::job::CompleteJob {
            worker_id: None,
            result: json!({ "output": pad }),
            duration_ms: Some(1234),
        }),
    }
}

/// Average stored envelope size (bytes) of one job's lifecycle with this padding.
pub(super) fn envelope_bytes(events_per_job: u64, pad: &str) -> usize {
    let stream = format!("job-{}", Uuid::now_v7());
    let mut job = Job::default();
    let mut total = 0;
    for v in 0..events_per_job {
        let Ok(events) = job.decide(&next_command(&stream, v, events_per_job, pad)) else {
            break;
        };
        for e in &events {
            total += jobsource_eventstore::codec::encode_split(&stream, &to_new_event(e))
                .join(v + 1)
                .len();
            job.apply(e);
        }
    }
    total / events_per_job.max(1) as usize
}
