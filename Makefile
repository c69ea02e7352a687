# Two commands for a fresh machine: `make run` serves the service, `make test` runs the tests.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PORT ?= 8443
CERT_DIR ?= instance/certs
export FLASK_APP := wsgi

.PHONY: run test lint bench clean venv migrate cert secret

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
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

## make secret: print a fresh JWT_SECRET_KEY
secret:
	@$(PYTHON) -c "import secrets; print(secrets.token_urlsafe(48))"

clean:
	rm -rf $(VENV) .pytest_cache
