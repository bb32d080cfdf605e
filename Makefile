# mongo-cdc: the commands a person types. `make help` lists them.
SHELL := /bin/bash
.DEFAULT_GOAL := help
BIN := target/release/mongo-cdc

.PHONY: help build deps test lint chaos demo local-start local-stop local-status local-start-cdc local-start-sink local-test-cdc local-peek-cdc bench

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-16s %s\n", $$1, $$2}'

build: ## build the release binary
	cargo build --release --locked

deps: ## install what the tests need: SecantusDB in .venv, stunnel (TLS tests), headless Chromium and ChromeDriver (dashboard test), a running RabbitMQ on 127.0.0.1:5672
	bash scripts/venv.sh
	bash scripts/apt.sh stunnel4=stunnel4 openssl=openssl chromium=chromium chromedriver=chromium-driver
	RABBITMQ_HOST=127.0.0.1 RABBITMQ_PORT=5672 LOCAL_USE_DOCKER=0 bash scripts/local.sh rabbitmq

test: deps lint ## the lint gate, then every test against real SecantusDB, RabbitMQ, PostgreSQL and Redis (127.0.0.1:5432 and :6379)
	cargo test --locked --all-targets

lint: ## rustfmt and clippy, warnings as errors
	cargo fmt --check
	cargo clippy --locked --all-targets -- -D warnings

demo: build local-start ## the whole product: services, bridge, sink and a churn dataset streamed through; the dashboard stays up until Ctrl-C
	$(BIN) demo

local-start: ## start MongoDB (Docker replica set, or SecantusDB) and RabbitMQ
	bash scripts/local.sh start

local-stop: ## stop what local-start started
	bash scripts/local.sh stop

local-status: ## show what is running
	bash scripts/local.sh status

local-start-cdc: build ## run the bridge in the foreground (Ctrl-C drains and stops it)
	$(BIN) bridge

local-test-cdc: build ## insert test documents (COUNT=10 UPDATES=0 DELETES=0 COLLECTION=posts)
	$(BIN) insert-test --count $(or $(COUNT),10) --updates $(or $(UPDATES),0) --deletes $(or $(DELETES),0) --collection $(or $(COLLECTION),posts)

local-peek-cdc: build ## print the first messages waiting in RABBITMQ_QUEUE_NAME, without consuming them (COUNT=10)
	$(BIN) peek --count $(or $(COUNT),10)

local-start-sink: build ## run the sink in the foreground (needs SINK_FEATURES and SINK_LABEL, or SINK_MODELS; see .env.example)
	$(BIN) sink

chaos: deps ## fault injection at full scale against real services; writes bench/RELIABILITY.md (restarts RabbitMQ)
	cargo test --release --locked --test chaos -- --ignored --nocapture --test-threads=1 full_chaos_suite

bench: deps ## measure the pipeline against real SecantusDB and RabbitMQ (3 runs, ~12 min after the build): bench/RESULTS.md, bench/results.json; anomaly_per_s of each anomaly model kind; the sink's state at 1,000,000 records (~5 min): bench/STATE.md, bench/state.json
	bash scripts/apt.sh valgrind=valgrind
	cargo bench --locked --bench pipeline
	cargo bench --locked --bench anomaly_speed
	cargo bench --locked --bench sink_state
	@echo "bench results: bench/RESULTS.md and bench/STATE.md (for people), bench/results.json and bench/state.json (every run's values)"
