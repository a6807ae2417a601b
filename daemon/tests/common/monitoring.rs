//! The metric names `config/monitoring/` uses, and a check of them against
//! a Prometheus text exposition (tmcd's `/metrics`).

use std::collections::BTreeSet;
use std::path::PathBuf;

use serde_json::Value;

fn monitoring_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../config/monitoring")
}

/// Every PromQL expression of the dashboard (`expr` of each panel target).
pub fn dashboard_exprs() -> Vec<String> {
    let text = std::fs::read_to_string(monitoring_dir().join("dashboard.json"))
        .expect("config/monitoring/dashboard.json");
    let dashboard: Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    let mut out = Vec::new();
    collect_exprs(&dashboard, &mut out);
    out
}

fn collect_exprs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("expr", Value::String(e)) => out.push(e.clone()),
                    _ => collect_exprs(v, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| collect_exprs(v, out)),
        _ => {}
    }
}

/// The alert rules: (alert name, expression).
pub fn alert_rules() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(monitoring_dir().join("alerts.yaml"))
        .expect("config/monitoring/alerts.yaml");
    let rules: Value = serde_yaml::from_str(&text).expect("the alert rules are YAML");
    rules["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .flat_map(|g| g["rules"].as_array().expect("rules").iter())
        .map(|r| {
            (
                r["alert"].as_str().expect("alert name").to_string(),
                r["expr"].as_str().expect("expr").to_string(),
            )
        })
        .collect()
}

/// The `tmcd_*` names in `expr`, outside quoted label values (PromQL
/// functions and label names never start so).
pub fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let bytes = expr.as_bytes();
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b':';
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'"' {
            i += 1;
            while i < bytes.len() && bytes[i] != b'"' {
                i += if bytes[i] == b'\\' { 2 } else { 1 };
            }
            i += 1;
        } else if word(bytes[i]) && (i == 0 || !word(bytes[i - 1])) {
            let start = i;
            while i < bytes.len() && word(bytes[i]) {
                i += 1;
            }
            let token = &expr[start..i];
            if token.starts_with("tmcd_") {
                names.insert(token.to_string());
            }
        } else {
            i += 1;
        }
    }
    names
}

/// The sample names an exposition defines: from each `# TYPE name type`
/// line, `name` for a gauge, `name_total` for a counter, `name_bucket`,
/// `name_count` and `name_sum` for a histogram.
pub fn defined_names(exposition: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for line in exposition.lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        let mut parts = rest.split_whitespace();
        let (Some(name), Some(kind)) = (parts.next(), parts.next()) else {
            continue;
        };
        let suffixes: &[&str] = match kind {
            "counter" => &["_total"],
            "histogram" => &["_bucket", "_count", "_sum"],
            _ => &[""],
        };
        out.extend(suffixes.iter().map(|s| format!("{name}{s}")));
    }
    out
}

/// The names the dashboard and the alert rules use that `exposition` does
/// not define, with where they are used.
pub fn undefined(exposition: &str) -> Vec<String> {
    let defined = defined_names(exposition);
    let mut used: Vec<(String, String)> = dashboard_exprs()
        .into_iter()
        .map(|e| ("dashboard".to_string(), e))
        .collect();
    used.extend(
        alert_rules()
            .into_iter()
            .map(|(alert, e)| (format!("alert {alert}"), e)),
    );
    let mut missing = Vec::new();
    for (place, expr) in used {
        for name in metric_names(&expr) {
            if !defined.contains(&name) {
                missing.push(format!("{name} ({place}: {expr})"));
            }
        }
    }
    missing
}
