# facework: thin wrappers around scripts/setup.sh, CMake and CTest.
#   make run    set up everything, build, and run the worker on its defaults
#   make test   set up everything, build (normal + ASan/UBSan), run the whole test suite
#   make bench  set up everything, build, run the benchmarks
JOBS ?= $(shell nproc)
BUILD ?= build
ASAN_BUILD ?= build-asan
CMAKE_FLAGS ?=

.PHONY: all setup build build-asan run test test-fast bench format format-check fuzz clean

all: build

setup:
	bash scripts/setup.sh

build: setup
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo $(CMAKE_FLAGS) >/dev/null
	cmake --build $(BUILD) -j $(JOBS)

build-asan: setup
	cmake -S . -B $(ASAN_BUILD) -DCMAKE_BUILD_TYPE=Debug -DFW_SANITIZE=ON $(CMAKE_FLAGS) >/dev/null
	cmake --build $(ASAN_BUILD) -j $(JOBS)

run: build
	./$(BUILD)/facework worker

# Whole suite: the release build, then every test again under ASan+UBSan, then each
# libFuzzer harness for a few seconds.
FUZZ_SECONDS ?= 10
test: build build-asan
	ctest --test-dir $(BUILD) --output-on-failure -j $(JOBS)
	ctest --test-dir $(ASAN_BUILD) --output-on-failure -j $(JOBS)
	bash scripts/fuzz.sh --seconds $(FUZZ_SECONDS)

test-fast: build
	ctest --test-dir $(BUILD) --output-on-failure -j $(JOBS)

bench: build
	bash bench/run.sh $(BUILD)

format:
	clang-format -i $$(git ls-files '*.c' '*.h')

format-check:
	clang-format --dry-run --Werror $$(git ls-files '*.c' '*.h')

# Long fuzzing: make fuzz FUZZ_TIME=600 [JOBS=2]
FUZZ_TIME ?= 300
fuzz: setup
	bash scripts/fuzz.sh --seconds $(FUZZ_TIME) --jobs $(JOBS)

clean:
	rm -rf $(BUILD) $(ASAN_BUILD) build-fuzz
