# ctrl-exec: one static binary, all roles.
PREFIX  ?= /usr/local
DESTDIR ?=
TARGET  ?= x86_64-unknown-linux-musl
BIN      = target/$(TARGET)/release/ctrl-exec
ROLES    = ced ctrl-exec-dispatcher cea ctrl-exec-agent ctrl-exec-api ctrl-exec-exec
CARGO   ?= cargo

.PHONY: build static test demo install bench lint clean deps-static deps-test size static-all deb ipk test-aarch64 test-32bit deps-bench

## size budget of the static binary, all roles together (3 MiB)
SIZE_LIMIT = 3145728

## build: debug build of the multicall binary
build:
	$(CARGO) build

## static: static musl release binary ($(BIN))
static: deps-static
	CC_x86_64_unknown_linux_musl=musl-gcc CC_aarch64_unknown_linux_musl=aarch64-linux-gnu-gcc \
	CARGO_TARGET_AARCH64_UNKNOWN_LINUX_MUSL_LINKER=aarch64-linux-gnu-gcc \
	$(CARGO) build --release --target $(TARGET)
	@ls -l $(BIN)

## static-all: static binaries for x86_64 and aarch64 musl
static-all:
	$(MAKE) static TARGET=x86_64-unknown-linux-musl
	$(MAKE) static TARGET=aarch64-unknown-linux-musl

## size: each built static binary's size; fails over SIZE_LIMIT
size: static
	@fail=0; for b in target/*-unknown-linux-musl/release/ctrl-exec; do \
	  [ -f "$$b" ] || continue; n=$$(stat -c %s "$$b"); \
	  printf '%-60s %9d bytes (%s MiB)\n' "$$b" "$$n" "$$(awk "BEGIN{printf \"%.2f\", $$n/1048576}")"; \
	  [ "$$n" -le $(SIZE_LIMIT) ] || { echo "$$b is over $(SIZE_LIMIT) bytes" >&2; fail=1; }; \
	done; exit $$fail

deps-static:
	@rustup target list --installed 2>/dev/null | grep -qx '$(TARGET)' || rustup target add $(TARGET)
	@if [ "$(TARGET)" = x86_64-unknown-linux-musl ] && ! command -v musl-gcc >/dev/null; then \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq musl-tools; \
	  else echo "musl-gcc missing: run 'sudo apt-get install musl-tools'" >&2; exit 1; fi; fi
	@if [ "$(TARGET)" = aarch64-unknown-linux-musl ] && ! command -v aarch64-linux-gnu-gcc >/dev/null; then \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq gcc-aarch64-linux-gnu; \
	  else echo "aarch64-linux-gnu-gcc missing: run 'sudo apt-get install gcc-aarch64-linux-gnu'" >&2; exit 1; fi; fi

## test: every unit and integration test (real binary, real TLS, loopback)
test: deps-test test-aarch64 test-32bit deps-bench
	$(CARGO) test --all-targets

# armv7 and mips are 32-bit: the code must build for a 32-bit target
# (i686 musl stands in for them; rustup cannot fetch armv7 here).
test-32bit:
	@if (rustup target list --installed 2>/dev/null | grep -qx i686-unknown-linux-musl || rustup target add i686-unknown-linux-musl) \
	    && printf 'int main(void){return 0;}' | gcc -m32 -x c -o /dev/null - 2>/dev/null; then \
	  CC_i686_unknown_linux_musl="gcc -m32" $(CARGO) check --target i686-unknown-linux-musl; \
	else echo "no i686 target or gcc -m32: the 32-bit build check is skipped" >&2; fi

# The aarch64 agent that tests/qemu.rs runs under qemu-user: built when
# qemu-user-static and the cross linker are there (deps-test installs them
# when root), skipped with a note otherwise.
AARCH64_ENV = CC_aarch64_unknown_linux_musl=aarch64-linux-gnu-gcc \
	CARGO_TARGET_AARCH64_UNKNOWN_LINUX_MUSL_LINKER=aarch64-linux-gnu-gcc
test-aarch64:
	@if command -v qemu-aarch64-static >/dev/null && command -v aarch64-linux-gnu-gcc >/dev/null; then \
	  rustup target list --installed 2>/dev/null | grep -qx aarch64-unknown-linux-musl || rustup target add aarch64-unknown-linux-musl; \
	  $(AARCH64_ENV) $(CARGO) build --target aarch64-unknown-linux-musl; \
	else echo "no qemu-aarch64-static or aarch64-linux-gnu-gcc: the aarch64 agent test will be skipped" >&2; fi

# The Perl-compatibility tests mint the original's certificates with the
# openssl command line (they skip, saying so, without it).
# The package test builds a Debian root with debootstrap, the man page test
# reads them with man, the aarch64 test runs an agent under qemu-user, the
# 32-bit check needs gcc -m32 (not gcc-multilib: it conflicts with the cross
# compilers). Each skips, saying so, without its tool.
deps-test:
	@missing=; for t in openssl:openssl debootstrap:debootstrap man:man-db dpkg-deb:dpkg \
	    qemu-aarch64-static:qemu-user-static aarch64-linux-gnu-gcc:gcc-aarch64-linux-gnu; do \
	  command -v $${t%%:*} >/dev/null || missing="$$missing $${t#*:}"; done; \
	printf 'int main(void){return 0;}' | gcc -m32 -x c -o /dev/null - 2>/dev/null || \
	  missing="$$missing libc6-dev-i386 lib32gcc-$$(gcc -dumpversion | cut -d. -f1)-dev"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then apt-get update -qq && apt-get install -y -qq $$missing; \
	  else echo "missing:$$missing - the tests that need them will be skipped" >&2; fi; fi

## demo: a throwaway deployment in ./demo-deployment: CA, dispatcher, two agents, real pairing, real runs
demo: build
	bash scripts/demo.sh target/debug/ctrl-exec

## bench: binary size, RSS, ced run and API latency, N-agent fleet figures (N=100; make bench N=1000) -> target/bench/fleet.json
bench: static deps-bench
	BASELINE="$(BASELINE)" N="$(N)" bash scripts/bench.sh $(BIN)

# wrk loads the API, hyperfine times one-host runs, python3 reads peak RSS
# (installed when root).
deps-bench:
	@missing=; for t in wrk:wrk hyperfine:hyperfine python3:python3; do command -v $${t%%:*} >/dev/null || missing="$$missing $${t#*:}"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then apt-get update -qq && apt-get install -y -qq $$missing; \
	  else echo "missing:$$missing - install them for every bench figure" >&2; fi; fi

## deb: Debian packages (ctrl-exec, ctrl-exec-agent, ctrl-exec-dispatcher) in target/deb
deb: static
	sh scripts/deb.sh $(BIN) "" target/deb

## ipk: the OpenWrt agent package in target/ipk (IPK_ARCH= the router's opkg architecture)
ipk: static
	sh scripts/ipk.sh $(BIN) "$(IPK_ARCH)" target/ipk
	sh scripts/check-ipk.sh target/ipk/ctrl-exec-agent_*_$${IPK_ARCH:-*}.ipk

## lint: formatting and clippy, as before every commit
lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets -- -D warnings

## install: the static binary and role links under $(DESTDIR)$(PREFIX)/bin, man pages under share/man
install:
	@test -x $(BIN) || { echo "run 'make static' first" >&2; exit 1; }
	install -d $(DESTDIR)$(PREFIX)/bin
	install -m 0755 $(BIN) $(DESTDIR)$(PREFIX)/bin/ctrl-exec
	for r in $(ROLES); do ln -sf ctrl-exec $(DESTDIR)$(PREFIX)/bin/$$r; done
	for s in 1 5 8; do install -d $(DESTDIR)$(PREFIX)/share/man/man$$s; \
	  for p in man/*.$$s; do install -m 0644 $$p $(DESTDIR)$(PREFIX)/share/man/man$$s/; done; done

## fuzz: every cargo-fuzz target in fuzz/ for FUZZ_SECONDS each (see docs/DEVELOPER.md)
FUZZ_SECONDS ?= 60
FUZZ_TARGETS ?= http_head json conf pairing x509
FUZZ_FLAGS   ?= -timeout=10 -max_len=12288
.PHONY: fuzz
fuzz:
	@command -v cargo-fuzz >/dev/null || $(CARGO) install cargo-fuzz
	@if rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal; then \
	  run='$(CARGO) +nightly fuzz run'; \
	else \
	  echo 'fuzz: no nightly toolchain; using stable with RUSTC_BOOTSTRAP=1 and no sanitizer' >&2; \
	  run='env RUSTC_BOOTSTRAP=1 $(CARGO) fuzz run --sanitizer none'; \
	fi; \
	cd fuzz && for t in $(FUZZ_TARGETS); do \
	  mkdir -p corpus/$$t && \
	  $$run $$t corpus/$$t seeds/$$t -- -max_total_time=$(FUZZ_SECONDS) $(FUZZ_FLAGS) || exit 1; \
	done

clean:
	$(CARGO) clean
	rm -rf demo-deployment
