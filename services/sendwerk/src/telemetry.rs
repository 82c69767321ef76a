//! Logging and tracing: structured logs to stderr (`RUST_LOG` filters, `SENDWERK_LOG_FORMAT=json`
//! for JSON lines), and spans exported over OTLP/gRPC when `OTEL_EXPORTER_OTLP_ENDPOINT` is set.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// Keeps the exporter alive; flushes spans when dropped.
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take() {
            let _ = provider.shutdown();
        }
    }
}

/// Installs the global subscriber. `default_filter` applies when `RUST_LOG` is unset.
pub fn init(default_filter: &str) -> anyhow::Result<TelemetryGuard> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let json = std::env::var("SENDWERK_LOG_FORMAT").is_ok_and(|format| format == "json");
    let fmt_layer = if json {
        tracing_subscriber::fmt::layer().json().with_writer(std::io::stderr).boxed()
    } else {
        tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_target(false).boxed()
    };
    let provider = match std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT") {
        Ok(endpoint) if !endpoint.is_empty() => {
            let exporter = opentelemetry_otlp::SpanExporter::builder().with_tonic().build()?;
            let resource = opentelemetry_sdk::Resource::builder().with_service_name("sendwerk").build();
            Some(SdkTracerProvider::builder().with_batch_exporter(exporter).with_resource(resource).build())
        }
        _ => None,
    };
    let otel_layer =
        provider.as_ref().map(|provider| tracing_opentelemetry::layer().with_tracer(provider.tracer("sendwerk")));
    tracing_subscriber::registry().with(filter).with(fmt_layer).with(otel_layer).try_init()?;
    Ok(TelemetryGuard { provider })
}
