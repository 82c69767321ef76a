use std::time::Duration;

use sendwerk_core::Domain;
use sendwerk_proto::v1::{self, admin_service_server::AdminService};
use sendwerk_store::DomainSetting;
use tonic::{Request, Response, Status};

use crate::ControlError;
use crate::convert::timestamp;
use crate::server::ControlState;

/// Senders whose heartbeat is older than this are not listed.
const LIVE_WINDOW: Duration = Duration::from_secs(120);

fn domain(raw: &str) -> Result<Domain, ControlError> {
    Domain::parse(raw.trim()).map_err(|error| ControlError::invalid("domain", error.to_string()))
}

fn to_proto(setting: DomainSetting) -> v1::DomainSettings {
    v1::DomainSettings {
        domain: setting.domain,
        max_per_minute: setting.max_per_minute.unwrap_or(0),
        paused: setting.paused,
    }
}

#[tonic::async_trait]
impl AdminService for ControlState {
    async fn set_domain_settings(
        &self,
        request: Request<v1::DomainSettings>,
    ) -> Result<Response<v1::DomainSettings>, Status> {
        self.authorize(&request)?;
        let request = request.into_inner();
        let domain = domain(&request.domain)?;
        let max_per_minute = match request.max_per_minute {
            0 => None,
            limit if limit > 0 => Some(limit),
            negative => {
                return Err(ControlError::invalid(
                    "max_per_minute",
                    format!("{negative} is negative; use 0 for the default"),
                )
                .into());
            }
        };
        let setting = DomainSetting { domain: domain.to_string(), max_per_minute, paused: request.paused };
        let stored = self.store.put_domain_setting(&setting).await.map_err(ControlError::from)?;
        tracing::info!(domain = %stored.domain, max_per_minute = ?stored.max_per_minute, paused = stored.paused, "domain settings changed");
        Ok(Response::new(to_proto(stored)))
    }

    async fn clear_domain_settings(
        &self,
        request: Request<v1::ClearDomainSettingsRequest>,
    ) -> Result<Response<v1::ClearDomainSettingsResponse>, Status> {
        self.authorize(&request)?;
        let domain = domain(&request.into_inner().domain)?;
        let existed = self.store.delete_domain_setting(domain.as_str()).await.map_err(ControlError::from)?;
        Ok(Response::new(v1::ClearDomainSettingsResponse { existed }))
    }

    async fn list_domain_settings(
        &self,
        request: Request<v1::ListDomainSettingsRequest>,
    ) -> Result<Response<v1::ListDomainSettingsResponse>, Status> {
        self.authorize(&request)?;
        let settings = self.store.domain_settings().await.map_err(ControlError::from)?;
        Ok(Response::new(v1::ListDomainSettingsResponse { domains: settings.into_iter().map(to_proto).collect() }))
    }

    async fn list_senders(
        &self,
        request: Request<v1::ListSendersRequest>,
    ) -> Result<Response<v1::ListSendersResponse>, Status> {
        self.authorize(&request)?;
        let workers = self.store.list_workers(LIVE_WINDOW).await.map_err(ControlError::from)?;
        let senders = workers
            .into_iter()
            .map(|worker| v1::SenderInfo {
                id: worker.id.to_string(),
                hostname: worker.hostname,
                started_at: Some(timestamp(worker.started_at)),
                heartbeat_at: Some(timestamp(worker.heartbeat_at)),
                num_shards: i32::try_from(worker.num_shards).unwrap_or(i32::MAX),
            })
            .collect();
        Ok(Response::new(v1::ListSendersResponse { senders }))
    }
}
