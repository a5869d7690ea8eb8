//! Approvals on the command line: `--approve ENV`, `--yes`, and — on a terminal only — a
//! prompt. Never waits for an answer when stdin is not a terminal.

use std::collections::BTreeSet;
use std::io::{BufRead, IsTerminal, Write};

use async_trait::async_trait;
use flotilla_coordinator::Approver;

/// Approves environments named on the command line, everything with `--yes`, and asks on a
/// terminal for the rest.
#[derive(Debug)]
pub(crate) struct CliApprover {
    approved: BTreeSet<String>,
    everything: bool,
    interactive: bool,
    /// What is asked about: `Deploy to`, `Roll back`.
    action: &'static str,
}

impl CliApprover {
    /// `names` approved, everything with `yes`; asks "`action` ENV?" on a terminal unless
    /// `json`.
    pub(crate) fn new(names: &[String], yes: bool, json: bool, action: &'static str) -> Self {
        Self {
            approved: names.iter().cloned().collect(),
            everything: yes,
            interactive: !json && std::io::stdin().is_terminal(),
            action,
        }
    }
}

#[async_trait]
impl Approver for CliApprover {
    async fn approve(&self, environments: &[String]) -> Vec<String> {
        let mut approved = Vec::new();
        for name in environments {
            if self.everything
                || self.approved.contains(name)
                || (self.interactive && ask(name, self.action))
            {
                approved.push(name.clone());
            }
        }
        approved
    }
}

fn ask(environment: &str, action: &str) -> bool {
    eprint!("{environment} requires approval. {action} {environment}? [y/N] ");
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer).is_ok()
        && matches!(answer.trim(), "y" | "Y" | "yes" | "YES")
}
