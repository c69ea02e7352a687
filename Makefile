# Two commands for a fresh machine: `make run` serves the service, `make test` runs the tests.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PORT ?= 8443
CERT_DIR ?= instance/certs
export FLASK_APP := wsgi

.PHONY: run test lint bench bench-smoke bench-import bench-relay bench-mail clean venv migrate cert secret lock browser

$(BIN)/activate:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# Reinstall whenever a requirements file changes. The runtime tree comes from requirements.lock,
# every file checked against its hash; then the development tools (tests/test_requirements.py
# checks that they moved no runtime package).
$(VENV)/.installed: requirements.lock requirements.txt requirements-dev.txt | $(BIN)/activate
	$(BIN)/pip install --quiet --require-hashes -r requirements.lock
	$(BIN)/pip install --quiet -r requirements-dev.txt
	touch $@

## make lock: requirements.lock (every runtime package, transitive ones too, with hashes) made again from requirements.txt
lock: venv
	CUSTOM_COMPILE_COMMAND="make lock" $(BIN)/pip-compile --quiet --generate-hashes --allow-unsafe \
		--strip-extras --no-emit-index-url --output-file requirements.lock requirements.txt

venv: $(VENV)/.installed

migrate: venv
	$(BIN)/flask db upgrade

cert: venv
	$(BIN)/flask dev-cert --out $(CERT_DIR)

## make run: virtualenv, install, migrate, serve https://localhost:8443 (self-signed certificate, SQLite by default)
run: migrate cert
	$(BIN)/gunicorn --config deploy/gunicorn.conf.py \
		--bind 0.0.0.0:$(PORT) --certfile $(CERT_DIR)/cert.pem --keyfile $(CERT_DIR)/key.pem wsgi:app

## make browser: Debian's chromium for the real-browser tests (tests/browser.py), installed with apt-get when missing (root)
# Playwright (requirements-dev.txt) drives it; Playwright's own browser download is never used.
CHROMIUM ?= /usr/bin/chromium
browser:
	@if [ ! -x $(CHROMIUM) ]; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			echo "installing chromium (apt-get)"; \
			export DEBIAN_FRONTEND=noninteractive; \
			apt-get install -y -qq --no-install-recommends chromium >/dev/null 2>&1 || \
				{ apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium >/dev/null; }; \
		else \
			echo "chromium is not installed (as root: apt-get install chromium); the browser tests skip, and fail under CI=true"; \
		fi; \
	fi

## make test: virtualenv, install, run the whole suite (SQLite always; PostgreSQL and MariaDB when reachable, required when CI=true)
test: venv browser
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

## make bench: the full benchmark (1,000 and 1,000,000 users, 10–20 min, needs PostgreSQL; installs wrk if missing); writes bench/RESULTS.md
bench: venv
	$(BIN)/python -m bench.harness $(BENCH_ARGS)

## make bench-smoke: the same harness for a few seconds per endpoint (make test runs it too); writes bench/out/
bench-smoke: venv
	$(BIN)/python -m bench.harness --smoke $(BENCH_ARGS)

## make bench-import: `flask users import` of 100,000 users into PostgreSQL, timed (goal under 60 s); writes bench/IMPORT.md
bench-import: venv
	$(BIN)/python -m bench.imports $(BENCH_ARGS)

## make bench-relay: the events relay publishing 20,000 events to RabbitMQ with publisher confirms, timed; writes bench/RELAY.md
bench-relay: venv
	$(BIN)/python -m bench.relay $(BENCH_ARGS)

## make bench-mail: the outbox worker delivering 2,000 password-reset mails to a local SMTP server, timed; writes bench/MAIL.md
bench-mail: venv
	$(BIN)/python -m bench.mail $(BENCH_ARGS)

## make secret: print a fresh JWT_SECRET_KEY
secret:
	@$(PYTHON) -c "import secrets; print(secrets.token_urlsafe(48))"

clean:
	rm -rf $(VENV) .pytest_cache

## make test-deploy: only the deployment tests (entrypoint, nginx and Caddy gateways, scale-out, image, compose, Kubernetes); installs nginx and caddy if missing
.PHONY: test-deploy image image-test
test-deploy: venv
	$(BIN)/python -m pytest tests/deploy $(PYTEST_ARGS)

## make image: build the container image (needs Docker; BASE_IMAGE=… for a mirror or a local base; see docs/OPERATIONS.md)
image:
	docker build $(if $(BASE_IMAGE),--build-arg BASE_IMAGE=$(BASE_IMAGE)) -t auth-service:local .

## make image-test: build the image with a private Docker engine and test it for real (root, docker.io, debootstrap; docs/OPERATIONS.md)
image-test: venv
	IMAGE_TEST=1 $(BIN)/python -m pytest tests/deploy/test_image_build.py $(PYTEST_ARGS)
