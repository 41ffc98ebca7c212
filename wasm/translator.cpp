#include "wasm/translator.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>

#include <fmt/format.h>

#include "vm/unique_fd.h"
#include "wasm/glue_writer.h"
#include "wasm/module.h"
#include "wasm/toolchain_paths.h"

namespace sandpool::wasm {
namespace {

namespace fs = std::filesystem;
using vm::ErrorKind;
using vm::makeError;

constexpr size_t kMaxToolMessage = 2000;

// A private temporary folder, removed with everything in it.
class WorkDir {
 public:
  static vm::Expected<WorkDir> create() {
    std::string pattern = (fs::temp_directory_path() / "sandpool-wasm-XXXXXX").string();
    if (!mkdtemp(pattern.data()))
      return makeError(ErrorKind::kInternal, "mkdtemp for the Wasm translation failed");
    return WorkDir(pattern);
  }
  WorkDir(WorkDir&& other) noexcept : path_(std::exchange(other.path_, {})) {}
  WorkDir& operator=(WorkDir&&) = delete;
  ~WorkDir() {
    std::error_code ignored;
    if (!path_.empty()) fs::remove_all(path_, ignored);
  }
  fs::path operator/(const std::string& name) const { return path_ / name; }

 private:
  explicit WorkDir(fs::path path) : path_(std::move(path)) {}
  fs::path path_;
};

bool writeFile(const fs::path& path, std::span<const uint8_t> bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(reinterpret_cast<const char*>(bytes.data()), std::streamsize(bytes.size()));
  return bool(out);
}

std::string readText(const fs::path& path, size_t max) {
  std::ifstream in(path, std::ios::binary);
  std::string text(max, '\0');
  in.read(text.data(), std::streamsize(max));
  text.resize(size_t(in.gcount()));
  return text;
}

// Runs `argv` in `dir` with stdout and stderr in `log`, under `limits`.
// Returns the exit status, or kLimitExceeded when it ran out of wall time
// (killed) or was killed by a limit signal.
vm::Expected<int> runTool(const std::vector<std::string>& argv, const WorkDir& dir,
                          const fs::path& log, const TranslationLimits& limits) {
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  const std::string cwd = (dir / "").string();
  const pid_t pid = fork();
  if (pid < 0) return makeError(ErrorKind::kInternal, fmt::format("fork for {} failed", argv[0]));
  if (pid == 0) {
    // Only async-signal-safe calls between fork and exec.
    const int out = open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (out < 0 || chdir(cwd.c_str()) != 0 || dup2(out, 1) < 0 || dup2(out, 2) < 0) _exit(126);
    const rlimit memory{limits.max_memory, limits.max_memory};
    const rlimit file{limits.max_file_size, limits.max_file_size};
    const rlimit cpu{rlim_t(limits.max_time.count()), rlim_t(limits.max_time.count())};
    if (setrlimit(RLIMIT_AS, &memory) != 0 || setrlimit(RLIMIT_FSIZE, &file) != 0 ||
        setrlimit(RLIMIT_CPU, &cpu) != 0) {
      _exit(126);
    }
    execvp(args[0], args.data());
    _exit(127);
  }
  vm::UniqueFd pidfd(int(syscall(SYS_pidfd_open, pid, 0)));
  bool timed_out = false;
  if (pidfd.get() >= 0) {
    pollfd wait_for_exit{pidfd.get(), POLLIN, 0};
    const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(limits.max_time).count();
    if (poll(&wait_for_exit, 1, int(ms)) == 0) {
      timed_out = true;
      kill(pid, SIGKILL);
    }
  }
  int status = 0;
  pid_t waited;
  while ((waited = waitpid(pid, &status, 0)) < 0 && errno == EINTR) {
  }
  if (waited != pid)
    return makeError(ErrorKind::kInternal, fmt::format("waiting for {} failed", argv[0]));
  if (timed_out) {
    return makeError(ErrorKind::kLimitExceeded,
                     fmt::format("{} ran past the translation time limit of {} s", argv[0],
                                 limits.max_time.count()));
  }
  if (WIFSIGNALED(status)) {
    return makeError(
        ErrorKind::kLimitExceeded,
        fmt::format(
            "{} was stopped by signal {} (a translation limit on CPU time, memory or file size)",
            argv[0], WTERMSIG(status)));
  }
  return WEXITSTATUS(status);
}

std::vector<std::string> compileCommand(const Toolchain& t) {
  std::vector<std::string> argv = {t.cc,
                                   "-nostdinc",
                                   "-isystem",
                                   t.compiler_include,
                                   "-ffreestanding",
                                   "-fno-pie",
                                   "-fno-pic",
                                   "-mno-red-zone",
                                   "-march=x86-64",
                                   "-mtune=generic",
                                   "-fno-stack-protector",
                                   "-fcf-protection=none",
                                   "-fno-asynchronous-unwind-tables",
                                   "-fno-unwind-tables",
                                   "-fno-builtin",
                                   "-fno-math-errno",
                                   "-O2",
                                   "-w",
                                   "-DWASM_RT_MEMCHECK_SIGNAL_HANDLER=0"};
  for (const auto& dir : t.include_dirs) argv.insert(argv.end(), {"-isystem", dir});
  argv.insert(argv.end(), {"-nostdlib", "-static", "-no-pie", "-Wl,-T," + t.linker_script,
                           "-Wl,--build-id=none", "-Wl,-z,noexecstack", "-Wl,-z,max-page-size=4096",
                           "-o", "guest.elf", "module.c", "glue.c", "-Wl,--start-group"});
  argv.insert(argv.end(), t.libraries.begin(), t.libraries.end());
  argv.insert(argv.end(), {"-lgcc", "-Wl,--end-group"});
  return argv;
}

vm::Expected<void> runStep(const std::vector<std::string>& argv, const WorkDir& dir,
                           const std::string& step, const TranslationLimits& limits) {
  const fs::path log = dir / (step + ".log");
  auto status = runTool(argv, dir, log, limits);
  if (!status) return status.takeError();
  if (*status == 0) return {};
  return makeError(ErrorKind::kInvalidGuest,
                   fmt::format("wasm module: {} failed (exit {}): {}", step, *status,
                               readText(log, kMaxToolMessage)));
}

}  // namespace

Toolchain toolchainFromSdk(const std::string& sdk_dir) {
  const fs::path sdk(sdk_dir);
  return Toolchain{
      SANDPOOL_WASM2C,
      SANDPOOL_GUEST_CC,
      SANDPOOL_GUEST_CC_INCLUDE,
      {(sdk / "include").string(), (sdk / "include/libc").string(),
       (sdk / "wasm-include").string()},
      {(sdk / "lib/libsandpool_wasm_runtime.a").string(),
       (sdk / "lib/libsandpool_guest_runtime.a").string()},
      (sdk / "guest.ld").string(),
  };
}

std::string defaultSdkDir() {
  std::error_code error;
  const fs::path program = fs::read_symlink("/proc/self/exe", error);
  if (!error) {
    const fs::path installed = program.parent_path() / ".." / "share/sandpool/wasm-sdk";
    if (fs::is_directory(installed, error)) return installed.lexically_normal().string();
  }
  return SANDPOOL_BUILD_WASM_SDK;
}

const Toolchain& defaultToolchain() {
  static const Toolchain toolchain = toolchainFromSdk(defaultSdkDir());
  return toolchain;
}

vm::Expected<void> checkToolchain(const Toolchain& toolchain) {
  auto missing = [](const std::string& what, const std::string& path) {
    return makeError(ErrorKind::kInternal,
                     fmt::format("wasm toolchain: {} '{}' is missing", what, path));
  };
  std::error_code error;
  for (const auto& dir : toolchain.include_dirs) {
    if (!fs::is_directory(dir, error)) return missing("SDK header folder", dir);
  }
  if (!fs::is_directory(toolchain.compiler_include, error))
    return missing("compiler header folder", toolchain.compiler_include);
  for (const auto& library : toolchain.libraries) {
    if (!fs::is_regular_file(library, error)) return missing("SDK library", library);
  }
  if (!fs::is_regular_file(toolchain.linker_script, error))
    return missing("SDK linker script", toolchain.linker_script);
  for (const auto& tool : {toolchain.wasm2c, toolchain.cc}) {
    if (access(tool.c_str(), X_OK) != 0) {
      return makeError(ErrorKind::kInternal,
                       fmt::format("wasm toolchain: '{}' is missing or not executable", tool));
    }
  }
  return {};
}

vm::Expected<std::vector<uint8_t>> translateModule(std::span<const uint8_t> bytes,
                                                   const Toolchain& toolchain,
                                                   const TranslationLimits& limits) {
  if (bytes.size() > limits.max_module_size) {
    return makeError(ErrorKind::kInvalidGuest,
                     fmt::format("wasm module: {} bytes exceeds the limit of {}", bytes.size(),
                                 limits.max_module_size));
  }
  auto module = parseModule(bytes);
  if (!module) return module.takeError();
  auto glue = writeGlue(*module);
  if (!glue) return glue.takeError();

  auto dir = WorkDir::create();
  if (!dir) return dir.takeError();
  if (!writeFile(*dir / "module.wasm", bytes) ||
      !writeFile(*dir / "glue.c",
                 std::span(reinterpret_cast<const uint8_t*>(glue->data()), glue->size()))) {
    return makeError(ErrorKind::kInternal, "writing the Wasm translation's input files failed");
  }
  auto translated =
      runStep({toolchain.wasm2c, "module.wasm", "-n", std::string(kModuleSymbol), "-o", "module.c"},
              *dir, "wasm2c", limits);
  if (!translated) return translated.takeError();
  auto compiled = runStep(compileCommand(toolchain), *dir, "compile", limits);
  if (!compiled) return compiled.takeError();

  std::ifstream in(*dir / "guest.elf", std::ios::binary);
  std::vector<uint8_t> image((std::istreambuf_iterator<char>(in)),
                             std::istreambuf_iterator<char>());
  if (image.empty() || image.size() > limits.max_image_size) {
    return makeError(ErrorKind::kLimitExceeded,
                     fmt::format("translated guest image of {} bytes is empty or exceeds {}",
                                 image.size(), limits.max_image_size));
  }
  return image;
}

}  // namespace sandpool::wasm

namespace sandpool::wasm {

vm::Expected<std::vector<uint8_t>> guestImageFromUpload(std::vector<uint8_t> bytes,
                                                        const Toolchain& toolchain,
                                                        const TranslationLimits& limits) {
  if (!isWasmModule(bytes)) return bytes;
  return translateModule(bytes, toolchain, limits);
}

}  // namespace sandpool::wasm
