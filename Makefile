# Stratus — plain make.
#
#   make                 build every binary into build/
#   make check           build and run every test (tests/run-tests.sh)
#   make SANITIZE=address,undefined check
#   make deps            install the Debian packages in deps/*.txt (skips present ones)
#   make bench           run the benchmarks under bench/
#   make install         PREFIX=/usr/local DESTDIR= (binaries, units, man pages, ...)
#   make man             lint the man pages with mandoc
#
# Layout: each module folder (core bus vmm images metadata quotas scheduler
# agent cli) holds library code; a module's main.c, if any, is the main of
# its binary (see BINS). Tests are tests/**/test_*.c (cmocka, one binary
# each) and tests/**/test_*.sh (scripts run by tests/run-tests.sh).

CC      ?= cc
BUILD   ?= build
MODULES := core model store bus vmm images metadata quotas scheduler agent cli

PKGS := rdkafka libcurl jansson libvirt yaml-0.1 libmicrohttpd libxml-2.0 \
        sqlite3 libcrypto libisofs-1

WARN := -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes \
        -Wpointer-arith -Wcast-qual -Wformat=2 -Wswitch-enum -Wvla \
        -Wframe-larger-than=4096 -Werror

OPT    ?= -O2 -g
CFLAGS += -std=gnu11 $(OPT) $(WARN) -D_GNU_SOURCE -pthread -I. \
          $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
LDLIBS += $(shell pkg-config --libs $(PKGS) 2>/dev/null) -lpthread -lm
TEST_LDLIBS = $(shell pkg-config --libs cmocka 2>/dev/null)

ifneq ($(SANITIZE),)
CFLAGS  += -fsanitize=$(SANITIZE) -fno-omit-frame-pointer -fno-sanitize-recover=all
LDFLAGS += -fsanitize=$(SANITIZE)
BUILD   := build-san
endif
ifeq ($(SANITIZE),thread)
BUILD   := build-tsan
endif

# Binaries: name -> folder holding its main.c
BINS := stratus-agent stratus-scheduler stratus-metadata stratus-bus stratusctl
main_of = $(patsubst stratus-%,%,$(patsubst stratusctl,cli,$(1)))

LIB_SRCS := $(filter-out %/main.c,$(foreach m,$(MODULES),$(wildcard $(m)/*.c)))
LIB_OBJS := $(LIB_SRCS:%.c=$(BUILD)/obj/%.o)
LIB      := $(BUILD)/libstratus.a

TEST_SRCS := $(shell find tests -name 'test_*.c' 2>/dev/null | sort)
TEST_BINS := $(patsubst tests/%.c,$(BUILD)/tests/%,$(TEST_SRCS))
TEST_HELPER_SRCS := $(shell find tests -name '*.c' ! -name 'test_*.c' ! -path '*/fuzz/*' 2>/dev/null | sort)
TEST_HELPER_BINS := $(patsubst tests/%.c,$(BUILD)/tests/%,$(TEST_HELPER_SRCS))
BENCH_SRCS := $(shell find bench -name '*.c' 2>/dev/null | sort)
BENCH_BINS := $(patsubst bench/%.c,$(BUILD)/bench/%,$(BENCH_SRCS))

DEPS_STAMP := $(BUILD)/.deps-ok

all: $(addprefix $(BUILD)/,$(BINS))

# make deps: install what deps/*.txt lists, skipping what is present.
# deps/build*.txt: to build; deps/test*.txt: for make check and make bench;
# deps/demo*.txt: for make demo. One file per module keeps merges quiet.
DEPS_BUILD := $(sort $(wildcard deps/build*.txt))
DEPS_TEST  := $(sort $(wildcard deps/test*.txt))

deps:
	@sh deps/install.sh $(DEPS_BUILD) $(DEPS_TEST)

# Checked once per build dir; re-run when the package lists change.
$(DEPS_STAMP): $(DEPS_BUILD) deps/install.sh
	@sh deps/install.sh $(DEPS_BUILD)
	@mkdir -p $(@D) && touch $@

# V=1 shows the full commands.
Q := $(if $(V),,@)

$(BUILD)/obj/%.o: %.c | $(DEPS_STAMP)
	@mkdir -p $(@D)
	@$(if $(V),,echo "  CC      $<")
	$(Q)$(CC) $(CFLAGS) -MMD -MP -c -o $@ $<

$(LIB): $(LIB_OBJS)
	@mkdir -p $(@D)
	$(Q)rm -f $@ && ar rcs $@ $^

define bin_rule
$(BUILD)/$(1): $(BUILD)/obj/$(call main_of,$(1))/main.o $(LIB)
	@$(if $(V),,echo "  LD      $$@")
	$(Q)$$(CC) $$(LDFLAGS) -o $$@ $$^ $$(LDLIBS)
endef
$(foreach b,$(BINS),$(eval $(call bin_rule,$(b))))

$(BUILD)/tests/%: tests/%.c $(LIB) | $(DEPS_STAMP)
	@mkdir -p $(@D)
	@$(if $(V),,echo "  CC+LD   $<")
	$(Q)$(CC) $(CFLAGS) -Itests $(LDFLAGS) -o $@ $< $(LIB) $(LDLIBS) $(TEST_LDLIBS)

$(BUILD)/bench/%: bench/%.c $(LIB) | $(DEPS_STAMP)
	@mkdir -p $(@D)
	@$(if $(V),,echo "  CC+LD   $<")
	$(Q)$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $< $(LIB) $(LDLIBS)

tests: all $(TEST_BINS) $(TEST_HELPER_BINS)

check: tests
	@sh deps/install.sh $(DEPS_TEST)
	@BUILD=$(BUILD) SANITIZE=$(SANITIZE) bash tests/run-tests.sh

# ThreadSanitizer over the tests of code that shares memory between
# threads of its own (the image fetch's receiving and hashing threads):
# any data race fails. make check-tsan (its own build, build-tsan).
TSAN_TESTS := tests/images/test_fetch
check-tsan:
	@$(MAKE) --no-print-directory SANITIZE=thread $(TSAN_TESTS:%=build-tsan/%) \
		build-tsan/tests/images/cutproxy
	@BUILD=build-tsan SANITIZE=thread TESTS="$(TSAN_TESTS)" bash tests/run-tests.sh

# End-to-end: real libvirtd and QEMU guests, through the bus (tests/e2e).
e2e: tests
	@sh deps/install.sh $(DEPS_TEST) deps/demo.txt
	@BUILD=$(BUILD) SUITE=e2e bash tests/run-tests.sh

benches: all $(BENCH_BINS)

bench: benches
	@sh deps/install.sh $(DEPS_TEST)
	@BUILD=$(BUILD) sh bench/run-all.sh

# The single-machine dev cloud (deploy/demo.sh): installs what is missing,
# prepares the host, starts every service, boots a guest with cloud-init.
demo:
	@sh deploy/demo.sh start

demo-stop:
	@sh deploy/demo.sh stop

# make install [PREFIX=/usr/local] [DESTDIR=]: binaries, units (naming
# $(PREFIX)/bin), the example configs, docs, man pages, Prometheus rules.
# /etc/stratus/stratus.yaml is installed only when absent (an edited one stays).
PREFIX  ?= /usr/local
BINDIR  ?= $(PREFIX)/bin
MANDIR  ?= $(PREFIX)/share/man
DOCDIR  ?= $(PREFIX)/share/doc/stratus
SHAREDIR ?= $(PREFIX)/share/stratus
UNITDIR ?= $(if $(filter /usr,$(PREFIX)),/lib/systemd/system,/etc/systemd/system)
SYSCONFDIR ?= /etc
MAN_PAGES := cli/stratusctl.1 core/stratus.yaml.5 agent/stratus-agent.8 \
             scheduler/stratus-scheduler.8 metadata/stratus-metadata.8 bus/stratus-bus.8

install: all
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(UNITDIR) $(DESTDIR)$(DOCDIR)/examples \
		$(DESTDIR)$(SHAREDIR)/prometheus $(DESTDIR)$(MANDIR)/man1 $(DESTDIR)$(MANDIR)/man5 \
		$(DESTDIR)$(MANDIR)/man8 $(DESTDIR)$(SYSCONFDIR)/stratus
	install -m 0755 $(addprefix $(BUILD)/,$(BINS)) $(DESTDIR)$(BINDIR)/
	for u in deploy/systemd/*.service; do \
		sed -e 's|/usr/local/bin/|$(BINDIR)/|g' -e 's|/usr/local/share/doc/stratus|$(DOCDIR)|g' \
			"$$u" >$(DESTDIR)$(UNITDIR)/$${u##*/} && chmod 0644 $(DESTDIR)$(UNITDIR)/$${u##*/} || exit 1; \
	done
	install -m 0644 deploy/config/*.yaml $(DESTDIR)$(DOCDIR)/examples/
	install -m 0644 docs/*.md README.md $(DESTDIR)$(DOCDIR)/
	install -m 0644 deploy/prometheus/*.yml $(DESTDIR)$(SHAREDIR)/prometheus/
	for m in $(MAN_PAGES); do \
		install -m 0644 "$$m" $(DESTDIR)$(MANDIR)/man$${m##*.}/ || exit 1; \
	done
	[ -e $(DESTDIR)$(SYSCONFDIR)/stratus/stratus.yaml ] || \
		install -m 0644 deploy/config/single-host.yaml $(DESTDIR)$(SYSCONFDIR)/stratus/stratus.yaml
	# the console page's xterm.js (make console-web), agent.console.web_dir's default
	if [ -s $(BUILD)/console/xterm.js ]; then \
		install -d $(DESTDIR)$(SHAREDIR)/console && \
		install -m 0644 $(BUILD)/console/* $(DESTDIR)$(SHAREDIR)/console/; \
	fi

# xterm.js for the console page, from the npm registry (tools/vendor-xterm.sh)
console-web:
	@sh tools/vendor-xterm.sh $(BUILD)/console

# mandoc -Tlint on the man pages (tests/ops/test_man.sh checks them too)
man:
	mandoc -Tlint -Wwarning $(MAN_PAGES)

clean:
	rm -rf build build-san

.PHONY: all deps tests check check-tsan e2e bench benches clean demo demo-stop install man console-web
.SECONDARY:

-include $(shell find $(BUILD)/obj -name '*.d' 2>/dev/null)
