// Arbitrary bytes from a client connection, read as sandpoold reads them:
// through the server's message stream (BufferedMessageStream) with the
// server's ReaderOptions (ServerOptions::rpcReaderOptions, defaults), each
// message taken as a capnp rpc::Message and traversed the way the RPC layer
// and the server's handlers read it: the message itself, and a call's
// parameters as the parameter struct of the sandpool method it names (a
// return's results as HostFunctions.call's, the only call the server makes
// to clients). Malformed framing or content ends the "connection" with a
// kj::Exception, as it would end the server's; nothing else may happen.
#include <cstdint>

#include <capnp/dynamic.h>
#include <capnp/rpc.capnp.h>
#include <capnp/schema.h>
#include <kj/async-io.h>

#include "rpc-schema/buffered_message_stream.h"
#include "rpc-schema/sandpool.capnp.h"
#include "server/options.h"
#include "tests/fuzz/fuzz_check.h"

using sandpool::fuzz::require;

namespace {

// Reads every field a handler could read: scalars, text and data bytes,
// lists, nested structs, the active union member. Capabilities are not
// followed (the RPC layer resolves them through the cap table); opaque
// pointers are measured, which walks everything they point to.
uint64_t traverse(const capnp::DynamicValue::Reader& value) {
  switch (value.getType()) {
    case capnp::DynamicValue::TEXT: {
      uint64_t sum = 0;
      for (char c : value.as<capnp::Text>()) sum += static_cast<uint8_t>(c);
      return sum;
    }
    case capnp::DynamicValue::DATA: {
      uint64_t sum = 0;
      for (uint8_t b : value.as<capnp::Data>()) sum += b;
      return sum;
    }
    case capnp::DynamicValue::LIST: {
      uint64_t sum = 0;
      for (auto element : value.as<capnp::DynamicList>()) sum += traverse(element);
      return sum;
    }
    case capnp::DynamicValue::STRUCT: {
      auto reader = value.as<capnp::DynamicStruct>();
      uint64_t sum = 0;
      auto visit = [&](capnp::StructSchema::Field field) {
        if (field.getType().isInterface() || !reader.has(field)) return;
        sum += traverse(reader.get(field));
      };
      KJ_IF_MAYBE (active, reader.which()) {
        visit(*active);
      }
      for (auto field : reader.getSchema().getNonUnionFields()) visit(field);
      return sum;
    }
    case capnp::DynamicValue::ANY_POINTER:
      return value.as<capnp::AnyPointer>().targetSize().wordCount;
    case capnp::DynamicValue::INT: return static_cast<uint64_t>(value.as<int64_t>());
    case capnp::DynamicValue::UINT: return value.as<uint64_t>();
    case capnp::DynamicValue::FLOAT: return value.as<double>() != 0;
    case capnp::DynamicValue::BOOL: return value.as<bool>();
    case capnp::DynamicValue::ENUM: return value.as<capnp::DynamicEnum>().getRaw();
    default: return 0;
  }
}

// The interface a call names, among those the server implements.
kj::Maybe<capnp::InterfaceSchema> serverInterface(uint64_t id) {
  for (auto schema : {capnp::Schema::from<sandpool::rpc::Sandpool>(),
                      capnp::Schema::from<sandpool::rpc::Tenant>(),
                      capnp::Schema::from<sandpool::rpc::Guest>()}) {
    if (schema.getProto().getId() == id) return schema;
  }
  return nullptr;
}

uint64_t traverseContent(capnp::rpc::Payload::Reader payload, capnp::StructSchema type) {
  return traverse(payload.getContent().getAs<capnp::DynamicStruct>(type));
}

uint64_t traverseMessage(capnp::MessageReader& reader) {
  auto message = reader.getRoot<capnp::rpc::Message>();
  uint64_t sum = traverse(capnp::toDynamic(message));
  if (message.isCall()) {
    auto call = message.getCall();
    KJ_IF_MAYBE (interface, serverInterface(call.getInterfaceId())) {
      auto methods = interface->getMethods();
      if (call.getMethodId() < methods.size()) {
        sum += traverseContent(call.getParams(), methods[call.getMethodId()].getParamType());
      }
    }
  } else if (message.isReturn() && message.getReturn().isResults()) {
    auto host_call = capnp::Schema::from<sandpool::rpc::HostFunctions>().getMethods()[0];
    sum += traverseContent(message.getReturn().getResults(), host_call.getResultType());
  }
  return sum;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static kj::EventLoop loop;
  static kj::WaitScope wait_scope(loop);
  static const capnp::ReaderOptions options = sandpool::server::ServerOptions{}.rpcReaderOptions();

  auto pipe = kj::newTwoWayPipe();
  sandpool::wire::BufferedMessageStream stream(*pipe.ends[1]);
  auto& client = *pipe.ends[0];
  auto sending =
      client.write(data, size).then([&client] { client.shutdownWrite(); }).eagerlyEvaluate(nullptr);

  size_t messages = 0;
  auto failure = kj::runCatchingExceptions([&] {
    for (;;) {
      auto message = stream.tryReadMessage(nullptr, options, nullptr).wait(wait_scope);
      KJ_IF_MAYBE (m, message) {
        traverseMessage(*m->reader);
        messages++;
      } else {
        return;
      }
    }
  });
  // Every message is at least its one-word segment table and a word of body
  // (or an empty segment): no more messages than words can come out.
  require(messages <= size / sizeof(capnp::word), "no more messages than words sent");
  if (failure == nullptr)
    require(size % sizeof(capnp::word) == 0, "a clean end of stream falls on a word");
  return 0;
}
