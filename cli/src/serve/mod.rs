//! `runledger serve`: the HTTP API (tokio + axum).
//!
//! - [`writer`]: one dedicated thread owns appends and group-commits concurrent posts;
//! - [`routes`]: ingest, the query endpoints, health;
//! - [`auth`]: bearer tokens with scopes from `--token-file`;
//! - [`sse`]: the live tail (`/v1/stream`);
//! - [`metrics`]: counters and the commit-latency histogram for `/metrics`;
//! - [`cors`]: `--cors-origin` for browser pages on other origins;
//! - [`catchup`]: the background thread that keeps projections and the search index current;
//! - [`fatal`]: a storage failure the server stops on.
//!
//! Shutdown (SIGINT/SIGTERM): the listener stops accepting, in-flight requests finish (within
//! [`DRAIN_TIMEOUT`]), live tails end, the writer commits what it was handed, and a last
//! catch-up runs. An event is acknowledged only after its commit is durable.

mod auth;
mod catchup;
mod cors;
mod fatal;
mod metrics;
mod routes;
mod sse;
mod writer;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _};
use ledger::Ledger;
use tokio::sync::watch;

use crate::ctx::Ctx;

/// Default body limit of `POST /v1/events`: 64 MiB.
pub const DEFAULT_MAX_BODY: usize = 64 << 20;
/// How long in-flight requests may take to finish after a shutdown signal.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Address to listen on (port 0 picks a free port; the chosen address is printed).
    #[arg(long, default_value = "127.0.0.1:7070")]
    pub addr: SocketAddr,
    /// Tokens and their scopes: one `TOKEN SCOPE[,SCOPE]` per line (scopes: ingest, read);
    /// `#` starts a comment. Without it, no authentication.
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// Largest accepted request body, in bytes.
    #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_MAX_BODY)]
    pub max_body: usize,
    /// Size limit of one event, in bytes.
    #[arg(long, default_value_t = ledger::DEFAULT_MAX_EVENT_BYTES)]
    pub max_event_bytes: usize,
    /// Shortest time between two catch-ups of the projections while events keep arriving, in
    /// ms (longer: cheaper ingest; a query about the head cuts the wait short).
    #[arg(long, value_name = "MS", default_value_t = 50)]
    pub catch_up_interval: u64,
    /// Shortest time between two commits of the search index while events keep arriving, in ms
    /// (a search about the head cuts the wait short). Never shorter than --catch-up-interval.
    #[arg(long, value_name = "MS", default_value_t = 250)]
    pub index_interval: u64,
    /// Let browser pages from ORIGIN call the API (CORS); repeatable, `*` for any origin.
    #[arg(long, value_name = "ORIGIN")]
    pub cors_origin: Vec<String>,
    /// Allow a non-loopback address without a token file (anyone who can reach it can write).
    #[arg(long)]
    pub insecure_no_auth: bool,
}

/// Everything the handlers share.
pub(crate) struct AppState {
    pub ledger: Arc<Ledger>,
    pub writer: writer::WriterHandle,
    pub tokens: Option<auth::Tokens>,
    pub metrics: Arc<metrics::Metrics>,
    /// The head, updated by the writer after each commit.
    pub head_rx: watch::Receiver<ledger::Head>,
    /// The projections' watermark, updated by the catch-up thread.
    pub applied_rx: watch::Receiver<u64>,
    /// Set by a query waiting for the projections: the catch-up thread skips its pause.
    pub catch_up_nudge: Arc<std::sync::atomic::AtomicBool>,
    /// The search index's watermark, updated by the catch-up thread.
    pub indexed_rx: watch::Receiver<u64>,
    /// Set by a search waiting for the index: the catch-up thread indexes at once.
    pub index_nudge: Arc<std::sync::atomic::AtomicBool>,
    /// Becomes `true` when the server is shutting down (ends live tails).
    pub shutdown_rx: watch::Receiver<bool>,
    pub max_body: usize,
    pub max_event_bytes: usize,
    /// Origins allowed by CORS (`*`: any).
    pub cors_origins: Vec<String>,
    /// Set when the storage failed: the server is stopping.
    pub fatal: Arc<fatal::Fatal>,
}

pub fn run(ctx: &Ctx, args: Args) -> anyhow::Result<ExitCode> {
    // A query that panics answers 500 and the server goes on; its log says why, in one line.
    crate::panics::install(true);
    // Flags first, before any I/O on the ledger.
    let tokens = match &args.token_file {
        Some(p) => Some(auth::Tokens::load(p)?),
        None => None,
    };
    if tokens.is_none() && !args.addr.ip().is_loopback() && !args.insecure_no_auth {
        bail!(
            "refusing to serve on {} without authentication: pass --token-file FILE, or \
             --insecure-no-auth to serve a non-loopback address to anyone",
            args.addr
        );
    }
    if args.max_body == 0 {
        bail!("--max-body must be at least 1 byte");
    }

    let ledger = Arc::new(ctx.open_for_write()?);
    let head = ledger.head()?;
    let metrics = Arc::new(metrics::Metrics::default());
    let (head_tx, head_rx) = watch::channel(head);
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let fatal = Arc::new(fatal::Fatal::default());
    let catchup = catchup::CatchUp::start(
        Arc::clone(&ledger),
        Arc::clone(&fatal),
        catchup::Cadence {
            projections: Duration::from_millis(args.catch_up_interval),
            index: Duration::from_millis(args.index_interval.max(args.catch_up_interval)),
        },
    )?;
    let (writer, writer_thread) = writer::start(
        Arc::clone(&ledger),
        Arc::clone(&metrics),
        head_tx,
        Arc::clone(&fatal),
    )?;

    let state = Arc::new(AppState {
        ledger: Arc::clone(&ledger),
        writer,
        tokens,
        metrics,
        head_rx,
        applied_rx: catchup.applied_rx(),
        catch_up_nudge: catchup.nudge(),
        indexed_rx: catchup.indexed_rx(),
        index_nudge: catchup.nudge_index(),
        shutdown_rx,
        max_body: args.max_body,
        max_event_bytes: args.max_event_bytes,
        cors_origins: args.cors_origin,
        fatal: Arc::clone(&fatal),
    });

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("runledger-http")
        .build()
        .context("starting the async runtime")?;
    let served = rt.block_on(serve(args.addr, state, shutdown_tx));
    // Handlers still holding the state (timed-out requests) are dropped with the runtime.
    rt.shutdown_timeout(Duration::from_secs(1));

    // The writer ends once every sender is gone, after committing what it was handed.
    let writer_result = writer_thread.join();
    if let Some(why) = fatal.why() {
        // The files must be opened again: a last catch-up would only meet the same failure.
        catchup.abandon();
        bail!(
            "stopped: {why}. Every event acknowledged before is stored; start `runledger serve` \
             again once the cause is fixed (a full disk: free space)"
        );
    }
    let final_catchup = catchup.finish();
    served?;
    match writer_result {
        Ok(()) => {}
        Err(_) => bail!("the writer thread panicked"),
    }
    final_catchup.context("final catch-up of projections and the search index")?;
    eprintln!("runledger serve: stopped");
    Ok(ExitCode::SUCCESS)
}

async fn serve(
    addr: SocketAddr,
    state: Arc<AppState>,
    shutdown_tx: watch::Sender<bool>,
) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    let local = listener.local_addr().context("reading the bound address")?;
    eprintln!("runledger serve: listening on http://{local}");
    let app = routes::router(Arc::clone(&state));
    let fatal = Arc::clone(&state.fatal);
    drop(state);

    let (signalled_tx, mut signalled_rx) = watch::channel(false);
    let shutdown = async move {
        tokio::select! {
            _ = wait_for_signal() => {},
            _ = fatal.raised() => {},
        }
        eprintln!("runledger serve: shutting down");
        let _ = shutdown_tx.send(true);
        let _ = signalled_tx.send(true);
    };
    // Small answers go out at once (no Nagle delay on acks).
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let server = axum::serve(listener, app).with_graceful_shutdown(shutdown);
    let mut server = std::pin::pin!(std::future::IntoFuture::into_future(server));
    tokio::select! {
        r = &mut server => r.context("serving HTTP")?,
        _ = async {
            let _ = signalled_rx.wait_for(|s| *s).await;
            tokio::time::sleep(DRAIN_TIMEOUT).await;
        } => {
            eprintln!(
                "runledger serve: in-flight requests did not finish within {}s; stopping anyway",
                DRAIN_TIMEOUT.as_secs()
            );
        }
    }
    Ok(())
}

async fn wait_for_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
