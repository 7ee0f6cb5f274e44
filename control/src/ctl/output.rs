//! How reports are written: for people (the default), or as JSON (`-o json`).

use std::fmt::Write;

use serde::Serialize;

use super::certs::{CertView, Certs};
use super::check::CheckReport;
use super::error::CtlError;
use super::explain::Explanation;
use super::finding::Finding;
use super::routes::{RankedRule, RouteTable, RuleView};
use super::status::{Status, until};
use super::top::Top;

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
    if let Some(h) = &rule.hedging {
        let mut non_fatal: Vec<String> = h.non_fatal_codes.iter().map(u16::to_string).collect();
        non_fatal.extend(h.non_fatal_statuses.iter().cloned());
        let non_fatal = if non_fatal.is_empty() {
            String::new()
        } else {
            format!(", at once after {}", non_fatal.join(", "))
        };
        let _ = writeln!(
            out,
            "{pad}hedging: up to {} tries, each after {}{non_fatal}",
            h.max_attempts, h.delay
        );
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

/// `status` for people: one line per subscriber, its NACK's fields under it.
pub fn status(status: &Status, now: std::time::SystemTime) -> String {
    let mut out = String::new();
    for replica in &status.replicas {
        let _ = writeln!(
            out,
            "control {}: config version {}",
            replica.replica, replica.config_version
        );
    }
    let _ = writeln!(
        out,
        "{:<21} {:<16} {:<22} {:<48} {:>11} {:<7} {:>9}",
        "REPLICA", "NODE", "SERVICE", "IDENTITY", "ACKED/SENT", "STATE", "CERT LEFT"
    );
    for row in &status.subscribers {
        let state = match (&row.last_nack, row.stale) {
            (Some(nack), true) if nack.version == row.last_sent_version => "NACKED",
            (_, true) => "STALE",
            _ => "SYNCED",
        };
        let acked = row
            .last_acked_version
            .map_or_else(|| "-".to_owned(), |v| v.to_string());
        let cert = row
            .certificate_expires_at_unix
            .map_or_else(|| "-".to_owned(), |at| duration(until(at, now)));
        let _ = writeln!(
            out,
            "{:<21} {:<16} {:<22} {:<48} {:>11} {:<7} {:>9}",
            row.replica,
            row.node,
            row.own_service.as_deref().unwrap_or("-"),
            row.identity,
            format!("{acked}/{}", row.last_sent_version),
            state,
            cert
        );
        if let Some(nack) = &row.last_nack {
            if nack.details.is_empty() {
                let _ = writeln!(out, "    NACK of version {}: {}", nack.version, nack.error);
            }
            for field in &nack.details {
                let _ = writeln!(
                    out,
                    "    NACK of version {}: {}: {} ({})",
                    nack.version, field.field, field.message, field.code
                );
            }
        }
    }
    for down in &status.unreachable {
        let _ = writeln!(out, "unreachable: {}: {}", down.replica, down.error);
    }
    out
}

/// `certs` for people.
pub fn certs(certs: &Certs) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "trust bundle ({}):", certs.bundle_source);
    for root in &certs.roots {
        cert_line(&mut out, root);
    }
    if let Some(workload) = &certs.workload {
        let _ = writeln!(out, "workload {} presents:", workload.address);
        for cert in &workload.chain {
            cert_line(&mut out, cert);
        }
        match &workload.verified {
            Ok(id) => {
                let _ = writeln!(out, "verified: {id}");
            }
            Err(why) => {
                let _ = writeln!(out, "NOT verified: {why}");
            }
        }
    }
    out
}

fn cert_line(out: &mut String, cert: &CertView) {
    let name = cert
        .uris
        .first()
        .cloned()
        .unwrap_or_else(|| cert.subject.clone());
    // Workload certificates live a day and renew themselves: only a CA near its end is news.
    let warning = match cert.expires_in_seconds {
        s if s < 0 => "  EXPIRED",
        s if s < 30 * 86_400 && cert.is_ca => "  expires within 30 days",
        _ => "",
    };
    let _ = writeln!(
        out,
        "  {name}{}  serial {}  expires in {}{warning}",
        if cert.is_ca { " (CA)" } else { "" },
        cert.serial,
        duration(cert.expires_in_seconds)
    );
}

/// Seconds as `3d4h`, `5h12m`, `42m`, `17s` (negative: `-` first).
fn duration(seconds: i64) -> String {
    let sign = if seconds < 0 { "-" } else { "" };
    let s = seconds.unsigned_abs();
    let text = match s {
        86_400.. => format!("{}d{}h", s / 86_400, s % 86_400 / 3600),
        3600.. => format!("{}h{}m", s / 3600, s % 3600 / 60),
        60.. => format!("{}m", s / 60),
        _ => format!("{s}s"),
    };
    format!("{sign}{text}")
}

/// `top` for people: one line per edge, busiest first.
pub fn top(top: &Top) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "calls over the last {} s, busiest first",
        top.window_seconds
    );
    let _ = writeln!(
        out,
        "{:<48} {:<20} {:>9} {:>8} {:>9} {:>9}",
        "FROM", "TO", "CALLS/S", "SUCCESS", "P50", "P99"
    );
    for edge in &top.edges {
        let _ = writeln!(
            out,
            "{:<48} {:<20} {:>9.2} {:>7.1}% {:>7.2}ms {:>7.2}ms",
            edge.from,
            edge.to,
            edge.calls_per_second,
            edge.success_rate * 100.0,
            edge.p50_ms,
            edge.p99_ms
        );
    }
    for (replica, error) in &top.unreachable {
        let _ = writeln!(out, "unreachable: {replica}: {error}");
    }
    out
}
