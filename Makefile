# Two commands for a newcomer: `make demo` (a whole soak on the embedded staging stack)
# and `make test`. Both create or reuse the project's virtual environment in .venv.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
SCENARIO ?= healthy
TIME_SCALE ?= 300

.PHONY: demo test venv clean

venv: $(VENV)/.installed

$(VENV)/.installed: requirements.txt constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt -c constraints.txt
	touch $@

demo: venv
	$(PY) -m demo.run --scenario $(SCENARIO) --time-scale $(TIME_SCALE)

test: venv
	$(PY) -m pytest

clean:
	rm -rf .state reports
