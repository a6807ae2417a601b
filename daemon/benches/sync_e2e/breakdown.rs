//! Where the latency goes: stage times of each object from tmcd's own log lines
//! (`placed by <placement>` after the placement patch, `applied copy` after the
//! downstream apply), between the create and the watch event.

use super::*;
use chrono::{DateTime, Utc};

/// One object's create and seen times (wall clock).
pub struct Trace {
    pub key: String,
    pub created: DateTime<Utc>,
    pub seen: DateTime<Utc>,
}

/// Stage durations: create -> placed, placed -> applied, applied -> seen.
pub type Stages = (Vec<Duration>, Vec<Duration>, Vec<Duration>);

fn at(line: &str) -> Option<DateTime<Utc>> {
    let stamp = line.split_whitespace().next()?;
    DateTime::parse_from_rfc3339(stamp)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// The log without ANSI colour sequences.
fn plain(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Stage durations of every trace found in `log` (placement `placement`).
pub fn stages(log: &Path, placement: &str, traces: &[Trace]) -> Result<Stages> {
    let text =
        std::fs::read_to_string(log).with_context(|| format!("reading {}", log.display()))?;
    let text = plain(&text);
    let mut placed: HashMap<&str, DateTime<Utc>> = HashMap::new();
    let mut applied: HashMap<&str, DateTime<Utc>> = HashMap::new();
    let placed_note = format!("placed by {placement} ");
    for line in text.lines() {
        let Some(t) = at(line) else { continue };
        if line.contains(&placed_note) {
            if let Some(key) = line.rsplit("object=").next() {
                placed.entry(key.trim()).or_insert(t);
            }
        } else if let Some(rest) = line.split("applied copy object=").nth(1)
            && let Some(key) = rest.split_whitespace().nth(1)
        {
            applied.entry(key).or_insert(t);
        }
    }
    let span = |a: DateTime<Utc>, b: DateTime<Utc>| (b - a).to_std().unwrap_or_default();
    let mut out: Stages = Default::default();
    for tr in traces {
        let (Some(p), Some(a)) = (placed.get(tr.key.as_str()), applied.get(tr.key.as_str())) else {
            continue;
        };
        out.0.push(span(tr.created, *p));
        out.1.push(span(*p, *a));
        out.2.push(span(*a, tr.seen));
    }
    Ok(out)
}
