//! The reader of the `redis` read model: hot lookups (job, workflow with its steps,
//! machine), the pending queue in claim order and the queue sizes, read from the hashes,
//! the zset and the sets [`super::model`] writes. In the hashes an empty field means
//! "absent"; a field that does not parse is [`ProjectionError::Corrupt`].
//!
//! Answers have the same shape as the other read models' for the same log: views are
//! built with the same [`StepView::new`] and [`progress_percentage`], and times are the
//! strings the writer stored (RFC 3339, milliseconds, `Z`).

use std::collections::HashMap;
use std::str::FromStr;

use jobsource_domain::workflow::StepSpec;
use serde_json::{Map, Value};
use uuid::Uuid;

use super::model::RedisReadModel;
use crate::error::ProjectionError;
use crate::view::{progress_percentage, JobView, MachineView, QueueCounts, StepView, WorkflowView};

mod pending;

impl RedisReadModel {
    /// Job `id` from its hash (`None` when the model has not seen it).
    pub async fn job(&self, id: Uuid) -> Result<Option<JobView>, ProjectionError> {
        let keys = self.keys();
        let mut conn = self.connection();
        let hash: HashMap<String, String> = redis::cmd("HGETALL")
            .arg(keys.job(&id.to_string()))
            .query_async(&mut conn)
            .await?;
        let depends_on = Fields {
            kind: "job",
            id,
            map: &hash,
        }
        .json::<Vec<Uuid>>("depends_on")?
        .unwrap_or_default();
        job_from_hash(id, &hash, depends_on)
    }

    /// Workflow `id` with its steps: its hash, then every step job's hash (one pipeline).
    pub async fn workflow(&self, id: Uuid) -> Result<Option<WorkflowView>, ProjectionError> {
        let keys = self.keys();
        let mut conn = self.connection();
        let hash: HashMap<String, String> = redis::cmd("HGETALL")
            .arg(keys.workflow(&id.to_string()))
            .query_async(&mut conn)
            .await?;
        let f = Fields {
            kind: "workflow",
            id,
            map: &hash,
        };
        let Some(status) = f.string("status") else {
            return Ok(None);
        };
        let job_ids: Vec<Uuid> = f.json("job_ids")?.unwrap_or_default();
        let specs: Vec<StepSpec> = f.json("steps")?.unwrap_or_default();
        let step_jobs = &job_ids[..job_ids.len().min(specs.len())];
        let hashes: Vec<HashMap<String, String>> = if step_jobs.is_empty() {
            Vec::new()
        } else {
            let mut pipe = redis::pipe();
            for job in step_jobs {
                pipe.cmd("HGETALL").arg(keys.job(&job.to_string()));
            }
            pipe.query_async(&mut conn).await?
        };
        let mut steps = Vec::with_capacity(step_jobs.len());
        for (i, ((job_id, spec), hash)) in step_jobs.iter().zip(&specs).zip(&hashes).enumerate() {
            let job = job_from_hash(*job_id, hash, Vec::new())?;
            steps.push(StepView::new(
                i as u32,
                *job_id,
                &spec.job_type,
                &spec.depends_on,
                job,
            ));
        }
        let total_steps = f.num("total_steps")?;
        let completed_steps = f.num("completed_steps")?;
        Ok(Some(WorkflowView {
            id: f.parsed("id")?.unwrap_or(id),
            name: f.string("name").unwrap_or_default(),
            description: f.string("description"),
            status,
            total_steps,
            completed_steps,
            progress_percentage: progress_percentage(completed_steps, total_steps),
            job_ids,
            webhook_url: f.string("webhook_url"),
            error: f.json("error")?,
            created_at: f.string("created_at"),
            updated_at: f.string("updated_at"),
            completed_at: f.string("completed_at"),
            version: f.num("version")?,
            steps,
        }))
    }

    /// Machine `id` from its hash (`None` when the model has not seen it).
    pub async fn machine(&self, id: &str) -> Result<Option<MachineView>, ProjectionError> {
        let key = super::machines::machine_key(self.keys(), id);
        let mut conn = self.connection();
        let hash: HashMap<String, String> = redis::cmd("HGETALL")
            .arg(key)
            .query_async(&mut conn)
            .await?;
        machine_from_hash(id, &hash)
    }

    /// Sizes of the queue structures: the `jobs:pending` zset and the
    /// `jobs:assigned|completed|failed` sets.
    pub async fn queue_counts(&self) -> Result<QueueCounts, ProjectionError> {
        let keys = self.keys();
        let mut conn = self.connection();
        let (pending, assigned, completed, failed): (u64, u64, u64, u64) = redis::pipe()
            .cmd("ZCARD")
            .arg(keys.key("jobs:pending"))
            .cmd("SCARD")
            .arg(keys.key("jobs:assigned"))
            .cmd("SCARD")
            .arg(keys.key("jobs:completed"))
            .cmd("SCARD")
            .arg(keys.key("jobs:failed"))
            .query_async(&mut conn)
            .await?;
        Ok(QueueCounts {
            pending,
            assigned,
            completed,
            failed,
        })
    }
}

/// One entity hash of the `redis` projection, with typed access to its fields.
struct Fields<'a> {
    kind: &'static str,
    id: Uuid,
    map: &'a HashMap<String, String>,
}

impl Fields<'_> {
    fn bad(&self, field: &str, why: impl std::fmt::Display) -> ProjectionError {
        ProjectionError::Corrupt(format!(
            "redis read model: {} {}: field {field}: {why}",
            self.kind, self.id
        ))
    }

    /// The field, `None` when missing or empty.
    fn opt(&self, field: &str) -> Option<&str> {
        self.map
            .get(field)
            .map(String::as_str)
            .filter(|s| !s.is_empty())
    }

    fn string(&self, field: &str) -> Option<String> {
        self.opt(field).map(str::to_owned)
    }

    /// A number; a missing field reads as zero.
    fn num<T: FromStr + Default>(&self, field: &str) -> Result<T, ProjectionError>
    where
        T::Err: std::fmt::Display,
    {
        self.opt(field).map_or(Ok(T::default()), |s| {
            s.parse().map_err(|e| self.bad(field, e))
        })
    }

    fn parsed<T: FromStr>(&self, field: &str) -> Result<Option<T>, ProjectionError>
    where
        T::Err: std::fmt::Display,
    {
        self.opt(field)
            .map(|s| s.parse().map_err(|e| self.bad(field, e)))
            .transpose()
    }

    fn json<T: serde::de::DeserializeOwned>(
        &self,
        field: &str,
    ) -> Result<Option<T>, ProjectionError> {
        self.opt(field)
            .map(|s| serde_json::from_str(s).map_err(|e| self.bad(field, e)))
            .transpose()
    }
}

/// A job hash as a view (`None` when the job is not in the model).
fn job_from_hash(
    id: Uuid,
    map: &HashMap<String, String>,
    depends_on: Vec<Uuid>,
) -> Result<Option<JobView>, ProjectionError> {
    let f = Fields {
        kind: "job",
        id,
        map,
    };
    let Some(status) = f.string("status") else {
        return Ok(None);
    };
    let (prompt, parameters) = match f.json::<Value>("payload")? {
        Some(Value::Object(mut payload)) => (
            match payload.remove("prompt") {
                Some(Value::String(p)) => Some(p),
                _ => None,
            },
            match payload.remove("parameters") {
                Some(Value::Object(p)) => p,
                _ => Map::new(),
            },
        ),
        _ => (None, Map::new()),
    };
    let pending = status == "pending";
    let leased = status == "assigned" || status == "running";
    Ok(Some(JobView {
        id: f.parsed("id")?.unwrap_or(id),
        job_type: f.string("type").unwrap_or_default(),
        status,
        priority: f.num("priority")?,
        progress: f.num("progress")?,
        stage: f.string("stage"),
        prompt,
        parameters,
        requirements: f.json("requirements")?,
        webhook_url: f.string("webhook_url"),
        workflow_id: f.parsed("workflow_id")?,
        step_index: f.parsed("step_index")?,
        depends_on,
        worker_id: f.string("worker_id"),
        machine_id: f.string("machine_id"),
        attempt: f.num("attempt")?,
        retry_count: f.num("retry_count")?,
        max_retries: f.num("max_retries")?,
        result: f.json("result")?,
        error: f.json("error")?,
        created_at: f.string("created_at"),
        updated_at: f.string("updated_at"),
        started_at: f.string("started_at"),
        completed_at: f.string("completed_at"),
        available_at: f.string("available_at").filter(|_| pending),
        lease_expires_at: f.string("lease_expires_at").filter(|_| leased),
        version: f.num("version")?,
    }))
}

/// The view of a machine hash (`None` when the machine is not in it).
pub fn machine_from_hash(
    id: &str,
    map: &HashMap<String, String>,
) -> Result<Option<MachineView>, ProjectionError> {
    let field = |f: &str| map.get(f).map(String::as_str).filter(|s| !s.is_empty());
    let bad = |f: &str, e: &dyn std::fmt::Display| {
        ProjectionError::Corrupt(format!("redis read model: machine {id}: field {f}: {e}"))
    };
    let json = |f: &str| -> Result<Option<serde_json::Value>, ProjectionError> {
        field(f)
            .map(|s| serde_json::from_str(s).map_err(|e| bad(f, &e)))
            .transpose()
    };
    let Some(status) = field("status") else {
        return Ok(None);
    };
    let list = |f: &str| -> Result<serde_json::Value, ProjectionError> {
        // The batch script writes an empty list as `[]`; anything else empty is `{}`.
        Ok(match json(f)? {
            Some(serde_json::Value::Object(o)) if o.is_empty() => serde_json::json!([]),
            Some(v) => v,
            None => serde_json::json!([]),
        })
    };
    fn parse<T: serde::de::DeserializeOwned>(
        id: &str,
        f: &str,
        v: serde_json::Value,
    ) -> Result<T, ProjectionError> {
        serde_json::from_value(v).map_err(|e| {
            ProjectionError::Corrupt(format!("redis read model: machine {id}: field {f}: {e}"))
        })
    }
    Ok(Some(MachineView {
        machine_id: field("machine_id").unwrap_or(id).to_owned(),
        status: status.to_owned(),
        capabilities: parse(id, "capabilities", list("capabilities")?)?,
        gpu_memory: field("gpu_memory")
            .map(|g| g.parse::<f64>().map_err(|e| bad("gpu_memory", &e)))
            .transpose()?,
        ip_address: field("ip_address").map(str::to_owned),
        last_heartbeat_at: field("last_heartbeat").map(str::to_owned),
        workers: parse(id, "workers", list("workers")?)?,
        current_jobs: parse(id, "current_jobs", list("current_jobs")?)?,
        version: field("version")
            .map(|v| v.parse::<u64>().map_err(|e| bad("version", &e)))
            .transpose()?
            .unwrap_or(0),
        registered_at: field("created_at").map(str::to_owned),
        updated_at: field("updated_at").map(str::to_owned),
    }))
}

#[cfg(test)]
mod tests;
