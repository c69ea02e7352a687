# Two commands for a fresh machine: `make run` serves the service, `make test` runs the tests.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PORT ?= 8443
CERT_DIR ?= instance/certs
export FLASK_APP := wsgi

.PHONY: run test lint bench bench-smoke bench-import clean venv migrate cert secret

$(BIN)/activate:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# Reinstall whenever a requirements file changes.
$(VENV)/.installed: requirements.txt requirements-dev.txt | $(BIN)/activate
	$(BIN)/pip install --quiet -r requirements-dev.txt
	touch $@

venv: $(VENV)/.installed

migrate: venv
	$(BIN)/flask db upgrade

cert: venv
	$(BIN)/flask dev-cert --out $(CERT_DIR)

## make run: virtualenv, install, migrate, serve https://localhost:8443 (self-signed certificate, SQLite by default)
run: migrate cert
	$(BIN)/gunicorn --config deploy/gunicorn.conf.py \
		--bind 0.0.0.0:$(PORT) --certfile $(CERT_DIR)/cert.pem --keyfile $(CERT_DIR)/key.pem wsgi:app

## make test: virtualenv, install, run the whole suite (SQLite always; PostgreSQL and MariaDB when reachable, required when CI=true)
test: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

## make bench: the full benchmark (1,000 and 1,000,000 users, 10–20 min, needs PostgreSQL; installs wrk if missing); writes bench/RESULTS.md
bench: venv
	$(BIN)/python -m bench.harness $(BENCH_ARGS)

## make bench-smoke: the same harness for a few seconds per endpoint (make test runs it too); writes bench/out/
bench-smoke: venv
	$(BIN)/python -m bench.harness --smoke $(BENCH_ARGS)

## make bench-import: `flask users import` of 100,000 users into PostgreSQL, timed (goal under 60 s); writes bench/IMPORT.md
bench-import: venv
	$(BIN)/python -m bench.imports $(BENCH_ARGS)

## make secret: print a fresh JWT_SECRET_KEY
secret:
	@$(PYTHON) -c "import secrets; print(secrets.token_urlsafe(48))"

clean:
	rm -rf $(VENV) .pytest_cache

## make test-deploy: only the deployment tests (entrypoint, nginx gateway, scale-out, image, compose, Kubernetes); installs nginx if missing
.PHONY: test-deploy image
test-deploy: venv
	$(BIN)/python -m pytest tests/deploy $(PYTEST_ARGS)

## make image: build the container image (needs Docker; see docs/OPERATIONS.md)
image:
	docker build -t auth-service:local .
