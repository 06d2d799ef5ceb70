# transformer-suite tasks. `just` lists them; every recipe sets up .venv when it is missing.

set shell := ["bash", "-euo", "pipefail", "-c"]
set positional-arguments

# PyTorch to install first; GPU users: just TORCH_SPEC="torch" setup (or an index-url spec)
TORCH_SPEC := env("TORCH_SPEC", "torch==2.13.0")
python := ".venv/bin/python"
offline := "HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false"

# list the recipes
default:
    @just --list

# create .venv: pinned torch first, then the project with its dev extra
setup:
    python3 -m venv .venv
    {{python}} -m pip install -q --upgrade pip
    {{python}} -m pip install -q "{{TORCH_SPEC}}"
    {{python}} -m pip install -q -e ".[dev]"

[private]
ensure:
    @[ -x {{python}} ] && {{python}} -c "import modules, torch, lightning" 2>/dev/null || just setup

# train an experiment config (experiments/configs/NAME.yaml); extra args are CLI overrides
train NAME="default" *ARGS: ensure
    {{offline}} .venv/bin/tsuite fit -c experiments/configs/{{NAME}}.yaml "${@:2}"

# run the test suite (offline, CPU)
test *ARGS: ensure
    {{offline}} WANDB_MODE=disabled {{python}} -m pytest "$@"

# lint and check formatting
lint: ensure
    .venv/bin/ruff check .
    .venv/bin/ruff format --check .

# format the code
fmt: ensure
    .venv/bin/ruff check --fix .
    .venv/bin/ruff format .

# start a W&B sweep agent for experiments/sweeps/NAME.yaml (offline: tsuite sweep FILE)
sweep NAME: ensure
    #!/usr/bin/env bash
    set -euo pipefail
    export PATH="$PWD/.venv/bin:$PATH"
    id=$(wandb sweep --project transformer-suite experiments/sweeps/{{NAME}}.yaml 2>&1 | tee /dev/stderr | sed -n 's/.*wandb agent \(.*\)$/\1/p' | tail -1)
    [ -n "$id" ] || { echo "wandb sweep did not return a sweep id (logged in? try: wandb login)"; exit 1; }
    wandb agent "$id"

# run the benchmarks side by side with the reference implementations
bench *ARGS: ensure
    {{offline}} {{python}} -m benchmarks "$@"
