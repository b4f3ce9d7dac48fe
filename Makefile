# The two set-up commands of the README. Each installs what it needs first.
.PHONY: demo test lint bench install install-dev

demo: install
	reverie explore --scene 1000003 --seconds 10 --memory relic --out out/explore.mp4 --json out/explore.json

test: install-dev
	ruff check src tests benchmarks
	python -m pytest -q

install:
	bash scripts/install.sh

install-dev:
	bash scripts/install.sh dev

lint:
	ruff check src tests benchmarks

bench: install
	python benchmarks/render_speed.py --out benchmarks/results/render_speed.json
