//! The `mongo-cdc` binary: parses the subcommand, reads settings, and calls the library.

use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use mongo_cdc::bridge::settings::BridgeSettings;
use mongo_cdc::cli::{self, demo, insert_test};
use mongo_cdc::config::{self, MongoSettings};
use mongo_cdc::db::Mongo;
use mongo_cdc::sink::settings::SinkSettings;
use mongo_cdc::{bridge, shutdown, sink};

#[derive(Parser)]
#[command(name = "mongo-cdc", version, about = "MongoDB change streams -> RabbitMQ, and an online-learning sink")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Watch MONGO_DATABASE_NAME and publish every change to RABBITMQ_QUEUE_NAME.
    Bridge,
    /// Consume the queue: apply every change once to versioned records and an online model,
    /// and serve stats and predictions on SINK_HTTP_ADDR.
    Sink,
    /// Print up to N messages at the head of RABBITMQ_QUEUE_NAME (one JSON per line) without
    /// consuming them.
    Peek {
        /// How many messages to show.
        #[arg(long, default_value_t = 10)]
        count: usize,
    },
    /// Reset a demo database and queue, run the bridge and the sink, stream a churn dataset
    /// through MongoDB, print the sink's stats, and keep the dashboard up until Ctrl-C.
    Demo {
        /// Customers to insert.
        #[arg(long, default_value_t = 5000)]
        count: u64,
        /// Customers to update afterwards.
        #[arg(long, default_value_t = 1000)]
        updates: u64,
        /// Customers to delete afterwards.
        #[arg(long, default_value_t = 500)]
        deletes: u64,
        /// Stop once the dataset has streamed (for scripts), instead of waiting for Ctrl-C;
        /// the changes are then written unpaced.
        #[arg(long)]
        exit: bool,
    },
    /// Insert test documents into the watched database (and optionally update/delete some).
    InsertTest {
        /// How many documents to insert.
        #[arg(long, default_value_t = 10)]
        count: u64,
        /// Collection to write to.
        #[arg(long, default_value = "posts")]
        collection: String,
        /// How many of them to update afterwards.
        #[arg(long, default_value_t = 0)]
        updates: u64,
        /// How many of them to delete afterwards.
        #[arg(long, default_value_t = 0)]
        deletes: u64,
    },
}

fn main() -> ExitCode {
    config::load_dotenv();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info,lapin=off".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(try_main(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One readable line: the error and its causes. (lapin's own logs are off by
            // default: every failure it reports reaches us as an error we explain.)
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn try_main(cli: Cli) -> anyhow::Result<()> {
    let result = run(cli).await;
    // Close the shared clients while the runtime is still up.
    Mongo::shutdown_all().await;
    result
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Bridge => {
            let settings = BridgeSettings::from_env()?;
            tracing::info!(?settings, "starting bridge");
            bridge::run(settings, shutdown::on_signals()).await?;
            tracing::info!("bridge stopped cleanly");
        }
        Command::Sink => {
            let settings = SinkSettings::from_env()?;
            tracing::info!(?settings, "starting sink");
            sink::run(settings, shutdown::on_signals()).await?;
            tracing::info!("sink stopped cleanly");
        }
        Command::Peek { count } => cli::peek::run(count).await?,
        Command::Demo { count, updates, deletes, exit } => {
            let http_addr = std::env::var("SINK_HTTP_ADDR").unwrap_or_else(|_| "127.0.0.1:8088".into());
            let http_addr =
                http_addr.parse().with_context(|| format!("SINK_HTTP_ADDR `{http_addr}` is not host:port"))?;
            // Paced (~100 changes a second) when someone watches, so the figures move visibly.
            let pace = if exit { std::time::Duration::ZERO } else { std::time::Duration::from_millis(10) };
            demo::run(&demo::DemoPlan { count, updates, deletes, http_addr, exit, pace }).await?;
            println!(
                "\nThe bridge and the sink are stopped; the services keep running (`make local-stop` stops them)."
            );
        }
        Command::InsertTest { count, collection, updates, deletes } => {
            let settings = MongoSettings::from_env()?;
            let plan = insert_test::InsertPlan { count, collection, updates, deletes };
            let report = insert_test::run(&settings, &plan).await.context("insert-test failed")?;
            println!(
                "inserted {}, updated {}, deleted {} in {}.{}",
                report.inserted, report.updated, report.deleted, settings.mongo_database_name, plan.collection
            );
        }
    }
    Ok(())
}
