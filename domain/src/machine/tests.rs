//! Given/when/then tests for every machine transition and rejection.

use uuid::Uuid;

use super::*;
use crate::testing::given;
use crate::DomainError;

fn register_cmd() -> RegisterMachine {
    RegisterMachine {
        machine_id: "m1".into(),
        capabilities: vec!["upscale".into(), "controlnet".into()],
        gpu_memory: Some(24.0),
        ip_address: Some("10.0.0.7".into()),
    }
}

fn registered(status: MachineStatus) -> MachineEvent {
    MachineEvent::MachineRegistered {
        machine_id: "m1".into(),
        capabilities: vec!["upscale".into(), "controlnet".into()],
        gpu_memory: Some(24.0),
        ip_address: Some("10.0.0.7".into()),
        status,
    }
}

fn status_changed(
    status: MachineStatus,
    previous_status: MachineStatus,
    details: Option<&str>,
) -> MachineEvent {
    MachineEvent::MachineStatusChanged {
        machine_id: "m1".into(),
        status,
        previous_status,
        details: details.map(str::to_owned),
    }
}

fn worker(id: &str, status: WorkerStatus, job: Option<Uuid>) -> WorkerReport {
    WorkerReport {
        worker_id: id.into(),
        status,
        current_job_id: job,
    }
}

fn worker_changed(id: &str, status: WorkerStatus, job: Option<Uuid>) -> MachineEvent {
    MachineEvent::WorkerStatusChanged {
        worker_id: id.into(),
        machine_id: "m1".into(),
        status,
        current_job_id: job,
    }
}

fn heartbeat(status: Option<MachineStatus>, workers: Option<Vec<WorkerReport>>) -> MachineCommand {
    MachineCommand::Heartbeat(Heartbeat { status, workers })
}

fn job() -> Uuid {
    Uuid::from_u128(7)
}

use MachineStatus::{Busy, Error as Faulty, Offline, Online};

#[test]
fn register_creates_an_online_machine() {
    given::<Machine>(vec![])
        .when(MachineCommand::Register(register_cmd()))
        .then(vec![registered(Online)]);
}

#[test]
fn registering_again_with_the_same_data_changes_nothing() {
    given::<Machine>(vec![registered(Online)])
        .when(MachineCommand::Register(register_cmd()))
        .then(vec![]);
    // Also while offline: the status is the heartbeat's business.
    given::<Machine>(vec![
        registered(Online),
        status_changed(Offline, Online, Some("no heartbeat for 60s")),
    ])
    .when(MachineCommand::Register(register_cmd()))
    .then(vec![]);
}

#[test]
fn registering_with_new_data_records_it_again_keeping_the_status() {
    given::<Machine>(vec![registered(Online), status_changed(Busy, Online, None)])
        .when(MachineCommand::Register(RegisterMachine {
            gpu_memory: Some(48.0),
            ..register_cmd()
        }))
        .then(vec![MachineEvent::MachineRegistered {
            machine_id: "m1".into(),
            capabilities: vec!["upscale".into(), "controlnet".into()],
            gpu_memory: Some(48.0),
            ip_address: Some("10.0.0.7".into()),
            status: Busy,
        }]);
}

#[test]
fn registration_validation_names_each_field() {
    let cases: Vec<(RegisterMachine, &str)> = vec![
        (
            RegisterMachine {
                machine_id: "".into(),
                ..register_cmd()
            },
            "machine_id",
        ),
        (
            RegisterMachine {
                machine_id: "bad id".into(),
                ..register_cmd()
            },
            "machine_id",
        ),
        (
            RegisterMachine {
                machine_id: "a".repeat(129),
                ..register_cmd()
            },
            "machine_id",
        ),
        (
            RegisterMachine {
                gpu_memory: Some(-1.0),
                ..register_cmd()
            },
            "gpu_memory",
        ),
        (
            RegisterMachine {
                gpu_memory: Some(f64::NAN),
                ..register_cmd()
            },
            "gpu_memory",
        ),
        (
            RegisterMachine {
                gpu_memory: Some(f64::INFINITY),
                ..register_cmd()
            },
            "gpu_memory",
        ),
        (
            RegisterMachine {
                gpu_memory: Some(10_000.5),
                ..register_cmd()
            },
            "gpu_memory",
        ),
        (
            RegisterMachine {
                ip_address: Some("10.0.0".into()),
                ..register_cmd()
            },
            "ip_address",
        ),
        (
            RegisterMachine {
                capabilities: vec!["a".into(), " ".into()],
                ..register_cmd()
            },
            "capabilities[1]",
        ),
        (
            RegisterMachine {
                capabilities: vec!["a".into(), "a".into()],
                ..register_cmd()
            },
            "capabilities[1]",
        ),
        (
            RegisterMachine {
                capabilities: (0..=MAX_CAPABILITIES).map(|i| format!("c{i}")).collect(),
                ..register_cmd()
            },
            "capabilities",
        ),
    ];
    for (cmd, field) in cases {
        given::<Machine>(vec![])
            .when(MachineCommand::Register(cmd))
            .then_invalid_field(field);
    }
}

#[test]
fn limits_are_inclusive() {
    given::<Machine>(vec![])
        .when(MachineCommand::Register(RegisterMachine {
            gpu_memory: Some(MAX_GPU_MEMORY),
            ip_address: Some("::1".into()),
            capabilities: vec![],
            ..register_cmd()
        }))
        .then(vec![MachineEvent::MachineRegistered {
            machine_id: "m1".into(),
            capabilities: vec![],
            gpu_memory: Some(MAX_GPU_MEMORY),
            ip_address: Some("::1".into()),
            status: Online,
        }]);
}

#[test]
fn commands_on_an_unknown_machine_are_not_found() {
    given::<Machine>(vec![])
        .when(heartbeat(None, None))
        .then_err(DomainError::NotFound { kind: "machine" });
    given::<Machine>(vec![])
        .when(MachineCommand::MarkOffline(MarkOffline {
            details: "x".into(),
        }))
        .then_err(DomainError::NotFound { kind: "machine" });
}

#[test]
fn a_heartbeat_that_changes_nothing_records_nothing() {
    given::<Machine>(vec![registered(Online)])
        .when(heartbeat(None, None))
        .then(vec![]);
    given::<Machine>(vec![registered(Online)])
        .when(heartbeat(Some(Online), Some(vec![])))
        .then(vec![]);
    given::<Machine>(vec![
        registered(Online),
        worker_changed("w1", WorkerStatus::Busy, Some(job())),
    ])
    .when(heartbeat(
        None,
        Some(vec![worker("w1", WorkerStatus::Busy, Some(job()))]),
    ))
    .then(vec![]);
}

#[test]
fn a_heartbeat_records_a_status_change() {
    given::<Machine>(vec![registered(Online)])
        .when(heartbeat(Some(Busy), None))
        .then(vec![status_changed(Busy, Online, None)]);
    given::<Machine>(vec![registered(Online)])
        .when(heartbeat(Some(Faulty), None))
        .then(vec![status_changed(Faulty, Online, None)]);
}

#[test]
fn a_heartbeat_without_status_brings_an_offline_machine_back_online() {
    given::<Machine>(vec![
        registered(Online),
        status_changed(Offline, Online, Some("no heartbeat for 60s")),
    ])
    .when(heartbeat(None, None))
    .then(vec![status_changed(Online, Offline, None)]);
    // A machine in error stays in error until it says otherwise.
    given::<Machine>(vec![
        registered(Online),
        status_changed(Faulty, Online, None),
    ])
    .when(heartbeat(None, None))
    .then(vec![]);
}

#[test]
fn a_heartbeat_records_each_changed_worker_after_the_status() {
    given::<Machine>(vec![
        registered(Online),
        worker_changed("w1", WorkerStatus::Idle, None),
        worker_changed("w2", WorkerStatus::Idle, None),
    ])
    .when(heartbeat(
        Some(Busy),
        Some(vec![
            worker("w1", WorkerStatus::Idle, None),
            worker("w2", WorkerStatus::Busy, Some(job())),
            worker("w3", WorkerStatus::Idle, None),
        ]),
    ))
    .then(vec![
        status_changed(Busy, Online, None),
        worker_changed("w2", WorkerStatus::Busy, Some(job())),
        worker_changed("w3", WorkerStatus::Idle, None),
    ]);
}

#[test]
fn a_new_current_job_is_a_change() {
    let other = Uuid::from_u128(8);
    given::<Machine>(vec![
        registered(Online),
        worker_changed("w1", WorkerStatus::Busy, Some(job())),
    ])
    .when(heartbeat(
        None,
        Some(vec![worker("w1", WorkerStatus::Busy, Some(other))]),
    ))
    .then(vec![worker_changed("w1", WorkerStatus::Busy, Some(other))]);
}

#[test]
fn heartbeat_validation_names_each_field() {
    let too_many: Vec<WorkerReport> = (0..=MAX_WORKERS)
        .map(|i| worker(&format!("w{i}"), WorkerStatus::Idle, None))
        .collect();
    let cases = vec![
        (Some(too_many), "workers"),
        (
            Some(vec![worker("bad id", WorkerStatus::Idle, None)]),
            "workers[0].worker_id",
        ),
        (
            Some(vec![
                worker("w1", WorkerStatus::Idle, None),
                worker("w1", WorkerStatus::Busy, None),
            ]),
            "workers[1].worker_id",
        ),
    ];
    for (workers, field) in cases {
        given::<Machine>(vec![registered(Online)])
            .when(heartbeat(None, workers))
            .then_invalid_field(field);
    }
    let max: Vec<WorkerReport> = (0..MAX_WORKERS)
        .map(|i| worker(&format!("w{i}"), WorkerStatus::Idle, None))
        .collect();
    let events = Machine::from_events(&[registered(Online)])
        .decide(&heartbeat(None, Some(max)))
        .unwrap();
    assert_eq!(events.len(), MAX_WORKERS);
}

#[test]
fn mark_offline_records_the_timeout_once() {
    given::<Machine>(vec![registered(Online), status_changed(Busy, Online, None)])
        .when(MachineCommand::MarkOffline(MarkOffline {
            details: "no heartbeat for 60s".into(),
        }))
        .then(vec![status_changed(
            Offline,
            Busy,
            Some("no heartbeat for 60s"),
        )]);
    given::<Machine>(vec![
        registered(Online),
        status_changed(Offline, Online, Some("no heartbeat for 60s")),
    ])
    .when(MachineCommand::MarkOffline(MarkOffline {
        details: "no heartbeat for 61s".into(),
    }))
    .then(vec![]);
}

#[test]
fn status_names_parse_and_name_the_field() {
    for s in MachineStatus::ALL {
        assert_eq!(MachineStatus::parse("status", s.as_str()), Ok(s));
    }
    for s in WorkerStatus::ALL {
        assert_eq!(WorkerStatus::parse("w", s.as_str()), Ok(s));
    }
    assert_eq!(
        MachineStatus::parse("status", "sleeping")
            .unwrap_err()
            .field,
        "status"
    );
    assert_eq!(
        WorkerStatus::parse("workers[2].status", "ONLINE")
            .unwrap_err()
            .field,
        "workers[2].status"
    );
}

#[test]
fn fold_tracks_status_workers_and_current_jobs() {
    let other = Uuid::from_u128(3);
    let m = Machine::from_events(&[
        registered(Online),
        worker_changed("w2", WorkerStatus::Busy, Some(job())),
        worker_changed("w1", WorkerStatus::Busy, Some(other)),
        worker_changed("w3", WorkerStatus::Busy, Some(job())),
        status_changed(Busy, Online, None),
    ]);
    assert_eq!(m.id, "m1");
    assert_eq!(m.status, Some(Busy));
    assert_eq!(m.version, 5);
    assert_eq!(
        m.workers.keys().map(String::as_str).collect::<Vec<_>>(),
        ["w1", "w2", "w3"]
    );
    assert_eq!(m.current_jobs(), vec![other, job()]);
}

#[test]
fn events_serialize_adjacently_tagged_with_the_machine_id() {
    let v = serde_json::to_value(status_changed(Offline, Online, Some("x"))).unwrap();
    assert_eq!(
        v,
        serde_json::json!({"type": "machine_status_changed", "data": {
            "machine_id": "m1", "status": "offline", "previous_status": "online", "details": "x"}})
    );
    let e = worker_changed("w1", WorkerStatus::Idle, None);
    assert_eq!(e.event_type(), "worker_status_changed");
    assert_eq!(e.machine_id(), "m1");
    assert!(e.is_from_machine());
    assert!(!status_changed(Offline, Online, Some("timeout")).is_from_machine());
}
