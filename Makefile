# kiln — GNU make build.  `make` builds build/kiln, `make test` runs every test,
# `make run` builds and runs the sample, `make fuzz` runs the fuzzers for a while.
# Missing Debian packages are installed first (as root) by `make deps`.

BUILD    ?= build
CC       ?= cc
FUZZ_CC  ?= clang
FUZZ_TIME ?= 60
PKGS     := libarchive libcrypto jansson libcurl libcap libbtrfsutil libseccomp libmnl
# build/kiln loads libcurl and libarchive on first use (common/lazylib.h): they
# are not linked, which keeps ~40 shared objects out of every process start.
PKGS_LINKED := libcrypto jansson libcap libbtrfsutil libseccomp libmnl

# Debian packages: libraries and compilers for the build, tools for the tests.
DEB_BUILD := make gcc clang pkg-config libc6-dev libarchive-dev libssl-dev libjansson-dev \
	libcurl4-openssl-dev libcap-dev libbtrfsutil-dev libseccomp-dev libmnl-dev libcmocka-dev \
	libclang-rt-14-dev libnftables1
DEB_TEST := busybox-static btrfs-progs docker-registry skopeo umoci oci-image-tool podman buildah \
	runc crun python3 python3-jsonschema iproute2 util-linux zstd xz-utils bzip2 gzip jq openssl \
	curl procps tmux uidmap apache2-utils
DEB_ALL := $(DEB_BUILD) $(DEB_TEST)

# pkg-config is asked lazily (=, not :=) so that `make deps` can run first.
PKG_CFLAGS = $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   = $(shell pkg-config --libs $(PKGS) 2>/dev/null)
KILN_LIBS  = $(shell pkg-config --libs $(PKGS_LINKED) 2>/dev/null) -ldl
CMOCKA_LIBS = $(shell pkg-config --libs cmocka 2>/dev/null)

WARN     := -Wall -Wextra -Werror -Wno-unused-parameter -Wshadow -Wformat=2 -Wno-format-nonliteral
CFLAGS_COMMON = -std=gnu11 -g -D_GNU_SOURCE -D_FILE_OFFSET_BITS=64 -I. $(WARN) $(PKG_CFLAGS)
CFLAGS   ?= -O2
SAN      := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined

LIB_DIRS := common parser layers runtime builder
LIB_SRC  := $(filter-out builder/main.c,$(foreach d,$(LIB_DIRS),$(wildcard $(d)/*.c)))
HDRS     := $(foreach d,$(LIB_DIRS),$(wildcard $(d)/*.h))
UNIT_SRC := $(wildcard tests/unit/test_*.c)
UNIT_HELPER_SRC := $(filter-out $(UNIT_SRC),$(wildcard tests/unit/*.c))
FUZZ_SRC := $(wildcard tests/fuzz/fuzz_*.c)

OBJ      := $(LIB_SRC:%.c=$(BUILD)/obj/%.o)
ASAN_OBJ := $(LIB_SRC:%.c=$(BUILD)/asan/%.o)
FUZZ_OBJ := $(LIB_SRC:%.c=$(BUILD)/fuzzobj/%.o)
UNIT_BIN := $(UNIT_SRC:tests/unit/%.c=$(BUILD)/unit/%)
FUZZ_BIN := $(FUZZ_SRC:tests/fuzz/%.c=$(BUILD)/fuzz/%)

.PHONY: all kiln deps test check unit e2e cli-fuzz run fuzz fuzz-build bench clean
# Objects reached only through pattern rules are not intermediates to delete.
.SECONDARY: $(OBJ) $(ASAN_OBJ) $(FUZZ_OBJ) $(BUILD)/asan/builder/main.o
.DEFAULT_GOAL := all

all: deps
	@$(MAKE) --no-print-directory kiln

kiln: $(BUILD)/kiln

# Install what is missing, only then (and only as root) touching apt.
deps:
	@missing=$$(for p in $(DEB_ALL); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		if [ "$$(id -u)" != 0 ]; then echo "kiln: missing packages: $$missing (run 'make deps' as root)" >&2; exit 1; fi; \
		echo "installing:" $$missing; \
		export DEBIAN_FRONTEND=noninteractive; \
		apt-get update -q && apt-get install -y -q $$missing; \
	fi

$(BUILD)/kiln: $(OBJ) $(BUILD)/obj/builder/main.o
	$(CC) $(CFLAGS) -Wl,--as-needed -o $@ $^ $(KILN_LIBS) -lpthread

$(BUILD)/obj/%.o: %.c $(HDRS)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_COMMON) $(CFLAGS) -c -o $@ $<

$(BUILD)/asan/%.o: %.c $(HDRS)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_COMMON) -O1 $(SAN) -c -o $@ $<

$(BUILD)/asan/libkiln.a: $(ASAN_OBJ)
	@rm -f $@
	ar rcs $@ $^

# The whole binary under ASan+UBSan, for the command-line fuzz pass (t_cli_fuzz.sh).
$(BUILD)/asan-kiln/kiln: $(ASAN_OBJ) $(BUILD)/asan/builder/main.o
	@mkdir -p $(dir $@)
	$(CC) -O1 $(SAN) -o $@ $^ $(KILN_LIBS) -lpthread

$(BUILD)/unit/%: tests/unit/%.c $(UNIT_HELPER_SRC) $(BUILD)/asan/libkiln.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_COMMON) -O1 $(SAN) -o $@ $< $(UNIT_HELPER_SRC) $(BUILD)/asan/libkiln.a $(PKG_LIBS) $(CMOCKA_LIBS) -lpthread

# Tests: deps, the binary, unit tests under ASan+UBSan, then end-to-end tests.
test: deps
	@$(MAKE) --no-print-directory check

check: kiln $(UNIT_BIN)
	@$(MAKE) --no-print-directory unit
	@$(MAKE) --no-print-directory e2e

unit: $(UNIT_BIN)
	@KILN_TESTDATA=$(abspath ../shared/testdata) tests/unit/run.sh $(UNIT_BIN)

e2e: $(BUILD)/kiln $(BUILD)/asan-kiln/kiln
	@KILN_ASAN=$(abspath $(BUILD)/asan-kiln/kiln) tests/e2e/run.sh $(abspath $(BUILD)/kiln)

# Only the command-line fuzz pass against the sanitized binary.
cli-fuzz: $(BUILD)/asan-kiln/kiln
	@KILN_ASAN=$(abspath $(BUILD)/asan-kiln/kiln) E2E_ONLY=cli_fuzz tests/e2e/run.sh $(abspath $(BUILD)/kiln)

# The main job: make the offline base image, build the sample, run it.
run: all
	@samples/run.sh $(abspath $(BUILD)/kiln)

$(BUILD)/fuzzobj/%.o: %.c $(HDRS)
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(CFLAGS_COMMON) -O1 -fsanitize=fuzzer-no-link,address,undefined -c -o $@ $<

$(BUILD)/fuzz/%: tests/fuzz/%.c $(FUZZ_OBJ)
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(CFLAGS_COMMON) -O1 -fsanitize=fuzzer,address,undefined -o $@ $< $(FUZZ_OBJ) $(PKG_LIBS) -lpthread

fuzz-build: deps
	@$(MAKE) --no-print-directory $(FUZZ_BIN)

fuzz: fuzz-build
	@tests/fuzz/run.sh $(FUZZ_TIME) $(FUZZ_BIN)

bench: all
	@tests/bench/run.sh $(abspath $(BUILD)/kiln)

clean:
	rm -rf $(BUILD)
