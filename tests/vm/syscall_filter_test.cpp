// The system-call filters themselves (vm/syscall_filter.h): each test runs
// in a child process (a gtest death test), since a filter, once installed,
// stays for the life of the thread or process, and a kill takes the whole
// process.
#include <gtest/gtest.h>

#include <signal.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstdlib>
#include <thread>

#include "vm/syscall_filter.h"

namespace sandpool::vm {
namespace {

class SyscallFilterTest : public ::testing::Test {
 protected:
  // The test binary has threads (the watchdog's): a child that re-runs it
  // is safer than one forked from it.
  void SetUp() override { GTEST_FLAG_SET(death_test_style, "threadsafe"); }
};

// Runs `body` on a new thread under the guest-thread filter and exits with
// `code` if the thread came back.
template <typename Body>
[[noreturn]] void onRestrictedThread(BackendKind backend, FilterMode mode, Body body, int code) {
  std::thread thread([&] {
    if (!restrictGuestThread(backend, mode)) std::_Exit(100);
    body();
  });
  thread.join();
  std::_Exit(code);
}

TEST_F(SyscallFilterTest, AGuestThreadThatOpensASocketIsKilled) {
  EXPECT_EXIT(onRestrictedThread(
                  BackendKind::kEmulated, FilterMode::kKill,
                  [] { ::syscall(SYS_socket, AF_INET, SOCK_STREAM, 0); }, 0),
              ::testing::KilledBySignal(SIGSYS), "");
}

TEST_F(SyscallFilterTest, AGuestThreadThatExecutesAProgramIsKilled) {
  EXPECT_EXIT(onRestrictedThread(
                  BackendKind::kKvm, FilterMode::kKill,
                  [] { ::execl("/bin/true", "true", static_cast<char*>(nullptr)); }, 0),
              ::testing::KilledBySignal(SIGSYS), "");
}

// Only KVM's threads may call ioctl at all.
TEST_F(SyscallFilterTest, AnEmulatedBackendsThreadThatCallsIoctlIsKilled) {
  EXPECT_EXIT(
      onRestrictedThread(
          BackendKind::kEmulated, FilterMode::kKill, [] { ::syscall(SYS_ioctl, 0, 0xAE00, 0); }, 0),
      ::testing::KilledBySignal(SIGSYS), "");
}

TEST_F(SyscallFilterTest, AGuestThreadDoesWhatAWorkerDoes) {
  EXPECT_EXIT(onRestrictedThread(
                  BackendKind::kEmulated, FilterMode::kKill,
                  [] {
                    void* memory = std::malloc(1 << 20);
                    std::free(memory);
                    uint8_t entropy[16];
                    if (::syscall(SYS_getrandom, entropy, sizeof entropy, 0) != sizeof entropy)
                      std::_Exit(101);
                    std::this_thread::yield();
                  },
                  7),
              ::testing::ExitedWithCode(7), "");
}

TEST_F(SyscallFilterTest, LogModeLetsAForbiddenCallThrough) {
  EXPECT_EXIT(onRestrictedThread(
                  BackendKind::kEmulated, FilterMode::kLog,
                  [] {
                    const long fd = ::syscall(SYS_socket, AF_INET, SOCK_STREAM, 0);
                    if (fd < 0) std::_Exit(102);
                  },
                  8),
              ::testing::ExitedWithCode(8), "");
}

TEST_F(SyscallFilterTest, TheProcessFilterStopsProgramsButNotThreads) {
  EXPECT_EXIT(
      {
        if (!restrictProcess(FilterMode::kKill)) std::_Exit(100);
        std::thread([] {}).join();
        ::execl("/bin/true", "true", static_cast<char*>(nullptr));
        std::_Exit(0);
      },
      ::testing::KilledBySignal(SIGSYS), "");
  EXPECT_EXIT(
      {
        if (!restrictProcess(FilterMode::kKill)) std::_Exit(100);
        std::thread([] {}).join();
        std::_Exit(9);
      },
      ::testing::ExitedWithCode(9), "");
}

TEST_F(SyscallFilterTest, TheProcessFilterStopsANewProcess) {
  EXPECT_EXIT(
      {
        if (!restrictProcess(FilterMode::kKill)) std::_Exit(100);
        ::fork();
        std::_Exit(0);
      },
      ::testing::KilledBySignal(SIGSYS), "");
}

TEST(SyscallFilterModeTest, ParsesKillAndLogOnly) {
  FilterMode mode = FilterMode::kLog;
  EXPECT_TRUE(parseFilterMode("kill", mode));
  EXPECT_EQ(mode, FilterMode::kKill);
  EXPECT_TRUE(parseFilterMode("log", mode));
  EXPECT_EQ(mode, FilterMode::kLog);
  EXPECT_FALSE(parseFilterMode("off", mode));
  EXPECT_EQ(filterModeName(FilterMode::kKill), "kill");
}

}  // namespace
}  // namespace sandpool::vm
