// Writes the rpc_message fuzzer's generated seeds: real capnp RPC messages a
// client sends (bootstrap, login, upload, calls with every value type and a
// host-functions capability, a host function's return, finish, release,
// abort), one per file and all of them as one burst, built from the schema
// so that they follow it as it changes.
//   rpc_message_seeds OUTPUT_DIR
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <string>
#include <vector>

#include <capnp/rpc.capnp.h>
#include <capnp/serialize.h>

#include "rpc-schema/sandpool.capnp.h"

namespace rpc = sandpool::rpc;
using Message = capnp::rpc::Message;

namespace {

using Build = std::function<void(Message::Builder)>;

capnp::rpc::Call::Builder initCall(Message::Builder message, uint32_t question, uint32_t target,
                                   uint64_t interface_id, uint16_t method) {
  auto call = message.initCall();
  call.setQuestionId(question);
  call.initTarget().setImportedCap(target);
  call.setInterfaceId(interface_id);
  call.setMethodId(method);
  return call;
}

void fillArgs(capnp::List<rpc::Value>::Builder args) {
  args[0].setI32(-7);
  args[1].setI64(1ll << 40);
  args[2].setU32(7);
  args[3].setU64(~0ull);
  args[4].setF32(1.5f);
  args[5].setF64(-0.25);
  args[6].setBool(true);
  args[7].setString("hello");
  const uint8_t bytes[] = {0, 1, 2, 0xff};
  args[8].setBytes(kj::arrayPtr(bytes, sizeof bytes));
  args[9].setVoid();
}

const std::vector<std::pair<std::string, Build>>& seeds() {
  static const std::vector<std::pair<std::string, Build>> all = {
      {"bootstrap", [](Message::Builder m) { m.initBootstrap().setQuestionId(0); }},
      {"ping", [](Message::Builder m) { initCall(m, 1, 0, capnp::typeId<rpc::Sandpool>(), 0); }},
      {"login",
       [](Message::Builder m) {
         initCall(m, 2, 0, capnp::typeId<rpc::Sandpool>(), 2)
             .initParams()
             .getContent()
             .initAs<rpc::Sandpool::LoginParams>()
             .setToken("token-of-sixteen-characters");
       }},
      {"upload",
       [](Message::Builder m) {
         auto params = initCall(m, 3, 1, capnp::typeId<rpc::Tenant>(), 1)
                           .initParams()
                           .getContent()
                           .initAs<rpc::Tenant::UploadParams>();
         params.setName("hello");
         const uint8_t elf[] = {0x7f, 'E', 'L', 'F', 2, 1, 1, 0};
         params.setElf(kj::arrayPtr(elf, sizeof elf));
         params.setReplace(true);
       }},
      {"tenant_call",
       [](Message::Builder m) {
         auto call = initCall(m, 4, 1, capnp::typeId<rpc::Tenant>(), 4);
         auto params = call.initParams();
         auto content = params.getContent().initAs<rpc::Tenant::CallParams>();
         content.setGuest("hello");
         content.setFunction("echo");
         fillArgs(content.initArgs(10));
         content.setTimeoutMs(1000);
         params.initCapTable(1)[0].setSenderHosted(0);
       }},
      {"guest_call",
       [](Message::Builder m) {
         auto content = initCall(m, 5, 2, capnp::typeId<rpc::Guest>(), 0)
                            .initParams()
                            .getContent()
                            .initAs<rpc::Guest::CallParams>();
         content.setFunction("add");
         auto args = content.initArgs(2);
         args[0].setI32(1);
         args[1].setI32(2);
       }},
      {"configure",
       [](Message::Builder m) {
         auto content = initCall(m, 6, 1, capnp::typeId<rpc::Tenant>(), 6)
                            .initParams()
                            .getContent()
                            .initAs<rpc::Tenant::ConfigureParams>();
         content.setGuest("hello");
         content.initSettings();
       }},
      {"host_function_return",
       [](Message::Builder m) {
         auto ret = m.initReturn();
         ret.setAnswerId(0);
         auto result =
             ret.initResults().getContent().initAs<rpc::HostFunctions::CallResults>().initResult();
         result.initValue().setString("reply");
       }},
      {"finish", [](Message::Builder m) { m.initFinish().setQuestionId(2); }},
      {"release",
       [](Message::Builder m) {
         auto release = m.initRelease();
         release.setId(1);
         release.setReferenceCount(1);
       }},
      {"abort", [](Message::Builder m) { m.initAbort().setReason("client going away"); }},
  };
  return all;
}

void writeFile(const std::filesystem::path& path, kj::ArrayPtr<const kj::byte> bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(bytes.begin()),
            static_cast<std::streamsize>(bytes.size()));
  if (!out) throw std::runtime_error("cannot write " + path.string());
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s OUTPUT_DIR\n", argv[0]);
    return 2;
  }
  const std::filesystem::path dir = argv[1];
  std::filesystem::create_directories(dir);
  std::vector<kj::byte> burst;
  for (const auto& [name, build] : seeds()) {
    capnp::MallocMessageBuilder builder;
    build(builder.initRoot<Message>());
    auto words = capnp::messageToFlatArray(builder);
    writeFile(dir / name, words.asBytes());
    burst.insert(burst.end(), words.asBytes().begin(), words.asBytes().end());
  }
  writeFile(dir / "burst", kj::arrayPtr(burst.data(), burst.size()));
  return 0;
}
