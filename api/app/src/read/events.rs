//! Audit/replay pages over the partition logs: `GET /v1/events`.
//!
//! A page is the next `limit` matching events in the global order (partition logs merged
//! by their time-based ids), and its cursor is one position per partition, so a client
//! can page through everything, resume after a crash, or start from a timestamp. Every
//! page reads at most a bounded number of log entries (`scan_budget`); a page may hold
//! fewer than `limit` events while its cursor still moves on, and `more` says whether the
//! log holds anything past it.

use std::collections::VecDeque;

use jobsource_eventstore::{Cursor, EventStore, RecordedEvent};

use super::QueryError;

/// True when `text` matches `glob` (`*` = any run of characters).
pub fn glob_match(glob: &str, text: &str) -> bool {
    let parts: Vec<&str> = glob.split('*').collect();
    if parts.len() == 1 {
        return glob == text;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !text.starts_with(first) || text.len() < first.len() + last.len() || !text.ends_with(last) {
        return false;
    }
    let mut rest = &text[first.len()..text.len() - last.len()];
    for mid in &parts[1..parts.len() - 1] {
        match rest.find(mid) {
            Some(i) => rest = &rest[i + mid.len()..],
            None => return false,
        }
    }
    true
}

/// Which events a page keeps.
#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    /// Type glob (`job_*`).
    pub types: Option<String>,
    /// One stream only.
    pub stream: Option<String>,
    /// One correlation id only.
    pub correlation_id: Option<String>,
}

impl EventFilter {
    fn keeps(&self, e: &RecordedEvent) -> bool {
        self.types
            .as_deref()
            .is_none_or(|g| glob_match(g, &e.envelope.event_type))
            && self
                .stream
                .as_deref()
                .is_none_or(|s| s == e.envelope.stream)
            && self
                .correlation_id
                .as_deref()
                .is_none_or(|c| c == e.envelope.correlation_id)
    }
}

/// One page of events and where the next one starts.
#[derive(Debug, Clone)]
pub struct EventPage {
    /// Matching events in order.
    pub events: Vec<RecordedEvent>,
    /// The cursor after this page.
    pub next: Cursor,
    /// Whether the log holds entries past `next` (at the time of reading).
    pub more: bool,
}

/// Reads the page after `after`.
pub async fn page(
    store: &dyn EventStore,
    after: Cursor,
    filter: &EventFilter,
    limit: usize,
    scan_budget: usize,
) -> Result<EventPage, QueryError> {
    if let Some(stream) = &filter.stream {
        return stream_page(store, stream, after, filter, limit).await;
    }
    let partitions = store.partitions();
    let chunk = limit.clamp(16, 500);
    let mut next = after;
    let mut buffers: Vec<VecDeque<RecordedEvent>> = vec![VecDeque::new(); partitions as usize];
    let mut exhausted = vec![false; partitions as usize];
    let mut events = Vec::new();
    let mut scanned = 0usize;
    while events.len() < limit && scanned < scan_budget {
        // Refill empty buffers, then take the earliest head across partitions.
        for p in 0..partitions as usize {
            if buffers[p].is_empty() && !exhausted[p] {
                let batch = store
                    .read_partition(p as u32, next.after(p as u32), chunk)
                    .await?;
                exhausted[p] = batch.len() < chunk;
                buffers[p].extend(batch);
            }
        }
        let earliest = buffers
            .iter()
            .enumerate()
            .filter_map(|(p, b)| b.front().map(|e| (e.position.id, p)))
            .min();
        let Some((_, p)) = earliest else { break };
        let Some(e) = buffers[p].pop_front() else {
            break;
        };
        if buffers[p].is_empty() && exhausted[p] {
            // Nothing else buffered here; `more` below re-checks the log.
        }
        scanned += 1;
        next.advance(e.position);
        if filter.keeps(&e) {
            events.push(e);
        }
    }
    let more = buffers.iter().any(|b| !b.is_empty()) || exhausted.iter().any(|x| !x);
    Ok(EventPage { events, next, more })
}

async fn stream_page(
    store: &dyn EventStore,
    stream: &str,
    after: Cursor,
    filter: &EventFilter,
    limit: usize,
) -> Result<EventPage, QueryError> {
    let history = store.read_stream_all(stream).await?;
    let mut next = after.clone();
    let mut events = Vec::new();
    let mut more = false;
    for e in history.into_iter().filter(|e| after.is_before(&e.position)) {
        if events.len() == limit {
            more = true;
            break;
        }
        next.advance(e.position);
        if filter.keeps(&e) {
            events.push(e);
        }
    }
    Ok(EventPage { events, next, more })
}

#[cfg(test)]
mod tests {
    use super::glob_match;

    #[test]
    fn globs() {
        assert!(glob_match("job_*", "job_completed"));
        assert!(glob_match("*_completed", "workflow_completed"));
        assert!(glob_match("job_*ed", "job_assigned"));
        assert!(glob_match("*", "anything"));
        assert!(glob_match("job_failed", "job_failed"));
        assert!(!glob_match("job_*", "workflow_created"));
        assert!(!glob_match("job_*ed", "job_progress"));
        assert!(!glob_match("a*a", "a"));
    }
}
