# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
.PHONY: bootstrap demo test lint bench clean

bootstrap:
	@bash scripts/bootstrap.sh

demo: bootstrap
	@bash scripts/demo.sh

test: bootstrap
	.venv/bin/python -m pytest -q $(PYTEST_ARGS)

lint: bootstrap
	.venv/bin/ruff check toren_action tests bench
	.venv/bin/mypy toren_action
	.venv/bin/lint-imports
	.venv/bin/actionlint .github/workflows/*.yml
	.venv/bin/zizmor --quiet --min-severity medium .github/workflows action.yml
	.venv/bin/check-jsonschema --builtin-schema vendor.github-workflows .github/workflows/*.yml
	.venv/bin/check-jsonschema --builtin-schema vendor.github-actions action.yml
	.venv/bin/check-jsonschema --check-metaschema toren_action/jobs/schema/job.schema.json

bench: bootstrap
	.venv/bin/python bench/bench_run.py

clean:
	rm -rf .toren-home .pytest_cache .ruff_cache build dist *.egg-info
