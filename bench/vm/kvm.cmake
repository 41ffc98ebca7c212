# KVM benchmarks (included by bench/vm/CMakeLists.txt). kvm_call_bench needs a
# host with a usable /dev/kvm; docs/performance.md says how to run it.
add_executable(kvm_call_bench kvm_call_bench.cpp ${PROJECT_SOURCE_DIR}/tests/vm/guest_files.cpp)
target_include_directories(kvm_call_bench PRIVATE ${PROJECT_SOURCE_DIR}/tests/vm)
target_compile_definitions(kvm_call_bench PRIVATE SANDPOOL_GUEST_BUILD_DIR="${PROJECT_BINARY_DIR}/guest")
target_compile_options(kvm_call_bench PRIVATE ${SANDPOOL_HOST_WARNINGS})
target_link_libraries(kvm_call_bench PRIVATE sandpool_vm GTest::gtest)
add_dependencies(kvm_call_bench probe)
