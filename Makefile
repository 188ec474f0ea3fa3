# Two commands: `make dev` runs Wharf locally, `make test` runs every test.
.PHONY: dev test setup build deploy bench bench-hot bench-debian bench-apk bench-oci bench-sync bench-ingest bench-publish fuzz

dev:
	scripts/dev

test:
	scripts/test

setup:
	scripts/setup

build:
	scripts/build

deploy:
	scripts/deploy

bench:
	bench/run

bench-hot:
	bench/run-hot

bench-debian:
	bench/run-debian

bench-apk:
	bench/run-apk

bench-oci:
	bench/run-oci

bench-sync:
	bench/run-sync

bench-ingest:
	bench/run-ingest

bench-publish:
	bench/run-publish

fuzz:
	bench/fuzz
