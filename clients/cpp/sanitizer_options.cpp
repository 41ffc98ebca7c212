// Linked into sandpool-asan only (see CMakeLists.txt): a sanitizer report
// ends the CLI with status 86, which no verb uses (0-3, docs/server.md), so
// a test that checks the exit status notices it whatever it expected.
extern "C" const char* __asan_default_options() { return "exitcode=86"; }
extern "C" const char* __ubsan_default_options() { return "exitcode=86:print_stacktrace=1"; }
