use bytes::Bytes;
use sendwerk_proto::v1::{self, bounce_service_server::BounceService};
use sendwerk_store::{ReportRecord, ReportSource, ReportStatus};
use tonic::{Request, Response, Status};

use crate::ControlError;
use crate::convert::timestamp;
use crate::server::ControlState;

fn status_to_proto(status: ReportStatus) -> v1::ReportStatus {
    match status {
        ReportStatus::Received => v1::ReportStatus::Received,
        ReportStatus::Applied => v1::ReportStatus::Applied,
        ReportStatus::Ignored => v1::ReportStatus::Ignored,
        ReportStatus::Quarantined => v1::ReportStatus::Quarantined,
    }
}

fn status_filter(raw: i32) -> Result<Option<ReportStatus>, ControlError> {
    match v1::ReportStatus::try_from(raw) {
        Ok(v1::ReportStatus::Unspecified) => Ok(None),
        Ok(v1::ReportStatus::Received) => Ok(Some(ReportStatus::Received)),
        Ok(v1::ReportStatus::Applied) => Ok(Some(ReportStatus::Applied)),
        Ok(v1::ReportStatus::Ignored) => Ok(Some(ReportStatus::Ignored)),
        Ok(v1::ReportStatus::Quarantined) => Ok(Some(ReportStatus::Quarantined)),
        Err(_) => Err(ControlError::invalid("status", format!("{raw} is not a report status"))),
    }
}

fn report_to_proto(record: ReportRecord) -> v1::InboundReport {
    v1::InboundReport {
        id: record.id,
        received_at: Some(timestamp(record.received_at)),
        source: record.source,
        envelope_from: record.envelope_from.unwrap_or_default(),
        envelope_to: record.envelope_to.unwrap_or_default(),
        status: status_to_proto(record.status) as i32,
        kind: record.kind.unwrap_or_default(),
        problem: record.problem.unwrap_or_default(),
        num_records: record.num_records,
        num_applied: record.num_applied,
        num_bytes: record.num_bytes,
    }
}

#[tonic::async_trait]
impl BounceService for ControlState {
    async fn ingest_report(
        &self,
        request: Request<v1::IngestReportRequest>,
    ) -> Result<Response<v1::IngestReportResponse>, Status> {
        self.authorize(&request)?;
        let processor = self.bounce_processor.as_ref().ok_or_else(|| {
            ControlError::FailedPrecondition(
                "bounce handling is not configured (bounce.domain and bounce.secret)".into(),
            )
        })?;
        let request = request.into_inner();
        if request.raw.is_empty() {
            return Err(ControlError::invalid("raw", "is empty").into());
        }
        if request.raw.len() > self.config.max_message_bytes {
            return Err(ControlError::invalid(
                "raw",
                format!("{} bytes, more than the limit of {}", request.raw.len(), self.config.max_message_bytes),
            )
            .into());
        }
        let envelope_to = Some(request.envelope_to.as_str()).filter(|to| !to.is_empty());
        let processed = processor
            .process(Bytes::from(request.raw), ReportSource::Api, None, envelope_to)
            .await
            .map_err(ControlError::from)?;
        Ok(Response::new(v1::IngestReportResponse {
            report_id: processed.report_id.unwrap_or(0),
            status: status_to_proto(processed.status) as i32,
            num_records: i32::try_from(processed.num_records).unwrap_or(i32::MAX),
            num_applied: i64::try_from(processed.num_applied).unwrap_or(i64::MAX),
            problem: processed.problem.unwrap_or_default(),
            duplicate: processed.report_id.is_none(),
        }))
    }

    async fn list_reports(
        &self,
        request: Request<v1::ListReportsRequest>,
    ) -> Result<Response<v1::ListReportsResponse>, Status> {
        self.authorize(&request)?;
        let request = request.into_inner();
        let status = status_filter(request.status)?;
        let page_size = if request.page_size <= 0 { 100 } else { i64::from(request.page_size).min(1000) };
        let before = if request.page_token.is_empty() {
            i64::MAX
        } else {
            request
                .page_token
                .parse()
                .map_err(|_| ControlError::invalid("page_token", "is not a token this service gave out"))?
        };
        let records = self.store.list_reports(status, before, page_size).await.map_err(ControlError::from)?;
        let next_page_token = if records.len() as i64 == page_size {
            records.last().map(|r| r.id.to_string()).unwrap_or_default()
        } else {
            String::new()
        };
        Ok(Response::new(v1::ListReportsResponse {
            reports: records.into_iter().map(report_to_proto).collect(),
            next_page_token,
        }))
    }

    async fn get_report(
        &self,
        request: Request<v1::GetReportRequest>,
    ) -> Result<Response<v1::GetReportResponse>, Status> {
        self.authorize(&request)?;
        let id = request.into_inner().report_id;
        let (record, raw) = self
            .store
            .report(id)
            .await
            .map_err(ControlError::from)?
            .ok_or_else(|| ControlError::NotFound(format!("report {id}")))?;
        Ok(Response::new(v1::GetReportResponse { report: Some(report_to_proto(record)), raw }))
    }
}
