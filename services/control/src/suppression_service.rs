use sendwerk_core::EmailAddress;
use sendwerk_proto::v1::{self, suppression_service_server::SuppressionService};
use sendwerk_store::{SuppressionReason, SuppressionRecord};
use tonic::{Request, Response, Status};

use crate::ControlError;
use crate::convert::timestamp;
use crate::server::ControlState;

const MAX_EMAILS_PER_CALL: usize = 10_000;

fn reason_from_proto(raw: i32) -> Result<SuppressionReason, ControlError> {
    match v1::SuppressionReason::try_from(raw) {
        Ok(v1::SuppressionReason::Unspecified | v1::SuppressionReason::Manual) => Ok(SuppressionReason::Manual),
        Ok(v1::SuppressionReason::Unsubscribe) => Ok(SuppressionReason::Unsubscribe),
        Ok(v1::SuppressionReason::HardBounce) => Ok(SuppressionReason::HardBounce),
        Ok(v1::SuppressionReason::Complaint) => Ok(SuppressionReason::Complaint),
        Ok(v1::SuppressionReason::SoftBounce) => Ok(SuppressionReason::SoftBounce),
        Err(_) => Err(ControlError::invalid("reason", format!("{raw} is not a suppression reason"))),
    }
}

fn reason_to_proto(reason: SuppressionReason) -> v1::SuppressionReason {
    match reason {
        SuppressionReason::Manual => v1::SuppressionReason::Manual,
        SuppressionReason::Unsubscribe => v1::SuppressionReason::Unsubscribe,
        SuppressionReason::HardBounce => v1::SuppressionReason::HardBounce,
        SuppressionReason::Complaint => v1::SuppressionReason::Complaint,
        SuppressionReason::SoftBounce => v1::SuppressionReason::SoftBounce,
    }
}

fn record_to_proto(record: SuppressionRecord) -> v1::Suppression {
    v1::Suppression {
        email: record.email,
        reason: reason_to_proto(record.reason) as i32,
        note: record.note,
        created_at: Some(timestamp(record.created_at)),
    }
}

/// Parses every address, strictly: one bad address fails the call, naming its index.
fn parse_all(emails: &[String]) -> Result<Vec<EmailAddress>, ControlError> {
    if emails.len() > MAX_EMAILS_PER_CALL {
        return Err(ControlError::invalid("emails", format!("at most {MAX_EMAILS_PER_CALL} per call")));
    }
    emails
        .iter()
        .enumerate()
        .map(|(index, raw)| {
            EmailAddress::parse(raw)
                .map_err(|error| ControlError::invalid(format!("emails[{index}]"), format!("{raw:?}: {error}")))
        })
        .collect()
}

#[tonic::async_trait]
impl SuppressionService for ControlState {
    async fn add_suppressions(
        &self,
        request: Request<v1::AddSuppressionsRequest>,
    ) -> Result<Response<v1::AddSuppressionsResponse>, Status> {
        self.authorize(&request)?;
        let request = request.into_inner();
        let reason = reason_from_proto(request.reason)?;
        if request.emails.len() > MAX_EMAILS_PER_CALL {
            return Err(ControlError::invalid("emails", format!("at most {MAX_EMAILS_PER_CALL} per call")).into());
        }
        let mut valid = Vec::with_capacity(request.emails.len());
        let mut invalid = Vec::new();
        for (index, raw) in request.emails.iter().enumerate() {
            match EmailAddress::parse(raw) {
                Ok(address) => valid.push(address),
                Err(error) => invalid.push(v1::InvalidEmail {
                    index: index as i64,
                    email: raw.clone(),
                    reason: error.to_string(),
                }),
            }
        }
        let added = self
            .store
            .add_suppressions(&self.tenant, &valid, reason, &request.note)
            .await
            .map_err(ControlError::from)?;
        Ok(Response::new(v1::AddSuppressionsResponse {
            added: i64::try_from(added.added).unwrap_or(i64::MAX),
            invalid,
            waiting_recipients_suppressed: i64::try_from(added.recipients_suppressed).unwrap_or(i64::MAX),
        }))
    }

    async fn remove_suppressions(
        &self,
        request: Request<v1::RemoveSuppressionsRequest>,
    ) -> Result<Response<v1::RemoveSuppressionsResponse>, Status> {
        self.authorize(&request)?;
        let emails = parse_all(&request.into_inner().emails)?;
        let removed = self.store.remove_suppressions(&self.tenant, &emails).await.map_err(ControlError::from)?;
        Ok(Response::new(v1::RemoveSuppressionsResponse { removed: removed as i64 }))
    }

    async fn list_suppressions(
        &self,
        request: Request<v1::ListSuppressionsRequest>,
    ) -> Result<Response<v1::ListSuppressionsResponse>, Status> {
        self.authorize(&request)?;
        let request = request.into_inner();
        let page_size = if request.page_size <= 0 { 100 } else { i64::from(request.page_size).min(1000) };
        let records = self
            .store
            .list_suppressions(&self.tenant, &request.page_token, page_size)
            .await
            .map_err(ControlError::from)?;
        let next_page_token = if records.len() as i64 == page_size {
            records.last().map(|r| r.email.clone()).unwrap_or_default()
        } else {
            String::new()
        };
        Ok(Response::new(v1::ListSuppressionsResponse {
            suppressions: records.into_iter().map(record_to_proto).collect(),
            next_page_token,
        }))
    }

    async fn check_suppressions(
        &self,
        request: Request<v1::CheckSuppressionsRequest>,
    ) -> Result<Response<v1::CheckSuppressionsResponse>, Status> {
        self.authorize(&request)?;
        let emails = parse_all(&request.into_inner().emails)?;
        let records = self.store.check_suppressions(&self.tenant, &emails).await.map_err(ControlError::from)?;
        Ok(Response::new(v1::CheckSuppressionsResponse {
            suppressed: records.into_iter().map(record_to_proto).collect(),
        }))
    }
}
