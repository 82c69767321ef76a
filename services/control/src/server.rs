use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use sendwerk_bounce::BounceProcessor;
use sendwerk_core::{DeliveryOutcome, EmailAddress, TenantId};
use sendwerk_mail::dkim::DkimSigners;
use sendwerk_mail::smtp::{self, RelayConfig};
use sendwerk_proto::v1;
use sendwerk_proto::v1::admin_service_server::AdminServiceServer;
use sendwerk_proto::v1::bounce_service_server::BounceServiceServer;
use sendwerk_proto::v1::mailing_service_server::MailingServiceServer;
use sendwerk_proto::v1::suppression_service_server::SuppressionServiceServer;
use sendwerk_sender::PreparedMailing;
use sendwerk_store::Store;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::Request;
use tracing::info;

use crate::ControlError;

/// Settings of the control plane.
#[derive(Clone)]
pub struct ControlConfig {
    /// When set, every call must carry `authorization: Bearer <token>`. Never logged.
    pub api_token: Option<String>,
    pub max_message_bytes: usize,
    /// Where `SendTest` delivers.
    pub relay: RelayConfig,
    /// How often `WatchMailing` looks for changes.
    pub watch_interval: Duration,
}

impl Default for ControlConfig {
    fn default() -> Self {
        Self {
            api_token: None,
            max_message_bytes: 10 * 1024 * 1024,
            relay: RelayConfig::default(),
            watch_interval: Duration::from_millis(250),
        }
    }
}

/// What every handler shares.
#[derive(Clone)]
pub struct ControlState {
    pub(crate) store: Store,
    pub(crate) config: Arc<ControlConfig>,
    pub(crate) signers: Arc<DkimSigners>,
    pub(crate) tenant: TenantId,
    /// Applies reports given to `IngestReport`; `None` when bounce handling is not configured.
    pub(crate) bounce_processor: Option<Arc<BounceProcessor>>,
}

impl ControlState {
    pub fn new(store: Store, config: ControlConfig, signers: Arc<DkimSigners>) -> Self {
        Self { store, config: Arc::new(config), signers, tenant: TenantId::default(), bounce_processor: None }
    }

    /// Enables `IngestReport` with the given processor.
    pub fn with_bounce_processor(mut self, processor: Arc<BounceProcessor>) -> Self {
        self.bounce_processor = Some(processor);
        self
    }

    /// Checks the bearer token when one is configured, in constant time.
    pub(crate) fn authorize<T>(&self, request: &Request<T>) -> Result<(), ControlError> {
        let Some(expected) = &self.config.api_token else {
            return Ok(());
        };
        let given = request
            .metadata()
            .get("authorization")
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "))
            .ok_or_else(|| ControlError::Unauthenticated("missing bearer token".into()))?;
        if sendwerk_core::constant_time_eq(given.as_bytes(), expected.as_bytes()) {
            Ok(())
        } else {
            Err(ControlError::Unauthenticated("invalid bearer token".into()))
        }
    }

    /// Delivers one message right now over a fresh connection (test sends).
    pub(crate) async fn send_now(
        &self,
        prepared: &PreparedMailing,
        to: &EmailAddress,
        message: Vec<u8>,
    ) -> Result<v1::TestDelivery, ControlError> {
        let signed = self
            .signers
            .sign(&prepared.from_domain, &message)
            .map_err(|error| ControlError::Internal(format!("dkim signing failed: {error}")))?
            .unwrap_or(message);
        let mut session = match smtp::connect(&self.config.relay).await {
            Ok(session) => session,
            Err(error) => {
                return Ok(v1::TestDelivery { accepted: false, smtp_reply: error.to_string(), ..Default::default() });
            }
        };
        let outcome = session.deliver(&prepared.return_path, to.as_str(), &signed).await;
        session.quit().await;
        Ok(match outcome {
            DeliveryOutcome::Delivered(reply) => v1::TestDelivery {
                accepted: true,
                smtp_code: i32::from(reply.code),
                smtp_reply: reply.to_string(),
                ..Default::default()
            },
            DeliveryOutcome::PermanentFailure(reply) => v1::TestDelivery {
                accepted: false,
                smtp_code: i32::from(reply.code),
                smtp_reply: reply.to_string(),
                ..Default::default()
            },
            DeliveryOutcome::Unknown { detail } => {
                v1::TestDelivery { accepted: false, smtp_reply: detail, ..Default::default() }
            }
            DeliveryOutcome::TemporaryFailure { reply, detail } => v1::TestDelivery {
                accepted: false,
                smtp_code: reply.map(|r| i32::from(r.code)).unwrap_or_default(),
                smtp_reply: detail,
                ..Default::default()
            },
        })
    }
}

/// Serves the gRPC API (with health and reflection) on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    state: ControlState,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter.set_serving::<MailingServiceServer<ControlState>>().await;
    health_reporter.set_serving::<SuppressionServiceServer<ControlState>>().await;
    health_reporter.set_serving::<AdminServiceServer<ControlState>>().await;
    health_reporter.set_serving::<BounceServiceServer<ControlState>>().await;
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(sendwerk_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|error| tracing::error!(error = %error, "reflection v1 unavailable"))
        .ok();
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(sendwerk_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()
        .map_err(|error| tracing::error!(error = %error, "reflection v1alpha unavailable"))
        .ok();
    if let Ok(address) = listener.local_addr() {
        info!(address = %address, "grpc control plane listening");
    }
    let max_message = state.config.max_message_bytes * 2 + 1024 * 1024;
    tonic::transport::Server::builder()
        .add_service(health_service)
        .add_optional_service(reflection_v1)
        .add_optional_service(reflection_v1alpha)
        .add_service(MailingServiceServer::new(state.clone()).max_decoding_message_size(max_message))
        .add_service(SuppressionServiceServer::new(state.clone()).max_decoding_message_size(max_message))
        .add_service(AdminServiceServer::new(state.clone()))
        .add_service(BounceServiceServer::new(state).max_decoding_message_size(max_message))
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown)
        .await
}
