//! A whole cluster for one test: its own database, the gRPC control plane on a free port, a
//! sender, and a behaviour sink, all reachable over real TCP.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use sendwerk::client::Api;
use sendwerk::cluster::{ControlHandle, SenderHandle, start_bounce_listener};
use sendwerk_bounce::BounceProcessor;
use sendwerk_control::ControlConfig;
use sendwerk_core::RetryPolicy;
use sendwerk_core::{Domain, Verp};
use sendwerk_mail::dkim::{DkimKeyConfig, DkimSigners};
use sendwerk_mail::smtp::RelayConfig;
use sendwerk_proto::v1;
use sendwerk_sender::SenderConfig;
use sendwerk_smtpd::sink::BehaviourSink;
use sendwerk_smtpd::{RunningServer, ServerConfig, SmtpServer};
use sendwerk_store::Store;

/// What a test may change about its cluster.
#[derive(Clone)]
pub struct TestClusterOptions {
    /// Start a sender at once (tests of scheduling may start it later).
    pub start_sender: bool,
    pub dkim_keys: Vec<DkimKeyConfig>,
    pub lease: Duration,
    pub num_connections: usize,
    pub claim_batch_size: i64,
    pub api_token: Option<String>,
    pub sink: fn() -> BehaviourSink,
    /// VERP return paths on `bounces.test` and a bounce listener on a free port.
    pub bounces: bool,
}

impl Default for TestClusterOptions {
    fn default() -> Self {
        Self {
            start_sender: true,
            dkim_keys: Vec::new(),
            lease: Duration::from_secs(3),
            num_connections: 4,
            claim_batch_size: 64,
            api_token: None,
            sink: BehaviourSink::new,
            bounces: false,
        }
    }
}

pub struct TestCluster {
    pub store: Store,
    pub database_url: String,
    pub api: Api,
    pub sink: Arc<BehaviourSink>,
    pub control: Option<ControlHandle>,
    pub sender: Option<SenderHandle>,
    sink_server: Option<RunningServer>,
    options: TestClusterOptions,
    relay: RelayConfig,
    /// The VERP signer and the bounce listener, with `TestClusterOptions::bounces`.
    pub verp: Option<Verp>,
    pub bounce_listener: Option<RunningServer>,
}

impl TestCluster {
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_with(TestClusterOptions::default()).await
    }

    pub async fn start_with(options: TestClusterOptions) -> anyhow::Result<Self> {
        crate::init_test_logging();
        let (store, database_url) = crate::fresh_database().await?;
        let sink = Arc::new((options.sink)());
        let sink_server =
            SmtpServer::bind(SocketAddr::from(([127, 0, 0, 1], 0)), ServerConfig::default(), Arc::clone(&sink))
                .await
                .context("binding the test sink")?
                .spawn();
        let relay = RelayConfig {
            host: "127.0.0.1".into(),
            port: sink_server.local_addr().port(),
            hello_name: "sender.test".into(),
            command_timeout: Duration::from_secs(10),
            ..RelayConfig::default()
        };
        let signers = Arc::new(DkimSigners::from_configs(&options.dkim_keys)?);
        let control_config = ControlConfig {
            api_token: options.api_token.clone(),
            relay: relay.clone(),
            watch_interval: Duration::from_millis(50),
            ..ControlConfig::default()
        };
        let verp = if options.bounces {
            Some(Verp::new(Domain::parse("bounces.test")?, b"test-bounce-secret-0123456789", &[])?)
        } else {
            None
        };
        let processor =
            verp.clone().map(|verp| Arc::new(BounceProcessor::new(store.clone(), verp, 3, 30, 10 * 1024 * 1024)));
        let bounce_listener = match &processor {
            Some(processor) => Some(
                start_bounce_listener(Arc::clone(processor), SocketAddr::from(([127, 0, 0, 1], 0)), 10 * 1024 * 1024)
                    .await?,
            ),
            None => None,
        };
        let control = ControlHandle::start(
            store.clone(),
            control_config,
            signers,
            SocketAddr::from(([127, 0, 0, 1], 0)),
            processor,
        )
        .await?;
        let api = Api::connect(&control.endpoint(), options.api_token.as_deref()).await?;
        let mut cluster = Self {
            store,
            database_url,
            api,
            sink,
            control: Some(control),
            sender: None,
            sink_server: Some(sink_server),
            options,
            relay,
            verp,
            bounce_listener,
        };
        if cluster.options.start_sender {
            cluster.start_sender()?;
        }
        Ok(cluster)
    }

    /// The sender configuration tests run with: fast polling, short lease, quick retries.
    pub fn sender_config(&self) -> SenderConfig {
        SenderConfig {
            relay: self.relay.clone(),
            num_connections: self.options.num_connections,
            claim_batch_size: self.options.claim_batch_size,
            lease: self.options.lease,
            poll_interval: Duration::from_millis(50),
            retry: RetryPolicy {
                initial_delay: Duration::from_millis(300),
                max_delay: Duration::from_secs(2),
                retry_window: Duration::from_secs(600),
                jitter_fraction: 0.1,
            },
            shutdown_grace: Duration::from_secs(5),
            dkim_keys: self.options.dkim_keys.clone(),
            settings_refresh: Duration::from_millis(200),
            domain_backoff: Duration::from_secs(1),
            verp: self.verp.clone(),
            ..SenderConfig::default()
        }
    }

    /// The port of the SMTP sink on 127.0.0.1.
    pub fn sink_port(&self) -> u16 {
        self.relay.port
    }

    /// Another sender on the same database and sink, managed by the caller.
    pub fn start_extra_sender(&self) -> anyhow::Result<SenderHandle> {
        SenderHandle::start(self.store.clone(), self.sender_config())
    }

    pub fn start_sender(&mut self) -> anyhow::Result<()> {
        anyhow::ensure!(self.sender.is_none(), "a sender is already running");
        self.sender = Some(SenderHandle::start(self.store.clone(), self.sender_config())?);
        Ok(())
    }

    pub fn start_sender_with(&mut self, config: SenderConfig) -> anyhow::Result<()> {
        anyhow::ensure!(self.sender.is_none(), "a sender is already running");
        self.sender = Some(SenderHandle::start(self.store.clone(), config)?);
        Ok(())
    }

    pub async fn stop_sender(&mut self) -> anyhow::Result<()> {
        if let Some(sender) = self.sender.take() {
            sender.stop().await?;
        }
        Ok(())
    }

    /// Ends the sender as a crash would: no write-back, claimed rows stay under its lease.
    pub fn kill_sender(&mut self) {
        if let Some(sender) = self.sender.take() {
            sender.kill();
        }
    }

    pub async fn create_mailing(&mut self, content: v1::MailingContent) -> anyhow::Result<i64> {
        Ok(self.api.mailings.create_mailing(v1::CreateMailingRequest { content: Some(content) }).await?.into_inner().id)
    }

    /// Streams the rows, `per_message` rows per stream message.
    pub async fn add_recipients(
        &mut self,
        mailing_id: i64,
        rows: Vec<v1::RecipientRow>,
        per_message: usize,
    ) -> anyhow::Result<v1::AddRecipientsResponse> {
        let messages: Vec<v1::AddRecipientsRequest> = rows
            .chunks(per_message.max(1))
            .map(|chunk| v1::AddRecipientsRequest { mailing_id, rows: chunk.to_vec() })
            .collect();
        Ok(self.api.mailings.add_recipients(tokio_stream::iter(messages)).await?.into_inner())
    }

    pub async fn schedule_now(&mut self, mailing_id: i64) -> anyhow::Result<v1::Mailing> {
        Ok(self
            .api
            .mailings
            .schedule(v1::ScheduleRequest { mailing_id, send_at: None, max_per_hour: 0 })
            .await?
            .into_inner())
    }

    pub async fn mailing(&mut self, mailing_id: i64) -> anyhow::Result<v1::Mailing> {
        Ok(self.api.mailings.get_mailing(v1::MailingRef { mailing_id }).await?.into_inner())
    }

    /// Waits until the mailing is completed (or cancelled) and returns it.
    pub async fn wait_until_finished(&mut self, mailing_id: i64, timeout: Duration) -> anyhow::Result<v1::Mailing> {
        let api = self.api.clone();
        crate::eventually(timeout, "the mailing to finish", move || {
            let mut api = api.clone();
            async move {
                let mailing = api.mailings.get_mailing(v1::MailingRef { mailing_id }).await?.into_inner();
                let done = matches!(
                    v1::MailingState::try_from(mailing.state),
                    Ok(v1::MailingState::Completed | v1::MailingState::Cancelled)
                );
                Ok(done.then_some(mailing))
            }
        })
        .await
    }

    /// All recipients of a mailing, every page.
    pub async fn recipients(&mut self, mailing_id: i64) -> anyhow::Result<Vec<v1::Recipient>> {
        let mut all = Vec::new();
        let mut page_token = String::new();
        loop {
            let page = self
                .api
                .mailings
                .list_recipients(v1::ListRecipientsRequest { mailing_id, state: 0, page_size: 1000, page_token })
                .await?
                .into_inner();
            all.extend(page.recipients);
            if page.next_page_token.is_empty() {
                return Ok(all);
            }
            page_token = page.next_page_token;
        }
    }

    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        self.stop_sender().await?;
        if let Some(control) = self.control.take() {
            control.stop().await?;
        }
        if let Some(server) = self.sink_server.take() {
            server.shutdown().await?;
        }
        if let Some(server) = self.bounce_listener.take() {
            server.shutdown().await?;
        }
        self.store.close();
        Ok(())
    }
}

/// A plain-text mailing from `news@shop.example` with the given templates.
pub fn simple_content(subject: &str, text: &str) -> v1::MailingContent {
    v1::MailingContent {
        name: "test mailing".into(),
        from: Some(v1::Address { email: "news@shop.example".into(), name: "Shop News".into() }),
        subject_template: subject.into(),
        text_template: text.into(),
        ..Default::default()
    }
}

/// A recipient row with string variables.
pub fn row(email: &str, external_id: &str, variables: &[(&str, &str)]) -> v1::RecipientRow {
    v1::RecipientRow {
        email: email.into(),
        external_id: external_id.into(),
        variables: Some(prost_types::Struct {
            fields: variables
                .iter()
                .map(|(key, value)| {
                    (
                        (*key).to_owned(),
                        prost_types::Value { kind: Some(prost_types::value::Kind::StringValue((*value).to_owned())) },
                    )
                })
                .collect(),
        }),
    }
}
