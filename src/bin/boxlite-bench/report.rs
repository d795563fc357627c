//! The harness's results: rows of (figure, metric, value, baseline, ratio) per engine,
//! printed as one markdown table and as one JSON document.

use serde_json::{json, Value};

/// Nearest-rank percentile of unsorted samples (NaN when there are none).
pub fn percentile(values: &[f64], p: f64) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// What a value is compared with: a host measurement taken in the same run, or a target.
#[derive(Debug, Clone)]
pub struct Baseline {
    pub label: String,
    pub value: f64,
}

#[derive(Debug, Clone)]
pub struct Row {
    pub figure: &'static str,
    pub metric: String,
    /// None: not measured (see `note`).
    pub value: Option<f64>,
    pub baseline: Option<Baseline>,
    pub note: Option<String>,
}

impl Row {
    pub fn ratio(&self) -> Option<f64> {
        match (self.value, &self.baseline) {
            (Some(v), Some(b)) if b.value != 0.0 => Some(v / b.value),
            _ => None,
        }
    }
}

/// The rows and details of one engine.
#[derive(Default)]
pub struct EngineReport {
    pub rows: Vec<Row>,
    /// Per figure: samples and breakdowns, for the JSON document only.
    pub details: serde_json::Map<String, Value>,
}

impl EngineReport {
    pub fn add(&mut self, figure: &'static str, metric: impl Into<String>, value: f64) {
        self.rows.push(Row { figure, metric: metric.into(), value: Some(value), baseline: None, note: None });
    }

    pub fn add_vs(&mut self, figure: &'static str, metric: impl Into<String>, value: f64, label: impl Into<String>, baseline: f64) {
        let baseline = Some(Baseline { label: label.into(), value: baseline });
        self.rows.push(Row { figure, metric: metric.into(), value: Some(value), baseline, note: None });
    }

    /// A figure that could not be measured, and why (shown in the value column).
    pub fn unavailable(&mut self, figure: &'static str, why: impl Into<String>) {
        self.rows.push(Row { figure, metric: String::new(), value: None, baseline: None, note: Some(why.into()) });
    }

    pub fn detail(&mut self, figure: &str, value: Value) {
        self.details.insert(figure.to_string(), value);
    }
}

fn number(value: f64) -> String {
    if !value.is_finite() {
        return "-".into();
    }
    let magnitude = value.abs();
    if magnitude >= 100.0 {
        format!("{value:.1}")
    } else if magnitude >= 1.0 {
        format!("{value:.2}")
    } else {
        format!("{value:.3}")
    }
}

/// The table, in markdown so that it can go into docs/performance.md as printed.
pub fn table(engine: &str, report: &EngineReport) -> String {
    let mut out = format!("| {engine}: figure | metric | value | baseline | ratio |\n|---|---|---|---|---|\n");
    for row in &report.rows {
        let value = match (row.value, &row.note) {
            (Some(v), _) => number(v),
            // One line in the table; the whole note (logs included) is in the JSON.
            (None, Some(note)) => note.lines().next().unwrap_or_default().to_string(),
            (None, None) => "-".into(),
        };
        let baseline = row.baseline.as_ref().map(|b| format!("{} ({})", number(b.value), b.label)).unwrap_or_else(|| "-".into());
        let ratio = row.ratio().map(number).unwrap_or_else(|| "-".into());
        out.push_str(&format!("| {} | {} | {value} | {baseline} | {ratio} |\n", row.figure, row.metric));
    }
    out
}

pub fn json(report: &EngineReport) -> Value {
    let rows: Vec<Value> = report
        .rows
        .iter()
        .map(|row| {
            json!({
                "figure": row.figure,
                "metric": row.metric,
                "value": row.value,
                "baseline": row.baseline.as_ref().map(|b| json!({ "label": b.label, "value": b.value })),
                "ratio": row.ratio(),
                "note": row.note,
            })
        })
        .collect();
    json!({ "rows": rows, "details": report.details })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_is_nearest_rank() {
        let values = [5.0, 1.0, 4.0, 2.0, 3.0];
        assert_eq!(percentile(&values, 50.0), 3.0);
        assert_eq!(percentile(&values, 0.0), 1.0);
        assert_eq!(percentile(&values, 100.0), 5.0);
        assert!(percentile(&[], 50.0).is_nan());
    }

    #[test]
    fn table_shows_ratio_and_unavailable_reason() {
        let mut report = EngineReport::default();
        report.add_vs("exec", "round trip p50 (ms)", 10.0, "host", 2.0);
        report.unavailable("images", "not available: apt install skopeo umoci");
        let text = table("qemu", &report);
        assert!(text.contains("| exec | round trip p50 (ms) | 10.00 | 2.00 (host) | 5.00 |"), "{text}");
        assert!(text.contains("| images |  | not available: apt install skopeo umoci | - | - |"), "{text}");
    }
}
