use crate::metrics::Metrics;

/// Where EMF metric lines go: stdout in Lambda (CloudWatch reads them), elsewhere quiet.
pub trait MetricsSink: Send + Sync {
    /// Emits one set of metrics taken at `timestamp_ms`.
    fn emit(&self, metrics: &Metrics, timestamp_ms: u64);
}

/// Writes each set as one EMF JSON line on stdout (Lambda).
#[derive(Debug, Clone, Copy, Default)]
pub struct StdoutMetrics;

impl MetricsSink for StdoutMetrics {
    fn emit(&self, metrics: &Metrics, timestamp_ms: u64) {
        println!("{}", metrics.line(timestamp_ms));
    }
}

/// Drops metrics (`spigot dev`, tests, the relay, which has its own Prometheus counters).
#[derive(Debug, Clone, Copy, Default)]
pub struct QuietMetrics;

impl MetricsSink for QuietMetrics {
    fn emit(&self, _metrics: &Metrics, _timestamp_ms: u64) {}
}
