//! The machine part of the `redis` projection.
//!
//! ```text
//! <rm>:machine:<id>          hash: machine_id, id, status, capabilities (JSON array),
//!                            gpu_memory, ip_address, workers (JSON array of
//!                            {worker_id, status, current_job_id}, sorted by worker id),
//!                            current_jobs (JSON array of job ids, sorted), created_at,
//!                            updated_at, last_heartbeat, version
//! <rm>:machine:<id>:workers  hash: worker id -> that worker's JSON entry (what `workers`
//!                            is rebuilt from)
//! <rm>:machines              set of machine ids
//! ```
//!
//! A `worker_status_changed` changes one worker, while the hash shows all of them: its
//! operation (`MACHINE_WORKER`) writes the worker's entry into the `:workers` hash and then
//! rebuilds `workers` and `current_jobs` from it inside the batch script, so it needs no
//! read before the batch and folds like a set member (the last entry of a worker in a
//! batch wins). Like every entity of this projection, a machine's events apply only above
//! its hash's `version`. `last_heartbeat` is the time of the last event the machine caused
//! (every event but the sweeper's timeout, see [`MachineEvent::is_from_machine`]); the API
//! shows the heartbeat store's time instead, which also moves on heartbeats that change
//! nothing.

use jobsource_domain::machine::MachineEvent;
use serde::Serialize;
use uuid::Uuid;

use super::model::{Ops, RmKeys};

/// Name of the batch-script operation that records one worker's entry and rebuilds the
/// machine hash's `workers` and `current_jobs`. Args: the entry JSON, the worker id.
pub(crate) const MACHINE_WORKER: &str = "MACHINE_WORKER";

/// Lua prelude of the batch scripts: `machine_worker(ek, wk, entry, worker_id)` for
/// [`MACHINE_WORKER`] (`ek` the machine hash, `wk` its `:workers` hash). The lists are
/// built as text in a fixed order (workers by id, job ids sorted) so a rebuilt model is
/// byte-for-byte the live one.
pub(crate) const MACHINE_WORKER_LUA: &str = r"
local function machine_worker(ek, wk, entry, worker_id)
  redis.call('HSET', wk, worker_id, entry)
  local all = redis.call('HGETALL', wk)
  local ids, by_id = {}, {}
  for j = 1, #all, 2 do
    ids[#ids + 1] = all[j]
    by_id[all[j]] = all[j + 1]
  end
  table.sort(ids)
  local list, jobs, seen = {}, {}, {}
  for _, id in ipairs(ids) do
    local e = by_id[id]
    list[#list + 1] = e
    local job = cjson.decode(e)['current_job_id']
    if type(job) == 'string' and not seen[job] then
      seen[job] = true
      jobs[#jobs + 1] = job
    end
  end
  table.sort(jobs)
  for j = 1, #jobs do jobs[j] = cjson.encode(jobs[j]) end
  redis.call('HSET', ek, 'workers', '[' .. table.concat(list, ',') .. ']',
    'current_jobs', '[' .. table.concat(jobs, ',') .. ']')
end
";

/// One worker's entry in the `workers` JSON (field order fixed by this struct).
#[derive(Serialize)]
struct WorkerEntry<'a> {
    worker_id: &'a str,
    status: &'a str,
    current_job_id: Option<Uuid>,
}

fn js(v: &impl Serialize) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

/// `<rm>:machine:<id>`.
pub fn machine_key(keys: &RmKeys, id: &str) -> String {
    keys.key(&format!("machine:{id}"))
}

/// `<rm>:machines`.
pub fn machines_key(keys: &RmKeys) -> String {
    keys.key("machines")
}

/// The operations of one machine event; `now` is its time (RFC 3339, milliseconds).
pub(crate) fn machine_ops(keys: &RmKeys, event: &MachineEvent, now: String) -> Ops {
    let id = event.machine_id().to_owned();
    let hash = machine_key(keys, &id);
    let mut ops = Ops::new(hash.clone());
    let mut fields = vec![("updated_at", now.clone())];
    if event.is_from_machine() {
        fields.push(("last_heartbeat", now.clone()));
    }
    match event {
        MachineEvent::MachineRegistered {
            capabilities,
            gpu_memory,
            ip_address,
            status,
            ..
        } => {
            fields.extend([
                ("machine_id", id.clone()),
                ("id", id.clone()),
                ("status", status.as_str().to_owned()),
                ("capabilities", js(capabilities)),
                (
                    "gpu_memory",
                    gpu_memory.map(|g| g.to_string()).unwrap_or_default(),
                ),
                ("ip_address", ip_address.clone().unwrap_or_default()),
            ]);
            ops.hset(&fields);
            ops.op("HSETNX", hash.clone(), vec!["created_at".into(), now]);
            ops.op("HSETNX", hash.clone(), vec!["workers".into(), "[]".into()]);
            ops.op("HSETNX", hash, vec!["current_jobs".into(), "[]".into()]);
            ops.op("SADD", machines_key(keys), vec![id]);
        }
        MachineEvent::MachineStatusChanged { status, .. } => {
            fields.push(("status", status.as_str().to_owned()));
            ops.hset(&fields);
        }
        MachineEvent::WorkerStatusChanged {
            worker_id,
            status,
            current_job_id,
            ..
        } => {
            ops.hset(&fields);
            let entry = js(&WorkerEntry {
                worker_id,
                status: status.as_str(),
                current_job_id: *current_job_id,
            });
            ops.op(
                MACHINE_WORKER,
                format!("{hash}:workers"),
                vec![entry, worker_id.clone()],
            );
        }
    }
    ops
}
