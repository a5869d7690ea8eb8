//! What a deployment tells the control store when it starts: the run it begins, and whether
//! the fleet is quiesced.

use std::time::{Duration, Instant};

use super::{Claim, Control, ControlError, QuiesceUnreadable, Refusal, RunStart};
use crate::plan::DeploymentPlan;

/// Claims `run`'s part of its deployment in the store. A run joining or resuming one started
/// with another plan is refused naming the difference; a live run holding the part is
/// waited for up to the plan's lock timeout (a run whose process is gone from this host is
/// known dead at once), then named in the refusal.
pub(crate) async fn claim(
    control: &Control,
    run: &RunStart,
    plan: &DeploymentPlan,
) -> Result<(), ControlError> {
    let store = &control.store;
    if run.claim != Claim::New
        && let Some(detail) = store.deployment(&run.deployment_id).await?
        && let Some(difference) = plan_difference(&detail.plan, plan)
    {
        let mut error = Refusal::PlanDiffers.error(run);
        if let ControlError::Refused { reason, .. } = &mut error {
            *reason = format!("{reason}: {difference}");
        }
        return Err(error);
    }
    let deadline = Instant::now() + plan.lock_timeout;
    let mut pause = Duration::from_millis(50);
    let mut ended = std::collections::HashSet::new();
    loop {
        let held = match store.start_run(run).await {
            Err(ControlError::Refused {
                refusal: Refusal::Held { run_id },
                reason,
            }) => (run_id, reason),
            other => return other,
        };
        let (holder_id, reason) = held;
        let holder = store
            .runs(&run.deployment_id)
            .await?
            .into_iter()
            .find(|r| r.run_id == holder_id);
        if let Some(holder) = &holder
            && !ended.contains(&holder.run_id)
            && gone_from_this_host(
                &holder.actor.host,
                &control.actor.host,
                holder.process.as_deref(),
            )
        {
            tracing::warn!(run = %holder.run_id, "the run holding the deployment is gone from this host: its claim ends now");
            store.renew_run(&holder.run_id, Duration::ZERO).await?;
            ended.insert(holder.run_id.clone());
            continue;
        }
        if Instant::now() >= deadline {
            let who = holder.map_or_else(String::new, |holder| {
                format!(
                    " (by {}, pid {}, started {})",
                    holder.actor, holder.actor.pid, holder.started_at
                )
            });
            return Err(ControlError::Refused {
                refusal: Refusal::Held { run_id: holder_id },
                reason: format!(
                    "{reason}{who}; waited {} (the lock timeout): wait for it to end, or for its lease to run out if it was killed",
                    flotilla_core::format_duration(plan.lock_timeout)
                ),
            });
        }
        tokio::time::sleep(pause.min(deadline.saturating_duration_since(Instant::now()))).await;
        pause = (pause * 2).min(Duration::from_secs(1));
    }
}

/// The run `plan` starts: who, which shard, what to record to run it again, its targets,
/// its claim and the plan's fingerprint.
pub(crate) fn run_start(plan: &DeploymentPlan, control: &Control) -> RunStart {
    let latest = plan.migrations.latest().map(ToString::to_string);
    let fingerprint = fingerprint(plan);
    RunStart {
        deployment_id: plan.deployment_id.clone(),
        run_id: run_id(&plan.deployment_id, &control.actor.host),
        actor: control.actor.clone(),
        shard: plan.shard.map(|shard| shard.to_string()),
        plan: serde_json::json!({
            "strategy": plan.strategy.kind,
            "max_concurrent": plan.strategy.max_concurrent,
            "auto_rollback": plan.auto_rollback,
            "selected": plan.selected,
            "shards": plan.shard.map(|shard| shard.count),
            "migrations": plan.migrations.len(),
            "latest_version": latest,
            "record": plan.record,
            "fingerprint": fingerprint,
        }),
        targets: plan.environment_names(),
        lease: plan.lease,
        claim: plan.claim,
        fingerprint: flotilla_core::sha256_hex(&[fingerprint.to_string().as_bytes()]),
        process: this_process(),
    }
}

/// What makes two runs the same plan: the selection, the shard count, the strategy and the
/// flags that change what is applied where (auto-rollback, isolation, the drift policy), and
/// every migration's version and checksum. Pace (`max_concurrent`, lock timeout, lease) and
/// the checks run before anything (health probes, rehearsal) may differ between runs.
fn fingerprint(plan: &DeploymentPlan) -> serde_json::Value {
    let strategy = &plan.strategy;
    serde_json::json!({
        "selection": plan.selected,
        "shards": plan.shard.map(|shard| shard.count),
        "strategy": {
            "kind": strategy.kind,
            "batch_size": strategy.batch_size,
            "canary_percentage": strategy.canary_percentage,
            "fail_fast": strategy.fail_fast,
            "custom": plan.custom_strategy.is_some(),
        },
        "flags": {
            "auto_rollback": plan.auto_rollback,
            "isolate": plan.isolate,
            "drift_policy": format!("{:?}", plan.drift_policy),
        },
        "migrations": plan
            .migrations
            .as_slice()
            .iter()
            .map(|migration| [migration.version.to_string(), migration.checksum.clone()])
            .collect::<Vec<_>>(),
    })
}

/// How the plan of `recorded` (a deployment's stored plan) differs from `plan`'s, in words;
/// `None` when it does not, or when the deployment recorded no fingerprint.
pub fn plan_difference(recorded: &serde_json::Value, plan: &DeploymentPlan) -> Option<String> {
    let Some(recorded) = recorded.get("fingerprint") else {
        // Recorded before fingerprints: the newest version and the count, as then.
        let latest = recorded["latest_version"].as_str().map(str::to_owned);
        let now = plan.migrations.latest().map(ToString::to_string);
        let count = recorded["migrations"].as_u64();
        return (latest != now || count != Some(plan.migrations.len() as u64)).then(|| {
            format!(
                "the migrations differ (newest {} of {}, now {} of {})",
                latest.as_deref().unwrap_or("none"),
                count.unwrap_or(0),
                now.as_deref().unwrap_or("none"),
                plan.migrations.len()
            )
        });
    };
    let now = fingerprint(plan);
    let part = |key: &str| (recorded.get(key), now.get(key));
    if let (Some(before), Some(after)) = part("selection")
        && before != after
    {
        let names = |value: &serde_json::Value| -> std::collections::BTreeSet<String> {
            value
                .as_array()
                .map(|names| {
                    names
                        .iter()
                        .filter_map(|n| n.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default()
        };
        let (before, after) = (names(before), names(after));
        let added: Vec<&String> = after.difference(&before).collect();
        let removed: Vec<&String> = before.difference(&after).collect();
        return Some(format!(
            "the selection differs ({} added{}, {} gone{})",
            added.len(),
            sample(&added),
            removed.len(),
            sample(&removed)
        ));
    }
    if let (Some(before), Some(after)) = part("migrations")
        && before != after
    {
        let pairs = |value: &serde_json::Value| -> Vec<(String, String)> {
            serde_json::from_value(value.clone()).unwrap_or_default()
        };
        let (before, after) = (pairs(before), pairs(after));
        let changed: Vec<String> = after
            .iter()
            .filter(|pair| !before.contains(pair))
            .map(|(version, _)| version.clone())
            .chain(
                before
                    .iter()
                    .filter(|(version, _)| !after.iter().any(|(v, _)| v == version))
                    .map(|(version, _)| format!("{version} (gone)")),
            )
            .collect();
        return Some(format!(
            "the migrations differ: {} (newer, changed or gone since it started)",
            changed.join(", ")
        ));
    }
    for key in ["shards", "strategy", "flags"] {
        if let (before, Some(after)) = part(key)
            && before != Some(after)
        {
            return Some(format!(
                "the {key} differ: recorded {}, now {after}",
                before.map_or_else(|| "nothing".to_owned(), ToString::to_string)
            ));
        }
    }
    None
}

/// Up to three names, as `: a, b, c, …`.
fn sample(names: &[&String]) -> String {
    if names.is_empty() {
        return String::new();
    }
    let shown: Vec<&str> = names.iter().take(3).map(|name| name.as_str()).collect();
    format!(
        ": {}{}",
        shown.join(", "),
        if names.len() > 3 { ", …" } else { "" }
    )
}

/// A run id unique across processes and machines, created never replaced: the deployment,
/// the host, the time, the process, a counter and random bits.
fn run_id(deployment_id: &str, host: &str) -> String {
    let host: String = host
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '-'
            }
        })
        .take(63)
        .collect();
    let host = if host.is_empty() {
        "host".to_owned()
    } else {
        host
    };
    format!("{deployment_id}.{host}.{}", crate::plan::unique_suffix())
}

/// This process as the host knows it: boot id, pid namespace, pid and start time (clock
/// ticks after boot), so neither a later process with the same pid nor a process of another
/// container sharing the host name is taken for it. `None` off Linux.
pub(crate) fn this_process() -> Option<String> {
    process_identity(std::process::id())
}

fn process_identity(pid: u32) -> Option<String> {
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
    let namespace = pid_namespace()?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces: count from after it.
    let mut fields = stat[stat.rfind(')')? + 1..].split_whitespace();
    // A zombie has exited: only its parent has not read its status yet.
    if fields.next()? == "Z" {
        return None;
    }
    let start = fields.nth(18)?;
    Some(format!("{}:{namespace}:{pid}:{start}", boot.trim()))
}

/// This process's pid namespace (`pid:[4026531836]` read as its number).
fn pid_namespace() -> Option<String> {
    let link = std::fs::read_link("/proc/self/ns/pid").ok()?;
    let text = link.to_string_lossy();
    let number: String = text.chars().filter(char::is_ascii_digit).collect();
    (!number.is_empty()).then_some(number)
}

/// Whether the run recorded as `process` on `host` is known to be gone: it ran on this host,
/// in this boot and pid namespace, and no process with its pid and start time exists now.
pub(crate) fn gone_from_this_host(host: &str, this_host: &str, process: Option<&str>) -> bool {
    let Some(process) = process else {
        return false;
    };
    let mut parts = process.splitn(4, ':');
    let (Some(boot), Some(namespace), Some(pid), Some(_)) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    let Some(ours) = this_process() else {
        return false;
    };
    if host != this_host || !ours.starts_with(&format!("{boot}:{namespace}:")) {
        return false;
    }
    let Ok(pid) = pid.parse::<u32>() else {
        return false;
    };
    process_identity(pid).as_deref() != Some(process)
}

/// Why the deployment may not start because the fleet is quiesced — or the flag cannot be
/// read and the policy fails closed; `None` to go ahead.
pub(crate) async fn quiesced(control: &Control) -> Option<String> {
    match control.store.quiesce().await {
        Ok(None) => None,
        Ok(Some(quiesce)) => Some(format!(
            "the fleet is {quiesce}; `flotilla quiesce clear` lifts it"
        )),
        Err(error) => match control.quiesce_unreadable {
            QuiesceUnreadable::FailClosed => Some(format!(
                "the quiesce flag cannot be read, and flotilla fails closed: {error}"
            )),
            QuiesceUnreadable::FailOpen => {
                tracing::warn!(%error, "the quiesce flag cannot be read: deploying anyway (fail open)");
                None
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_process_gone_from_this_host_boot_and_namespace_is_known_dead() {
        let ours = this_process().expect("Linux");
        assert!(!gone_from_this_host("h", "h", Some(&ours)), "alive");
        assert!(!gone_from_this_host("other", "h", Some(&ours)));
        let mut parts: Vec<String> = ours.split(':').map(str::to_owned).collect();
        // A pid no process has (above the kernel's limit).
        parts[2] = "4194305".to_owned();
        assert!(gone_from_this_host("h", "h", Some(&parts.join(":"))));
        // The same pid in another pid namespace (another container) is not ours to judge.
        let mut other = parts.clone();
        other[1] = "1".to_owned();
        assert!(!gone_from_this_host("h", "h", Some(&other.join(":"))));
        // The same pid started at another time is another process: the recorded one is gone.
        let mut reused: Vec<String> = ours.split(':').map(str::to_owned).collect();
        reused[3] = "1".to_owned();
        assert!(gone_from_this_host("h", "h", Some(&reused.join(":"))));
        assert!(!gone_from_this_host("h", "h", None));
    }
}
