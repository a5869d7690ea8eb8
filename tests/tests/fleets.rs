//! Fleet rollouts through the library: the per-environment hook is told of every environment
//! that ran exactly once, with its final status, whichever way the deployment ends (all or
//! nothing, isolated, no rollback); password sources are read once per source. Targets are
//! real embedded SurrealDB databases.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use flotilla_coordinator::{
    DeploymentCoordinator, DeploymentPlan, EnvironmentConfig, EnvironmentHook, EnvironmentRegistry,
    HookEvent, Outcome, resolve_passwords,
};
use flotilla_core::{AuthLevel, Connection, DeploymentStatus, PasswordSource};
use flotilla_runner::testkit::migrations;
use flotilla_runner::{Backends, Target};
use flotilla_strategies::StrategyKind;
use flotilla_surrealdb::SurrealRunner;

#[derive(Debug, Default)]
struct Recorder(Mutex<Vec<(String, DeploymentStatus, Option<String>)>>);

#[async_trait]
impl EnvironmentHook for Recorder {
    async fn finished(&self, event: &HookEvent) -> Result<(), String> {
        self.0.lock().expect("recorder").push((
            event.report.environment.clone(),
            event.report.status,
            event.tenant.clone(),
        ));
        Ok(())
    }
}

/// Three tenants on `mem://`; the middle one already holds the record the second migration
/// creates, so it fails there.
async fn fleet(prefix: &str) -> (EnvironmentRegistry, Backends) {
    let registry = EnvironmentRegistry::new();
    let runner = SurrealRunner::new();
    for i in 0..3 {
        let name = format!("{prefix}{i}");
        let mut environment = EnvironmentConfig::new(
            name.as_str(),
            Connection::new("mem://", name.as_str(), "app"),
        )
        .expect("name");
        environment.tenant = Some(format!("tenant-{i}"));
        if i == 1 {
            runner
                .session(&Target::new(name.as_str(), environment.connection.clone()))
                .await
                .expect("session")
                .query("CREATE effect:b SET planted = true")
                .await
                .expect("plant");
        }
        registry.register(environment).expect("register");
    }
    let mut backends = Backends::new();
    runner.register(&mut backends);
    (registry, backends)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hook_hears_each_environment_once_with_its_final_status() {
    let pair = migrations(&[
        (
            "0001_a.surql",
            "-- @up\nCREATE effect:a;\n-- @down\nDELETE effect:a;\n",
        ),
        (
            "0002_b.surql",
            "-- @up\nCREATE effect:b;\n-- @down\nDELETE effect:b;\n",
        ),
    ]);
    for (prefix, isolate, rollback, outcome) in [
        ("all", false, true, Outcome::RolledBack),
        ("iso", true, true, Outcome::Failed),
        ("keep", false, false, Outcome::Failed),
    ] {
        let (registry, backends) = fleet(prefix).await;
        let recorder = Arc::new(Recorder::default());
        let coordinator = DeploymentCoordinator::new(backends)
            .with_hook(Arc::clone(&recorder) as Arc<dyn EnvironmentHook>);
        let plan = DeploymentPlan::builder(&registry)
            .all()
            .migrations(Arc::clone(&pair))
            .kind(StrategyKind::Parallel)
            .rehearse(false)
            .isolate(isolate)
            .auto_rollback(rollback)
            .build()
            .expect("plan");
        let mut events = coordinator.subscribe();
        let report = coordinator.deploy(&plan).await.expect("deploy");
        assert_eq!(report.outcome, outcome, "{prefix}: {report:#?}");
        // The event ending each turn carries when it started, how long it took, and the
        // error's class.
        let mut ends = Vec::new();
        while let Ok(event) = events.try_recv() {
            if event.duration_ms.is_some() {
                assert!(event.started_at.is_some(), "{event:?}");
                ends.push((event.environment, event.status, event.error_class));
            }
        }
        ends.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(
            ends,
            [
                (format!("{prefix}0"), DeploymentStatus::Success, None),
                (
                    format!("{prefix}1"),
                    DeploymentStatus::Failed,
                    Some("statement_failed".to_owned())
                ),
                (format!("{prefix}2"), DeploymentStatus::Success, None),
            ],
            "{prefix}"
        );
        let mut told = recorder.0.lock().expect("recorder").clone();
        told.sort_by(|a, b| a.0.cmp(&b.0));
        let finals: Vec<_> = report
            .environments
            .iter()
            .enumerate()
            .map(|(i, e)| (e.environment.clone(), e.status, Some(format!("tenant-{i}"))))
            .collect();
        assert_eq!(told, finals, "{prefix}: told once each, the final status");
        assert_eq!(report.hooks.as_ref().map(|h| h.ran), Some(3));
        let expected_ok = if isolate || !rollback {
            DeploymentStatus::Success
        } else {
            DeploymentStatus::RolledBack
        };
        assert_eq!(report.environments[0].status, expected_ok, "{prefix}");
        assert_eq!(report.environments[2].status, expected_ok, "{prefix}");
    }
}

/// A hook command that hangs is killed at its timeout with everything it started and
/// reported; one that exits leaving a process that holds its output is done when it exits,
/// that process killed with its group. Neither holds up nor fails the deployment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_hook_is_killed_at_its_timeout_and_reported() {
    let (registry, backends) = fleet("hang").await;
    registry.unregister("hang1");
    let hook = flotilla_coordinator::CommandHook {
        command: "if [ \"$FLOTILLA_ENVIRONMENT\" = hang0 ]; then sleep 30.4173; true; else sleep 30.4175 & true; fi".into(),
        dir: std::env::temp_dir(),
        timeout: std::time::Duration::from_millis(300),
    };
    let coordinator = DeploymentCoordinator::new(backends).with_hook(Arc::new(hook));
    let plan = DeploymentPlan::builder(&registry)
        .all()
        .migrations(migrations(&[(
            "0001_a.surql",
            "-- @up\nCREATE effect:a;\n-- @down\nDELETE effect:a;\n",
        )]))
        .kind(StrategyKind::Parallel)
        .rehearse(false)
        .build()
        .expect("plan");
    let started = std::time::Instant::now();
    let report = coordinator.deploy(&plan).await.expect("deploy");
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    assert_eq!(report.outcome, Outcome::Succeeded, "{report:#?}");
    let hooks = report.hooks.expect("hooks ran");
    assert_eq!(hooks.ran, 2);
    let failed: Vec<(&str, &str)> = hooks
        .failed
        .iter()
        .map(|f| (f.environment.as_str(), f.message.as_str()))
        .collect();
    assert_eq!(failed, [("hang0", "did not finish within 300ms; killed")]);
    // A SIGKILL lands a moment after `kill` returns: give it up to 2 s, not the sleeps' 30.
    let survivors = || -> Vec<String> {
        std::fs::read_dir("/proc")
            .expect("/proc")
            .filter_map(|entry| std::fs::read(entry.ok()?.path().join("cmdline")).ok())
            .map(|cmdline| String::from_utf8_lossy(&cmdline).replace('\0', " "))
            .filter(|cmdline| cmdline.starts_with("sleep 30.417"))
            .collect()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    while !survivors().is_empty() && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let survivors = survivors();
    assert!(survivors.is_empty(), "left running: {survivors:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_password_source_is_read_once_and_an_empty_one_is_refused() {
    let dir = tempfile::tempdir().expect("dir");
    let log = dir.path().join("calls.log");
    let file = dir.path().join("pw");
    std::fs::write(&file, "from-file\n").expect("file");
    let command = format!("echo run >> {}; printf from-command", log.display());
    let environment = |name: &str, source: PasswordSource| {
        let mut environment = EnvironmentConfig::new(
            name,
            Connection::new("mem://", name, "app").with_credentials("u", "", AuthLevel::Root),
        )
        .expect("name");
        environment.password_source = Some(source);
        environment
    };
    let environments = vec![
        environment("a", PasswordSource::command(command.clone())),
        environment("b", PasswordSource::command(command.clone())),
        environment("c", PasswordSource::File(file.clone())),
    ];
    let resolved = resolve_passwords(&environments).await.expect("resolved");
    let passwords: Vec<&str> = resolved
        .iter()
        .map(|e| {
            assert!(e.password_source.is_none());
            e.connection
                .credentials
                .as_ref()
                .expect("credentials")
                .password
                .expose()
        })
        .collect();
    assert_eq!(passwords, ["from-command", "from-command", "from-file"]);
    assert_eq!(std::fs::read_to_string(&log).expect("log"), "run\n");
    assert_eq!(
        format!("{:?}", PasswordSource::command(command)),
        "Command(***)"
    );

    let empty = vec![environment("d", PasswordSource::command("true"))];
    let error = resolve_passwords(&empty).await.expect_err("empty");
    assert_eq!(
        error.to_string(),
        "environment `d`: `password_command` gave an empty password"
    );
}
