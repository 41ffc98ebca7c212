// A real sandpoold (or sandpool CLI) child process for tests and benches:
// started with fork/exec, its stdout and stderr read line by line on a
// helper thread so a test can wait for a specific line (the readiness line,
// a log event) instead of sleeping.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

namespace sandpool::testing {

// A fresh directory under the system temp dir, deleted with its contents.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

class ChildProcess {
 public:
  ChildProcess(const std::string& binary, const std::vector<std::string>& args);
  ~ChildProcess();  // SIGKILL if still running
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;

  pid_t pid() const { return pid_; }
  // The first line (stdout or stderr) containing `text`, or nothing if the
  // process exits or `timeout` passes first.
  std::optional<std::string> waitForLine(const std::string& text,
                                         std::chrono::milliseconds timeout);
  bool sawLine(const std::string& text);
  std::string output();  // everything read so far

  void signal(int signo);
  // The exit status (or 128 + signal), or nothing if it is still running
  // after `timeout`. Once it returns a status, all the output is read.
  std::optional<int> wait(std::chrono::milliseconds timeout);

 private:
  void readLoop(int out_fd, int err_fd);

  pid_t pid_ = -1;
  std::thread reader_;
  std::mutex mutex_;
  std::condition_variable changed_;
  std::vector<std::string> lines_;
  bool eof_ = false;
  std::optional<int> status_;
};

// sandpoold started on a free TCP port and a Unix socket in `data_dir`.
class ServerProcess {
 public:
  ServerProcess(const std::string& binary, const std::filesystem::path& data_dir,
                const std::filesystem::path& tenants_file,
                const std::vector<std::string>& extra_args);

  ChildProcess& process() { return *process_; }
  const std::string& tcpAddress() const { return tcp_; }    // "127.0.0.1:PORT"
  const std::string& unixAddress() const { return unix_; }  // "unix:/path"
  // "127.0.0.1:PORT" with --listen-metrics; empty without.
  const std::string& metricsAddress() const { return metrics_; }
  // SIGTERM, then the exit status (nothing if it did not exit in time).
  std::optional<int> stop(std::chrono::milliseconds timeout = std::chrono::seconds(20));

 private:
  std::unique_ptr<ChildProcess> process_;
  std::string tcp_, unix_, metrics_;
};

}  // namespace sandpool::testing
