//! The sandbox: stateful fakes of the Kounta-style CRM and of FarmFlow, served over real HTTP
//! on 127.0.0.1, following `api/kounta.md` and `api/farmflow.md` with fault injection.
//!
//! Every farmsync test runs against it, and so do `farmsync demo` and `farmsync sandbox`. It
//! shares no code with farmsync's own clients or wire models, so a misreading of the contract
//! on one side cannot be hidden by the same misreading on the other: it depends on no other
//! farmsync module, and only the demo, the `sandbox` command (with [`crate::ops`], which
//! writes its config file) and tests depend on it.
//!
//! ## Layout
//! - [`kounta`]: the fake CRM and its handle [`FakeKounta`].
//! - [`farmflow`]: the fake FarmFlow and its handle [`FakeFarmflow`].
//! - `pipeline`: counters, latency, rate limits and faults, shared by both.
//! - `rate`: rate-limit windows.
//! - `server`: the HTTP connection loop (drops connections on demand, stops at once).
//! - [`sample`]: the built-in small farm and seed files.
//! - `seed`: [`SeedDataError`], shared by the seed-file loader and both fakes.
//!
//! ## Order of handling
//! A request is counted, delayed by any latency knob, checked against rate limits (a `429` is
//! not served and does not count towards faults), then faults are consulted; only then does the
//! API itself look at authentication, headers and the body. Everything random (fault
//! probabilities, listing faults, tokens) comes from an RNG seeded with [`SandboxOptions::seed`].

use std::future::Future;

use tokio::net::TcpListener;
use tokio_util::sync::{CancellationToken, DropGuard};
use tokio_util::task::TaskTracker;

pub mod farmflow;
pub mod kounta;
mod pipeline;
mod pipeline_methods;
mod rate;
pub mod sample;
mod seed;
mod server;

pub use farmflow::{
    ACTIVE_ORDER_REFUSAL, Envelope, FakeFarmflow, FarmflowDeleteError, FarmflowEndpoint,
    FarmflowOptions, FarmflowRecord, LIST_LAG_HISTORY, OneTimeOrderRecord, RecurringOrderRecord,
    RecurringStatus,
};
pub use kounta::{
    Delivery, DeliveryOutcome, ErrorShape, FakeKounta, KountaEndpoint, KountaOptions, KountaRecord,
    KountaRecordAddress, OauthOptions, ReadShape, Webhook, WebhookAction, WebhookFault,
    WebhookTopic, format_phone, webhook_signature,
};
pub use pipeline::{
    Access, Endpoint, Fault, FaultAction, FaultId, RequestRecord, Stats, Target, When,
    max_in_window,
};
pub use rate::{RateLimit, ResetStyle, WindowKind};
pub use sample::{SampleData, SeedDataError, load_seed_data, sample_farm};

/// Settings of both fakes.
#[derive(Clone, Debug, Default)]
pub struct SandboxOptions {
    /// Seeds every random choice (fault probabilities, listing faults, tokens).
    pub seed: u64,
    /// The fake CRM's settings.
    pub kounta: KountaOptions,
    /// The fake FarmFlow's settings.
    pub farmflow: FarmflowOptions,
    /// The CRM's port on 127.0.0.1; `0` picks a free one.
    pub kounta_port: u16,
    /// FarmFlow's port on 127.0.0.1; `0` picks a free one.
    pub farmflow_port: u16,
}

impl SandboxOptions {
    /// These options with the documented rate limits: 60 requests a minute for the CRM (basic
    /// auth), 120 for FarmFlow.
    pub fn with_documented_limits(mut self) -> Self {
        self.kounta.rate_limit = Some(RateLimit::per_minute(60));
        self.farmflow.rate_limit = Some(RateLimit::per_minute(120));
        self
    }
}

/// Both fakes, running. Dropping it stops them too; `shutdown` also waits for their tasks.
#[derive(Debug)]
pub struct Sandbox {
    options: SandboxOptions,
    kounta: FakeKounta,
    farmflow: FakeFarmflow,
    shutdown: CancellationToken,
    tracker: TaskTracker,
    _stop_on_drop: DropGuard,
}

/// The seed of FarmFlow's RNG, derived so the two fakes draw independent sequences.
fn farmflow_seed(seed: u64) -> u64 {
    seed ^ 0x9e37_79b9_7f4a_7c15
}

impl Sandbox {
    /// Starts both fakes on 127.0.0.1, on the given ports or free ones.
    pub async fn start(options: SandboxOptions) -> std::io::Result<Sandbox> {
        let kounta_listener = TcpListener::bind(("127.0.0.1", options.kounta_port)).await?;
        let farmflow_listener = TcpListener::bind(("127.0.0.1", options.farmflow_port)).await?;
        let kounta_url = format!("http://{}/v1", kounta_listener.local_addr()?);
        let farmflow_url = format!("http://{}", farmflow_listener.local_addr()?);

        let shutdown = CancellationToken::new();
        let tracker = TaskTracker::new();
        let kounta = FakeKounta::new(
            options.kounta.clone(),
            options.seed,
            kounta_url,
            shutdown.clone(),
            tracker.clone(),
        );
        let farmflow = FakeFarmflow::new(
            options.farmflow.clone(),
            farmflow_seed(options.seed),
            farmflow_url,
        );
        server::spawn(
            kounta_listener,
            kounta.router(),
            Some(kounta::strip_json_suffix),
            shutdown.clone(),
            &tracker,
        );
        server::spawn(
            farmflow_listener,
            farmflow.router(),
            None,
            shutdown.clone(),
            &tracker,
        );
        Ok(Sandbox {
            options,
            kounta,
            farmflow,
            _stop_on_drop: shutdown.clone().drop_guard(),
            shutdown,
            tracker,
        })
    }

    /// The CRM's base URL, including `/v1` (e.g. `http://127.0.0.1:41234/v1`).
    pub fn kounta_url(&self) -> String {
        self.kounta.base_url().to_owned()
    }

    /// FarmFlow's base URL (e.g. `http://127.0.0.1:41235`).
    pub fn farmflow_url(&self) -> String {
        self.farmflow.base_url().to_owned()
    }

    /// The fake CRM.
    pub fn kounta(&self) -> &FakeKounta {
        &self.kounta
    }

    /// The fake FarmFlow.
    pub fn farmflow(&self) -> &FakeFarmflow {
        &self.farmflow
    }

    /// The options it was started with.
    pub fn options(&self) -> &SandboxOptions {
        &self.options
    }

    /// Loads a data set into both fakes (no webhooks are sent for it).
    pub fn seed(&self, data: &SampleData) -> Result<(), SeedDataError> {
        data.validate()?;
        self.farmflow.seed(
            &data.farmflow,
            &data.recurring_orders,
            &data.one_time_orders,
        )?;
        self.kounta.seed(&data.kounta)
    }

    /// What a person needs to talk to both fakes: URLs and credentials, one per line.
    pub fn banner(&self) -> String {
        let k = &self.kounta;
        let f = &self.farmflow;
        format!(
            "kounta   {kounta_url}\n\
             \x20 company id       {cid}\n\
             \x20 client id        {client_id}\n\
             \x20 client secret    {secret}\n\
             \x20 refresh token    {refresh}\n\
             \x20 access token     {access}\n\
             \x20 webhook signing  {signing}\n\
             \x20 try: curl -u {client_id}:{secret} -H 'Accept: application/json' {kounta_url}/companies/{cid}/customers\n\
             farmflow {farmflow_url}\n\
             \x20 api key          {key}\n\
             \x20 header           {header}: {prefix}{key}\n\
             \x20 try: curl -H '{header}: {prefix}{key}' {farmflow_url}/customers-get\n",
            kounta_url = self.kounta_url(),
            cid = k.company_id(),
            client_id = k.client_id(),
            secret = k.client_secret(),
            refresh = k.refresh_token(),
            access = k.access_token(),
            signing = k.signature_token(),
            farmflow_url = self.farmflow_url(),
            key = f.api_key(),
            header = f.auth_header(),
            prefix = f.auth_prefix(),
        )
    }

    /// A complete farmsync config for these fakes, to save as a file: their URLs and
    /// credentials (basic auth; the OAuth refresh token and the webhook signing token are
    /// there, commented or unused, for trying those), with the state DB at `state_path`.
    pub fn config_toml(&self, state_path: &std::path::Path) -> String {
        let k = &self.kounta;
        let f = &self.farmflow;
        let q = |text: &str| toml::Value::String(text.to_owned()).to_string();
        format!(
            "{SANDBOX_CONFIG_FIRST_LINE}\n\
             # {kounta_url} and {farmflow_url}, valid while that sandbox runs. Try:\n\
             #   farmsync --config FILE check\n\
             #   farmsync --config FILE sync --dry-run\n\
             #   farmsync --config FILE sync\n\
             \n\
             [state]\n\
             # Removed when the sandbox stops: a new sandbox starts afresh, with new ids.\n\
             path = {state}\n\
             \n\
             [kounta]\n\
             base_url = {kounta}\n\
             company_id = {cid}\n\
             auth = \"basic\"\n\
             client_id = {client_id}\n\
             client_secret = {secret}\n\
             # To try OAuth: auth = \"oauth\" and\n\
             # refresh_token = {refresh}\n\
             \n\
             [farmflow]\n\
             base_url = {farmflow}\n\
             api_key = {key}\n\
             auth_header = {header}\n\
             auth_prefix = {prefix}\n\
             \n\
             [webhooks]\n\
             # The sandbox CRM signs its deliveries with this token. To receive them: enabled =\n\
             # true, a shared_secret, then `farmsync --config FILE webhooks register` and\n\
             # `farmsync --config FILE run`.\n\
             enabled = false\n\
             signature_token = {signing}\n\
             {SANDBOX_CONFIG_LAST_LINE}\n",
            kounta_url = self.kounta_url(),
            farmflow_url = self.farmflow_url(),
            state = q(&state_path.display().to_string()),
            kounta = q(&self.kounta_url()),
            cid = k.company_id(),
            client_id = q(k.client_id()),
            secret = q(k.client_secret()),
            refresh = q(&k.refresh_token()),
            farmflow = q(&self.farmflow_url()),
            key = q(f.api_key()),
            header = q(f.auth_header()),
            prefix = q(f.auth_prefix()),
            signing = q(k.signature_token()),
        )
    }

    /// Stops both fakes: open connections are dropped (hung requests included) and pending
    /// webhook deliveries abandoned; returns when every task has ended.
    pub async fn shutdown(self) {
        self.shutdown.cancel();
        self.tracker.close();
        self.tracker.wait().await;
    }
}

/// The first line of [`Sandbox::config_toml`].
pub const SANDBOX_CONFIG_FIRST_LINE: &str = "# farmsync config for the sandbox at";

/// The last line of [`Sandbox::config_toml`]: what to copy ends here.
pub const SANDBOX_CONFIG_LAST_LINE: &str = "# end of the farmsync config";

/// Serves both fakes loaded with `data` until `shutdown` completes, printing their URLs and
/// credentials to stdout first (`farmsync sandbox`).
pub async fn serve(
    options: SandboxOptions,
    data: SampleData,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_with(
        options,
        data,
        |sandbox| {
            println!("{}", sandbox.banner());
            Ok(())
        },
        shutdown,
    )
    .await
}

/// [`serve`], with `announce` saying what is served once both fakes listen and hold `data`
/// (an error from it stops the sandbox).
pub async fn serve_with(
    options: SandboxOptions,
    data: SampleData,
    announce: impl FnOnce(&Sandbox) -> std::io::Result<()>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let sandbox = Sandbox::start(options).await?;
    sandbox
        .seed(&data)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
    if let Err(e) = announce(&sandbox) {
        sandbox.shutdown().await;
        return Err(e);
    }
    shutdown.await;
    sandbox.shutdown().await;
    Ok(())
}
