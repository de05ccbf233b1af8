//! The pending queue in claim order, read from the `<rm>:jobs:pending` zset (score =
//! priority, members = job ids).

use jobsource_eventstore::redis::RedisConn;
use uuid::Uuid;

use crate::error::ProjectionError;
use crate::redis::model::RedisReadModel;
use crate::view::PendingEntry;

impl RedisReadModel {
    /// Up to `limit` pending jobs in claim order, strictly after `after`, from the
    /// `<rm>:jobs:pending` zset.
    ///
    /// Claim order is priority descending, then id ascending. The zset sorts equal scores
    /// by member ascending, so each score bucket is read ascending (`ZRANGE ... BYSCORE`),
    /// buckets from the highest score down (`ZREVRANGEBYSCORE (score -inf LIMIT 0 1` finds
    /// the next one); a bucket resumed after `after` starts behind it by rank.
    pub async fn pending(
        &self,
        after: Option<PendingEntry>,
        limit: usize,
    ) -> Result<Vec<PendingEntry>, ProjectionError> {
        let mut out = Vec::new();
        if limit == 0 {
            return Ok(out);
        }
        let key = self.keys().key("jobs:pending");
        let mut conn = self.connection();
        let (mut score, mut resume_after) = match after {
            Some(a) => (f64::from(a.priority), Some(a.job_id)),
            None => {
                let top: Vec<(String, f64)> = redis::cmd("ZREVRANGE")
                    .arg(&key)
                    .arg(0)
                    .arg(0)
                    .arg("WITHSCORES")
                    .query_async(&mut conn)
                    .await?;
                match top.first() {
                    Some((_, s)) => (*s, None),
                    None => return Ok(out),
                }
            }
        };
        loop {
            let want = limit - out.len();
            let members = match resume_after.take() {
                Some(a) => self.bucket_after(&mut conn, score, a, want).await?,
                None => self.bucket(&mut conn, score, want).await?,
            };
            for m in members {
                match m.parse::<Uuid>() {
                    Ok(job_id) => out.push(PendingEntry {
                        // Scores are priorities 0..=100.
                        priority: score.clamp(0.0, f64::from(u8::MAX)) as u8,
                        job_id,
                    }),
                    Err(e) => tracing::warn!(member = %m, error = %e,
                        "pending zset member is not a job id; skipped"),
                }
            }
            if out.len() >= limit {
                break;
            }
            let next: Vec<(String, f64)> = redis::cmd("ZREVRANGEBYSCORE")
                .arg(&key)
                .arg(format!("({score}"))
                .arg("-inf")
                .arg("WITHSCORES")
                .arg("LIMIT")
                .arg(0)
                .arg(1)
                .query_async(&mut conn)
                .await?;
            match next.first() {
                Some((_, s)) => score = *s,
                None => break,
            }
        }
        out.truncate(limit);
        Ok(out)
    }

    /// Members of score bucket `score` that sort after `after` (by id), at most `want`.
    async fn bucket_after(
        &self,
        conn: &mut RedisConn,
        score: f64,
        after: Uuid,
        want: usize,
    ) -> Result<Vec<String>, ProjectionError> {
        let key = self.keys().key("jobs:pending");
        let after = after.to_string();
        // Ranks [lo, hi) hold the bucket, in id order (lexical order of equal scores; the
        // hyphenated lowercase form of UUIDs sorts like the UUIDs).
        let (lo, hi, rank, member_score): (i64, i64, Option<i64>, Option<f64>) = redis::pipe()
            .cmd("ZCOUNT")
            .arg(&key)
            .arg("-inf")
            .arg(format!("({score}"))
            .cmd("ZCOUNT")
            .arg(&key)
            .arg("-inf")
            .arg(score)
            .cmd("ZRANK")
            .arg(&key)
            .arg(&after)
            .cmd("ZSCORE")
            .arg(&key)
            .arg(&after)
            .query_async(conn)
            .await?;
        let start = match (rank, member_score) {
            // `after` is still queued in this bucket: continue right behind it.
            (Some(r), Some(s)) if s == score => r + 1,
            // It left the queue (claimed, cancelled): binary search by rank.
            _ => {
                let (mut a, mut b) = (lo, hi);
                while a < b {
                    let mid = a + (b - a) / 2;
                    let at: Vec<String> = redis::cmd("ZRANGE")
                        .arg(&key)
                        .arg(mid)
                        .arg(mid)
                        .query_async(conn)
                        .await?;
                    match at.first() {
                        Some(m) if *m <= after => a = mid + 1,
                        _ => b = mid,
                    }
                }
                a
            }
        };
        if start >= hi {
            return Ok(Vec::new());
        }
        let want = i64::try_from(want).unwrap_or(i64::MAX);
        let end = hi.min(start.saturating_add(want)) - 1;
        let rows: Vec<(String, f64)> = redis::cmd("ZRANGE")
            .arg(&key)
            .arg(start)
            .arg(end)
            .arg("WITHSCORES")
            .query_async(conn)
            .await?;
        // Between the calls above the queue may have moved: keep the bucket only.
        Ok(rows
            .into_iter()
            .filter(|(_, s)| *s == score)
            .map(|(m, _)| m)
            .collect())
    }

    /// Members of score bucket `score` in id order, at most `want`.
    async fn bucket(
        &self,
        conn: &mut RedisConn,
        score: f64,
        want: usize,
    ) -> Result<Vec<String>, ProjectionError> {
        Ok(redis::cmd("ZRANGE")
            .arg(self.keys().key("jobs:pending"))
            .arg(score)
            .arg(score)
            .arg("BYSCORE")
            .arg("LIMIT")
            .arg(0)
            .arg(want)
            .query_async(conn)
            .await?)
    }
}
