//! `jobsource events`: print envelopes from the log, filtered, optionally following.

use clap::Args;
use futures::StreamExt;
use jobsource_eventstore::{EventStore, Offset, RecordedEvent};

use jobsource_app::read::events::glob_match;

use super::StoreArgs;

/// Options of `jobsource events`.
#[derive(Debug, Clone, Args)]
pub struct EventsArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// Only this stream (e.g. `job-<uuid>`).
    #[arg(long)]
    stream: Option<String>,
    /// Only types matching this glob (`*` matches any run of characters, e.g. `job_*`).
    #[arg(long)]
    types: Option<String>,
    /// Start after this offset: `start`, `end`, an RFC 3339 time or `p@ms-seq,...`.
    #[arg(long, default_value = "start")]
    from: String,
    /// Keep following new events.
    #[arg(long)]
    follow: bool,
    /// One envelope per line as JSON.
    #[arg(long)]
    json: bool,
}

fn print(e: &RecordedEvent, json: bool) {
    let env = &e.envelope;
    if json {
        println!("{}", jobsource_eventstore::codec::encode(env));
    } else {
        println!(
            "{:<24} {} {:<44} v{:<4} {:<24} corr={}",
            e.position.to_string(),
            env.occurred_at
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            env.stream,
            env.version,
            env.event_type,
            env.correlation_id
        );
    }
}

/// Runs the command.
pub async fn run(args: EventsArgs) -> anyhow::Result<()> {
    let store = args.store.connect().await?;
    let offset: Offset = args.from.parse()?;
    let keep = |e: &RecordedEvent| {
        args.stream
            .as_deref()
            .is_none_or(|s| e.envelope.stream == s)
            && args
                .types
                .as_deref()
                .is_none_or(|g| glob_match(g, &e.envelope.event_type))
    };
    let mut cursor = store.resolve(&offset).await?;
    // History: each partition in log order, then merged by position time.
    let mut history = Vec::new();
    for p in 0..store.partitions() {
        let mut after = cursor.after(p);
        loop {
            let batch = store.read_partition(p, after, 1000).await?;
            let Some(last) = batch.last() else { break };
            after = last.position.id;
            cursor.advance(last.position);
            history.extend(batch.into_iter().filter(|e| keep(e)));
        }
    }
    history.sort_by_key(|e| (e.position.id, e.position.partition));
    for e in &history {
        print(e, args.json);
    }
    if args.follow {
        let mut tail = store.tail(cursor).await?;
        while let Some(item) = tail.next().await {
            let e = item?;
            if keep(&e) {
                print(&e, args.json);
            }
        }
    }
    Ok(())
}
