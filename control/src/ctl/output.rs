//! How reports are written: for people (the default), or as JSON (`-o json`).

use std::fmt::Write;

use serde::Serialize;

use super::check::CheckReport;
use super::error::CtlError;
use super::explain::Explanation;
use super::finding::Finding;
use super::routes::{RankedRule, RouteTable, RuleView};

/// The output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Format {
    /// Text for people.
    #[default]
    Human,
    /// One JSON document.
    Json,
}

/// `report` as pretty JSON, with a final newline.
pub fn json<T: Serialize>(report: &T) -> Result<String, CtlError> {
    let mut text = serde_json::to_string_pretty(report)?;
    text.push('\n');
    Ok(text)
}

/// A `check` report for people: one line per finding, then a summary line.
pub fn check(report: &CheckReport) -> String {
    let mut out = String::new();
    for f in report.errors.iter().chain(&report.warnings) {
        let _ = writeln!(out, "{}", finding(f));
    }
    let _ = writeln!(
        out,
        "{}: {} error(s), {} warning(s)",
        report.file,
        report.errors.len(),
        report.warnings.len()
    );
    out
}

fn finding(f: &Finding) -> String {
    let severity = match f.severity {
        super::finding::Severity::Error => "error",
        super::finding::Severity::Warning => "warning",
    };
    let place = match (f.path.as_str(), f.line, f.column) {
        ("", Some(line), Some(column)) => format!("line {line} column {column}: "),
        ("", Some(line), None) => format!("line {line}: "),
        ("", None, _) => String::new(),
        (path, _, _) => format!("{path}: "),
    };
    format!("{severity}: {place}{}", f.message)
}

/// A route table for people.
pub fn routes(table: &RouteTable) -> String {
    let mut out = String::new();
    let seen = table
        .from_namespace
        .as_ref()
        .map_or(String::new(), |ns| format!(" as namespace {ns} sees it"));
    let _ = writeln!(out, "{}{seen}", table.destination);
    if table.http.is_empty() && table.grpc.is_empty() {
        let _ = writeln!(
            out,
            "no routes attached: calls go to the service's own {} endpoint(s)",
            table.endpoints.len()
        );
        for e in &table.endpoints {
            let _ = writeln!(out, "  {} {} (weight {})", e.address, e.identity, e.weight);
        }
        return out;
    }
    for (title, list) in [
        (
            "HTTP routes (plain HTTP calls, and gRPC calls when no gRPC route is attached)",
            &table.http,
        ),
        ("gRPC routes (gRPC calls)", &table.grpc),
    ] {
        if list.is_empty() {
            continue;
        }
        let _ = writeln!(out, "{title}, in precedence order:");
        ranked(&mut out, list);
    }
    out
}

fn ranked(out: &mut String, list: &[RankedRule]) {
    let mut shown: Vec<(String, usize, usize)> = Vec::new();
    for entry in list {
        let rule = &entry.rule;
        let which = match entry.match_index {
            Some(i) => format!("matches[{i}]"),
            None => "no matches (match-all)".to_owned(),
        };
        let _ = writeln!(
            out,
            "  {}. {} {which}: {}",
            entry.rank,
            rule_label(rule),
            entry.conditions
        );
        let id = (rule.route.clone(), rule.index, 0);
        if let Some((_, _, rank)) = shown
            .iter()
            .find(|(route, index, _)| *route == id.0 && *index == id.1)
        {
            let _ = writeln!(out, "       (the rule of {rank}. above)");
            continue;
        }
        shown.push((id.0, id.1, entry.rank));
        rule_details(out, rule, "       ");
    }
}

/// `route "name" rule 1 ("name")`.
fn rule_label(rule: &RuleView) -> String {
    match &rule.name {
        Some(name) => format!("route {:?} rule {} ({name:?})", rule.route, rule.index),
        None => format!("route {:?} rule {}", rule.route, rule.index),
    }
}

fn rule_details(out: &mut String, rule: &RuleView, pad: &str) {
    if rule.backends.is_empty() {
        let _ = writeln!(out, "{pad}backends: none (every request fails)");
    }
    for b in &rule.backends {
        let state = if !b.found {
            " NOT FOUND (its share fails)".to_owned()
        } else {
            format!(", {} endpoint(s)", b.endpoints)
        };
        let _ = writeln!(
            out,
            "{pad}-> {} weight {} ({}%){state}",
            b.service, b.weight, b.percent
        );
    }
    let timeout = |t: &Option<String>| t.clone().unwrap_or_else(|| "none".to_owned());
    let _ = writeln!(
        out,
        "{pad}timeouts: request {}, per try {}",
        timeout(&rule.request_timeout),
        timeout(&rule.backend_request_timeout)
    );
    match &rule.retry {
        None => {
            let _ = writeln!(out, "{pad}retry: none");
        }
        Some(r) => {
            let mut on: Vec<String> = r.codes.iter().map(u16::to_string).collect();
            on.extend(r.statuses.iter().cloned());
            let backoff = r
                .backoff
                .as_ref()
                .map_or(String::new(), |b| format!(", backoff {b}"));
            let _ = writeln!(
                out,
                "{pad}retry: {} attempt(s) on {}{backoff}",
                r.attempts,
                if on.is_empty() {
                    "nothing".to_owned()
                } else {
                    on.join(", ")
                }
            );
        }
    }
    for f in &rule.filters {
        let _ = writeln!(out, "{pad}filter: {f}");
    }
}

/// An explanation for people.
pub fn explain(e: &Explanation) -> String {
    let mut out = String::new();
    let seen = e.from_namespace.as_ref().map_or(String::new(), |ns| {
        format!(", routes as namespace {ns} sees them")
    });
    let _ = writeln!(
        out,
        "{} to {} as {}{seen}",
        e.request, e.destination, e.caller
    );
    let _ = writeln!(out, "routing: {}", e.summary);
    if !e.checked.is_empty() {
        let _ = writeln!(out, "checked, in precedence order:");
        for (i, c) in e.checked.iter().enumerate() {
            let rule = match &c.rule_name {
                Some(name) => format!("route {:?} rule {} ({name:?})", c.route, c.rule),
                None => format!("route {:?} rule {}", c.route, c.rule),
            };
            let which = c
                .match_index
                .map_or("match-all".to_owned(), |m| format!("matches[{m}]"));
            let result = match &c.failed {
                None => "MATCHED".to_owned(),
                Some(why) => format!("no: {why}"),
            };
            let _ = writeln!(
                out,
                "  {}. {rule} {which} ({}): {result}",
                i + 1,
                c.conditions
            );
        }
    }
    match (&e.rule, e.outcome) {
        (Some(rule), _) => {
            let _ = writeln!(out, "rule applied: {}", rule_label(rule));
            rule_details(&mut out, rule, "  ");
        }
        (None, "no-routes") => {
            let _ = writeln!(
                out,
                "no routes: the service's own {} endpoint(s) serve it",
                e.endpoints.len()
            );
        }
        (None, _) => {}
    }
    if let Some(failure) = &e.failure {
        let _ = writeln!(out, "fails: {failure}; no server sees the request");
    }
    if !e.authorization.is_empty() {
        let _ = writeln!(out, "authorization ({}):", e.caller);
    }
    for a in &e.authorization {
        let port = a.port.map_or(String::new(), |p| format!(" port {p}"));
        let route = a
            .route
            .as_ref()
            .map_or(String::new(), |r| format!(", its route {r:?}"));
        let _ = writeln!(
            out,
            "  {}{port}{route}: {} ({})",
            a.server,
            a.verdict.to_uppercase(),
            a.message
        );
    }
    out
}
