# The two commands of the README: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PORT ?= 8000
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test

$(STAMP): requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.txt
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/flask --app wsgi db upgrade
	$(BIN)/flask --app wsgi market seed-demo
	@echo "Marketplace at http://127.0.0.1:$(PORT)/"
	SESSION_COOKIE_SECURE=$${SESSION_COOKIE_SECURE:-false} \
	  $(BIN)/gunicorn --bind 127.0.0.1:$(PORT) --workers 2 --access-logfile - wsgi:app

test: $(STAMP)
	$(BIN)/python -m pytest -q -p no:cacheprovider
