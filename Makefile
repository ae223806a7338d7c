# facework: thin wrappers around scripts/setup.sh, CMake and CTest.
#   make run    set up everything, build, and run the worker on its defaults
#   make test   set up everything (with the WebGPU test device), build (normal + ASan/UBSan),
#               run the whole test suite
#   make bench  set up everything, build, run the benchmarks
JOBS ?= $(shell nproc)
BUILD ?= build
ASAN_BUILD ?= build-asan
CMAKE_FLAGS ?=

.PHONY: all setup gpu-deps webgpu-deps build build-asan run test test-fast bench format format-check fuzz \
	valgrind soak clean

all: build

setup:
	bash scripts/setup.sh

# Opt-in: the CUDA 13 / TensorRT execution providers for ORT 1.29.0 (npm
# com.github.asus4.onnxruntime.linux-x64-gpu@0.4.9, sha256-checked, about 200 MB once),
# installed next to libonnxruntime.so.1. `FACEWORK_GPU=cuda make run` does the same.
gpu-deps:
	FACEWORK_GPU=cuda bash scripts/setup.sh

# The WebGPU provider's test device: Mesa's software Vulkan driver (lavapipe, >= 25, from
# Debian bookworm-backports on Debian 12, whose suite is added to apt then, said so) and the
# Vulkan loader. `make test` runs it first: the WebGPU tests run on that device.
webgpu-deps:
	FACEWORK_GPU=webgpu bash scripts/setup.sh

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
test: webgpu-deps build build-asan
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

# Valgrind memcheck of every facework process the integration tests start (hours on 2
# cores: not part of `make test`); see docs/hardening.md.
VALGRIND_BUILD ?= build-valgrind
valgrind: setup
	bash scripts/valgrind.sh --build $(VALGRIND_BUILD)

# Soak: the real worker under mixed hostile load for SOAK_SECONDS (default 30 min);
# make soak SOAK_SECONDS=120 for a quick one. Report: $(BUILD)/soak-report.md.
SOAK_SECONDS ?= 1800
soak: build
	./$(BUILD)/fw_soak --seconds $(SOAK_SECONDS) --facework $(BUILD)/facework \
	  --photos .deps/photos --report $(BUILD)/soak-report.md --samples $(BUILD)/soak-samples.tsv

clean:
	rm -rf $(BUILD) $(ASAN_BUILD) $(VALGRIND_BUILD) build-fuzz
