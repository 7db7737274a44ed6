//! CloudWatch Embedded Metric Format: one JSON log line becomes metrics.

use serde_json::{Map, Value, json};

/// The namespace of every Spigot metric.
pub const NAMESPACE: &str = "Spigot";

/// A set of counts for one function, written as one EMF line.
#[derive(Debug, Clone)]
pub struct Metrics {
    function: String,
    counts: Vec<(String, f64, &'static str)>,
}

impl Metrics {
    /// Metrics of `function` (the `Function` dimension).
    pub fn new(function: &str) -> Self {
        Self {
            function: function.to_string(),
            counts: Vec::new(),
        }
    }

    /// Adds a count.
    pub fn count(mut self, name: &str, value: u64) -> Self {
        self.counts.push((name.to_string(), value as f64, "Count"));
        self
    }

    /// Adds a duration in milliseconds.
    pub fn millis(mut self, name: &str, value: f64) -> Self {
        self.counts.push((name.to_string(), value, "Milliseconds"));
        self
    }

    /// The EMF JSON line at `timestamp_ms`.
    pub fn line(&self, timestamp_ms: u64) -> String {
        let mut root = Map::new();
        root.insert(
            "_aws".into(),
            json!({
                "Timestamp": timestamp_ms,
                "CloudWatchMetrics": [{
                    "Namespace": NAMESPACE,
                    "Dimensions": [["Function"]],
                    "Metrics": self.counts.iter().map(|(n, _, u)| json!({"Name": n, "Unit": u})).collect::<Vec<_>>(),
                }],
            }),
        );
        root.insert("Function".into(), Value::String(self.function.clone()));
        for (name, value, _) in &self.counts {
            root.insert(name.clone(), json!(value));
        }
        Value::Object(root).to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_is_emf() {
        let line = Metrics::new("receiver")
            .count("Buffered", 2)
            .millis("ForwardLatency", 1.5)
            .line(7);
        let v: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["_aws"]["Timestamp"], 7);
        assert_eq!(v["_aws"]["CloudWatchMetrics"][0]["Namespace"], "Spigot");
        assert_eq!(
            v["_aws"]["CloudWatchMetrics"][0]["Metrics"][1]["Unit"],
            "Milliseconds"
        );
        assert_eq!(v["Function"], "receiver");
        assert_eq!(v["Buffered"], 2.0);
    }
}
