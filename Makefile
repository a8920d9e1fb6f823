# Two commands: `make demo` runs the whole store on this machine, `make test` runs the tests.
# Both create .venv and install the project into it when needed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test bench clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "omnisense needs Python >= 3.11"' \
		|| { echo "Python >= 3.11 is required (found: $$($(PYTHON) --version))"; exit 1; }
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV) \
		|| { echo "Cannot create a virtual environment: on Debian/Ubuntu run: sudo apt-get install python3-venv"; exit 1; }
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/omnisense demo

test: $(STAMP)
	@command -v mosquitto >/dev/null 2>&1 || test -x /usr/sbin/mosquitto || { \
		echo "The tests need the mosquitto broker binary. Install it with:"; \
		echo "    sudo apt-get install -y mosquitto"; exit 1; }
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python bench/ingest.py
	$(BIN)/python bench/radio.py
	$(BIN)/python bench/offer_latency.py
	$(BIN)/python bench/lift.py
	$(BIN)/python bench/vision.py

clean:
	rm -rf $(VENV) .demo .pytest_cache
