# awopt_ros: every entry point sets up .venv itself (idempotent), then runs.
#   make demo   -> 10 episodes with the shipped model, JSON report in runs/demo/report.json
#   make test   -> the test suite (unit, node and integration tests)
#   make bench  -> latency and learning benchmarks, figures in bench/results.json
#   make compare -> the paper's comparison (83 min on 2 cores, resumable), docs/comparison.md
#   make lock   -> requirements.lock (exact versions) from requirements.txt
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.awopt-installed
APT_PACKAGES := libegl1 libgl1-mesa-dri libglx-mesa0 libosmesa6 libusb-1.0-0
# only for tests that skip without them: strace (no off-host traffic), xvfb + Vulkan lavapipe
# (the Rerun viewer renders on a virtual display); a failed install of these is not fatal
APT_OPTIONAL := strace xvfb xauth mesa-vulkan-drivers
EPISODES ?= 10

# Network rule: no DDS discovery leaves this machine; shared-memory transport for images.
export ROS_AUTOMATIC_DISCOVERY_RANGE := LOCALHOST
export RMW_IMPLEMENTATION := rmw_fastrtps_cpp
export FASTDDS_DEFAULT_PROFILES_FILE := $(CURDIR)/config/fastdds_localhost_shm.xml
export AMENT_PREFIX_PATH := $(CURDIR)/$(VENV)
export MUJOCO_GL ?= egl
export PYTHONUNBUFFERED := 1
# onnxruntime's telemetry looks up a host off this machine unless this is set (the code sets it too)
export ORT_DISABLE_TELEMETRY := 1
ROS_DOMAIN_ID ?= 37
export ROS_DOMAIN_ID

.PHONY: setup demo test bench compare collect clean lock
setup: $(STAMP)

# control_msgs / tf2_msgs / vision_msgs are generated from interfaces/ (awopt_ros/tools/build_interfaces.py)
INTERFACE_FILES := $(shell find interfaces -type f 2>/dev/null)
$(STAMP): requirements.txt requirements.lock setup.py $(INTERFACE_FILES)
	@missing=$$(for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then echo "apt-get install $$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	  else echo "warning: missing apt packages (run as root to install): $$missing"; fi; \
	fi
	@optional=$$(for p in $(APT_OPTIONAL); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$optional" ] && [ "$$(id -u)" = 0 ]; then echo "apt-get install (optional) $$optional"; \
	  { timeout 600 apt-get update -qq && DEBIAN_FRONTEND=noninteractive timeout 900 apt-get install -y -qq $$optional; } \
	    || echo "warning: optional apt packages not installed ($$optional): their tests skip"; \
	fi
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q torch==2.13.0
	$(VENV)/bin/pip install -q -r requirements.txt -c requirements.lock
	$(VENV)/bin/pip install -q --no-deps -e .
	$(VENV)/bin/python awopt_ros/tools/build_interfaces.py --prefix $(CURDIR)/$(VENV)
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/awopt demo --episodes $(EPISODES) --report runs/demo/report.json

collect: $(STAMP)
	$(VENV)/bin/awopt collect --episodes 500 --seed 0 --run-dir runs/collect_s9b \
	    --set scripted_policy:publish_proprio=true

test: $(STAMP)
	$(VENV)/bin/python -m pytest test

# d3rlpy (AWAC throughput baseline) only for the bench: --no-deps keeps its gymnasium pin from
# replacing the one minari uses; the second line is what `import d3rlpy` needs.
BENCH_STAMP := $(VENV)/.awopt-bench-installed
$(BENCH_STAMP): $(STAMP)
	$(VENV)/bin/pip install -q --no-deps d3rlpy==2.8.1
	$(VENV)/bin/pip install -q gym==0.26.2 structlog dataclasses-json scikit-learn
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	$(VENV)/bin/awopt bench --out bench/results.json

compare: $(STAMP)
	$(VENV)/bin/awopt compare --config full --work-dir runs/compare --docs-dir docs

# requirements.lock from requirements.txt: a fresh venv, then the exact versions it got.
lock:
	rm -rf build/lockvenv && $(PYTHON) -m venv build/lockvenv
	build/lockvenv/bin/pip install -q --upgrade pip
	build/lockvenv/bin/pip install -q torch==2.13.0
	build/lockvenv/bin/pip install -q -r requirements.txt
	{ sed -n '1,3p' requirements.lock; build/lockvenv/bin/pip freeze | grep -v '^torch=='; } > requirements.lock.new
	mv requirements.lock.new requirements.lock && rm -rf build/lockvenv

clean:
	rm -rf runs build install log
