// sandpool-wasm-translate: a wasm32-wasi module into the guest ELF the server
// would make of it at upload (docs/wasm.md), on this machine. For build
// steps that must not need the tools where the guest runs (the KVM tests
// inside QEMU), and for uploading an ELF instead of a module.
//
//   sandpool-wasm-translate MODULE.wasm OUTPUT.elf
#include <fstream>
#include <iostream>
#include <iterator>
#include <string>
#include <vector>

#include "wasm/translator.h"

int main(int argc, char** argv) {
  if (argc != 3) {
    std::cerr << "usage: sandpool-wasm-translate MODULE.wasm OUTPUT.elf\n";
    return 2;
  }
  std::ifstream in(argv[1], std::ios::binary);
  if (!in) {
    std::cerr << "sandpool-wasm-translate: cannot read '" << argv[1] << "'\n";
    return 1;
  }
  std::vector<uint8_t> module{std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
  auto elf = sandpool::wasm::translateModule(module, sandpool::wasm::defaultToolchain(), {});
  if (!elf) {
    std::cerr << "sandpool-wasm-translate: " << argv[1] << ": " << elf.error().describe() << "\n";
    return 1;
  }
  std::ofstream out(argv[2], std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(elf->data()), std::streamsize(elf->size()));
  if (!out.flush()) {
    std::cerr << "sandpool-wasm-translate: cannot write '" << argv[2] << "'\n";
    return 1;
  }
  return 0;
}
