//! The machine hash reads as the folded view.

use super::*;
use crate::view::{timestamp, MachineEntry};
use chrono::{DateTime, Utc};
use jobsource_domain::machine::MachineEvent;
use jobsource_domain::machine::{MachineStatus, WorkerStatus};

#[test]
fn a_hash_reads_as_the_folded_view() {
    let at: DateTime<Utc> = "2025-01-02T03:04:05.678Z".parse().unwrap();
    let job = Uuid::now_v7();
    let mut entry = MachineEntry::default();
    entry.apply(
        &MachineEvent::MachineRegistered {
            machine_id: "m1".into(),
            capabilities: vec!["upscale".into()],
            gpu_memory: Some(24.5),
            ip_address: None,
            status: MachineStatus::Online,
        },
        1,
        at,
    );
    entry.apply(
        &MachineEvent::WorkerStatusChanged {
            worker_id: "w1".into(),
            machine_id: "m1".into(),
            status: WorkerStatus::Busy,
            current_job_id: Some(job),
        },
        2,
        at,
    );
    // Applied twice: the second time changes nothing.
    entry.apply(
        &MachineEvent::WorkerStatusChanged {
            worker_id: "w1".into(),
            machine_id: "m1".into(),
            status: WorkerStatus::Idle,
            current_job_id: None,
        },
        2,
        at,
    );
    let view = entry.view().unwrap();
    let t = timestamp(at);
    let hash: HashMap<String, String> = [
        ("machine_id", "m1".to_owned()),
        ("id", "m1".into()),
        ("status", "online".into()),
        ("capabilities", r#"["upscale"]"#.into()),
        ("gpu_memory", "24.5".into()),
        ("ip_address", "".into()),
        (
            "workers",
            format!(r#"[{{"worker_id":"w1","status":"busy","current_job_id":"{job}"}}]"#),
        ),
        ("current_jobs", format!(r#"["{job}"]"#)),
        ("created_at", t.clone()),
        ("updated_at", t.clone()),
        ("last_heartbeat", t),
        ("version", "2".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    assert_eq!(machine_from_hash("m1", &hash).unwrap(), Some(view));
    assert_eq!(machine_from_hash("m2", &HashMap::new()).unwrap(), None);
}
