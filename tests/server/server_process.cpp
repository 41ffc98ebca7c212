#include "tests/server/server_process.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <random>
#include <sstream>
#include <stdexcept>

namespace sandpool::testing {

namespace fs = std::filesystem;

TempDir::TempDir() {
  std::random_device rd;
  for (int attempt = 0; attempt < 100; ++attempt) {
    fs::path p = fs::temp_directory_path() / ("sandpool-test-" + std::to_string(rd()));
    std::error_code ec;
    if (fs::create_directory(p, ec)) {
      path_ = p;
      return;
    }
  }
  throw std::runtime_error("could not create a temporary directory");
}

TempDir::~TempDir() {
  std::error_code ec;
  fs::remove_all(path_, ec);
}

ChildProcess::ChildProcess(const std::string& binary, const std::vector<std::string>& args) {
  int out[2], err[2];
  if (::pipe2(out, O_CLOEXEC) != 0 || ::pipe2(err, O_CLOEXEC) != 0)
    throw std::runtime_error("pipe2 failed");
  std::vector<std::string> storage;
  storage.push_back(binary);
  storage.insert(storage.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (auto& s : storage) argv.push_back(s.data());
  argv.push_back(nullptr);
  pid_ = ::fork();
  if (pid_ < 0) throw std::runtime_error("fork failed");
  if (pid_ == 0) {
    ::dup2(out[1], STDOUT_FILENO);
    ::dup2(err[1], STDERR_FILENO);
    // The test process may block signals (the KJ loop of a test client
    // does); the child starts with none blocked.
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    ::execv(binary.c_str(), argv.data());
    ::_exit(127);
  }
  ::close(out[1]);
  ::close(err[1]);
  for (int fd : {out[0], err[0]}) ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK);
  reader_ = std::thread([this, o = out[0], e = err[0]] { readLoop(o, e); });
}

ChildProcess::~ChildProcess() {
  if (!wait(std::chrono::milliseconds(0))) {
    ::kill(pid_, SIGKILL);
    wait(std::chrono::seconds(10));
  }
  if (reader_.joinable()) reader_.join();
}

void ChildProcess::readLoop(int out_fd, int err_fd) {
  std::string partial[2];
  pollfd fds[2] = {{out_fd, POLLIN, 0}, {err_fd, POLLIN, 0}};
  int open_fds = 2;
  char buf[4096];
  while (open_fds > 0) {
    if (::poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      break;
    }
    // Both pipes are drained and their lines appended under one lock: the
    // log (stderr) written before a line on stdout is then never missing to
    // a test that has just seen the stdout line.
    std::lock_guard lock(mutex_);
    for (int i = 0; i < 2; ++i) {
      if (fds[i].fd < 0 || fds[i].revents == 0) continue;
      ssize_t n;
      while ((n = ::read(fds[i].fd, buf, sizeof buf)) > 0) {
        partial[i].append(buf, static_cast<size_t>(n));
      }
      if (n == 0 || (errno != EAGAIN && errno != EINTR)) {
        ::close(fds[i].fd);
        fds[i].fd = -1;
        --open_fds;
      }
      size_t nl;
      while ((nl = partial[i].find('\n')) != std::string::npos) {
        lines_.push_back(partial[i].substr(0, nl));
        partial[i].erase(0, nl + 1);
      }
    }
    changed_.notify_all();
  }
  std::lock_guard lock(mutex_);
  for (auto& p : partial) {
    if (!p.empty()) lines_.push_back(p);
  }
  eof_ = true;
  changed_.notify_all();
}

std::optional<std::string> ChildProcess::waitForLine(const std::string& text,
                                                     std::chrono::milliseconds timeout) {
  std::unique_lock lock(mutex_);
  std::optional<std::string> found;
  changed_.wait_for(lock, timeout, [&] {
    for (const auto& line : lines_) {
      if (line.find(text) != std::string::npos) {
        found = line;
        return true;
      }
    }
    return eof_;
  });
  return found;
}

bool ChildProcess::sawLine(const std::string& text) {
  return waitForLine(text, std::chrono::milliseconds(0)).has_value();
}

std::string ChildProcess::output() {
  std::lock_guard lock(mutex_);
  std::string all;
  for (const auto& line : lines_) all += line + "\n";
  return all;
}

void ChildProcess::signal(int signo) { ::kill(pid_, signo); }

std::optional<int> ChildProcess::wait(std::chrono::milliseconds timeout) {
  if (status_) return status_;
  auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    int status = 0;
    pid_t r = ::waitpid(pid_, &status, WNOHANG);
    if (r == pid_) {
      status_ = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      // Its last lines may still be in the pipes: let the reader reach EOF,
      // so that output() and waitForLine() see everything it wrote.
      std::unique_lock lock(mutex_);
      changed_.wait_until(
          lock, std::max(deadline, std::chrono::steady_clock::now() + std::chrono::seconds(5)),
          [&] { return eof_; });
      return status_;
    }
    if (std::chrono::steady_clock::now() >= deadline) return std::nullopt;
    // waitpid has no timeout; the reader thread sees EOF when the child
    // exits, so wait for that instead of sleeping blindly.
    std::unique_lock lock(mutex_);
    changed_.wait_until(
        lock, std::min(deadline, std::chrono::steady_clock::now() + std::chrono::milliseconds(20)),
        [&] { return eof_; });
  }
}

ServerProcess::ServerProcess(const std::string& binary, const fs::path& data_dir,
                             const fs::path& tenants_file,
                             const std::vector<std::string>& extra_args) {
  std::vector<std::string> args = {"--tenants",     tenants_file.string(),
                                   "--data-dir",    data_dir.string(),
                                   "--listen-tcp",  "127.0.0.1:0",
                                   "--listen-unix", (data_dir / "sandpoold.sock").string()};
  args.insert(args.end(), extra_args.begin(), extra_args.end());
  // Tests and benches run as whoever runs them; as root (CI) sandpoold
  // must be told that is meant (the flag changes nothing for other users),
  // unless the caller drops to a --user.
  if (std::find(args.begin(), args.end(), "--user") == args.end()) args.push_back("--allow-root");
  process_ = std::make_unique<ChildProcess>(binary, args);
  auto ready = process_->waitForLine("sandpoold ready", std::chrono::seconds(60));
  if (!ready) {
    throw std::runtime_error("sandpoold did not become ready; its output:\n" + process_->output());
  }
  std::istringstream words(*ready);
  std::string word;
  while (words >> word) {
    if (word.rfind("tcp=", 0) == 0) tcp_ = word.substr(4);
    if (word.rfind("unix=", 0) == 0) unix_ = "unix:" + word.substr(5);
    if (word.rfind("metrics=", 0) == 0) metrics_ = word.substr(8);
  }
}

std::optional<int> ServerProcess::stop(std::chrono::milliseconds timeout) {
  process_->signal(SIGTERM);
  return process_->wait(timeout);
}

}  // namespace sandpool::testing
