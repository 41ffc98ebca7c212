// The guest ABI's messages (vm/guest_protocol.h) on plain bytes, without a
// VM: what the host writes reads back as the ABI header says, and every
// malformed message a guest could leave is refused with its typed error.
#include <gtest/gtest.h>

#include <sandpool/abi.h>

#include <algorithm>
#include <array>
#include <cstring>

#include "vm/guest_protocol.h"

namespace sandpool::vm {
namespace {

constexpr std::array<uint8_t, kEntropyBytes> kEntropy = {1,  2,  3,  4,  5,  6,  7,  8,  9,  10, 11,
                                                         12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22,
                                                         23, 24, 25, 26, 27, 28, 29, 30, 31, 32};

// `header` followed by `body`, in a buffer of at least `size` bytes. Built
// at its full size first: appending to a header-sized vector trips GCC 12's
// -Warray-bounds (a false positive).
template <typename T>
std::vector<uint8_t> bytesOf(const T& header, const std::vector<uint8_t>& body = {},
                             size_t size = 0) {
  std::vector<uint8_t> out(std::max(sizeof header + body.size(), size));
  std::memcpy(out.data(), &header, sizeof header);
  std::copy(body.begin(), body.end(), out.begin() + sizeof header);
  return out;
}

void expectError(const Error& error, ErrorKind kind, const std::string& part) {
  EXPECT_EQ(error.kind, kind) << error.describe();
  EXPECT_NE(error.message.find(part), std::string::npos) << error.message;
}

// One export: result type, parameters, name, as the guest SDK writes it.
void appendExport(std::vector<uint8_t>& table, uint8_t result, std::vector<uint8_t> params,
                  const std::string& name) {
  table.push_back(result);
  table.push_back(static_cast<uint8_t>(params.size()));
  table.insert(table.end(), params.begin(), params.end());
  table.push_back(static_cast<uint8_t>(name.size() & 0xff));
  table.push_back(static_cast<uint8_t>(name.size() >> 8));
  table.insert(table.end(), name.begin(), name.end());
}

std::vector<uint8_t> exportTable(uint32_t count, const std::vector<uint8_t>& exports = {}) {
  return bytesOf(sandpool_export_table_header{SANDPOOL_EXPORTS_MAGIC, count}, exports);
}

TEST(GuestProtocol, BootInfoCarriesTheLayoutAndTheEntropy) {
  MemoryLayout layout;
  layout.memory_size = 64 * kMiB;
  layout.input_addr = 0x500000, layout.input_size = 0x1000;
  layout.output_addr = 0x501000, layout.output_size = 0x2000;
  layout.host_call_addr = 0x503000, layout.host_call_size = 0x3000;
  layout.heap_start = 0x506000, layout.heap_end = 0x3eff000;
  layout.stack_top = 64 * kMiB;
  std::vector<uint8_t> page(kPageSize, 0xee);
  ASSERT_TRUE(writeBootInfo(page, layout, kEntropy).ok());
  sandpool_boot_info boot;
  std::memcpy(&boot, page.data(), sizeof boot);
  EXPECT_EQ(boot.magic, SANDPOOL_BOOT_MAGIC);
  EXPECT_EQ(boot.abi_version, SANDPOOL_ABI_VERSION);
  EXPECT_EQ(boot.memory_size, layout.memory_size);
  EXPECT_EQ(boot.output_addr, layout.output_addr);
  EXPECT_EQ(boot.host_call_size, layout.host_call_size);
  EXPECT_EQ(boot.heap_end, layout.heap_end);
  EXPECT_EQ(boot.stack_top, layout.stack_top);
  EXPECT_EQ(boot.reserved, 0u);
  EXPECT_EQ(0, std::memcmp(boot.entropy, kEntropy.data(), kEntropyBytes));
  EXPECT_EQ(page[sizeof boot], 0xee) << "nothing past the boot info is written";
}

TEST(GuestProtocol, BootInfoRefusesTooSmallADestination) {
  std::vector<uint8_t> small(sizeof(sandpool_boot_info) - 1);
  auto written = writeBootInfo(small, MemoryLayout{}, kEntropy);
  ASSERT_FALSE(written.ok());
  expectError(written.error(), ErrorKind::kInternal, "boot info takes 128 bytes");
}

TEST(GuestProtocol, ExportTableParsesEveryExport) {
  std::vector<uint8_t> entries;
  appendExport(entries, SANDPOOL_TYPE_I32, {SANDPOOL_TYPE_I32, SANDPOOL_TYPE_I32}, "add");
  appendExport(entries, SANDPOOL_TYPE_VOID, {}, "nothing");
  auto table = exportTable(2, entries);
  auto exports = parseExportTable(table);
  ASSERT_TRUE(exports.ok()) << exports.error().describe();
  ASSERT_EQ(exports->size(), 2u);
  EXPECT_EQ((*exports)[0].describe(), "add(i32, i32) -> i32");
  EXPECT_EQ((*exports)[1].name, "nothing");
  EXPECT_TRUE((*exports)[1].params.empty());
}

TEST(GuestProtocol, ExportTableShorterThanItsHeaderIsRefused) {
  auto exports = parseExportTable(std::vector<uint8_t>(7));
  ASSERT_FALSE(exports.ok());
  expectError(exports.error(), ErrorKind::kInvalidGuest, "shorter than its header");
}

TEST(GuestProtocol, ExportTableWithBadMagicIsRefused) {
  auto table = bytesOf(sandpool_export_table_header{SANDPOOL_EXPORTS_MAGIC + 1, 0});
  auto exports = parseExportTable(table);
  ASSERT_FALSE(exports.ok());
  expectError(exports.error(), ErrorKind::kInvalidGuest, "bad magic");
}

TEST(GuestProtocol, ExportTableOverTheExportLimitIsRefused) {
  auto exports = parseExportTable(exportTable(SANDPOOL_MAX_EXPORTS + 1));
  ASSERT_FALSE(exports.ok());
  expectError(exports.error(), ErrorKind::kInvalidGuest, "257 exports, over the limit of 256");
}

TEST(GuestProtocol, TruncatedExportIsRefused) {
  std::vector<uint8_t> entries;
  appendExport(entries, SANDPOOL_TYPE_I32, {SANDPOOL_TYPE_I32}, "square");
  auto table = exportTable(1, entries);
  table.pop_back();
  auto exports = parseExportTable(table);
  ASSERT_FALSE(exports.ok());
  expectError(exports.error(), ErrorKind::kInvalidGuest, "export 0 truncated");
}

TEST(GuestProtocol, VoidParameterIsRefused) {
  std::vector<uint8_t> entries;
  appendExport(entries, SANDPOOL_TYPE_I32, {SANDPOOL_TYPE_VOID}, "f");
  auto table = exportTable(1, entries);
  auto exports = parseExportTable(table);
  ASSERT_FALSE(exports.ok());
  expectError(exports.error(), ErrorKind::kInvalidGuest, "export 0 has parameter type tag");
}

TEST(GuestProtocol, UnknownResultTypeIsRefused) {
  std::vector<uint8_t> entries;
  appendExport(entries, SANDPOOL_TYPE_LAST + 1, {}, "f");
  auto table = exportTable(1, entries);
  auto exports = parseExportTable(table);
  ASSERT_FALSE(exports.ok());
  expectError(exports.error(), ErrorKind::kInvalidGuest, "export 0 has result type tag");
}

TEST(GuestProtocol, EmptyAndOverlongNamesAreRefused) {
  for (const std::string& name : {std::string(), std::string(SANDPOOL_MAX_NAME + 1, 'x')}) {
    std::vector<uint8_t> entries;
    appendExport(entries, SANDPOOL_TYPE_VOID, {}, name);
    auto exports = parseExportTable(exportTable(1, entries));
    ASSERT_FALSE(exports.ok()) << name.size();
    expectError(exports.error(), ErrorKind::kInvalidGuest, "bad name length");
  }
}

TEST(GuestProtocol, DuplicateExportIsRefused) {
  std::vector<uint8_t> entries;
  appendExport(entries, SANDPOOL_TYPE_VOID, {}, "f");
  appendExport(entries, SANDPOOL_TYPE_I32, {}, "f");
  auto table = exportTable(2, entries);
  auto exports = parseExportTable(table);
  ASSERT_FALSE(exports.ok());
  expectError(exports.error(), ErrorKind::kInvalidGuest, "function 'f' exported twice");
}

TEST(GuestProtocol, ArgumentsMustMatchTheSignature) {
  FunctionSignature add{"add", {ValueType::kI32, ValueType::kI32}, ValueType::kI32};
  EXPECT_TRUE(checkArguments(add, {int32_t{1}, int32_t{2}}).ok());
  auto wrong = checkArguments(add, {int32_t{1}, std::string("2")});
  ASSERT_FALSE(wrong.ok());
  expectError(wrong.error(), ErrorKind::kBadArguments,
              "'add' expects add(i32, i32) -> i32, got (i32, string)");
  EXPECT_FALSE(checkArguments(add, {int32_t{1}}).ok());
}

TEST(GuestProtocol, CallRequestIsAHeaderAndTheEncodedArguments) {
  const std::vector<Value> args = {int32_t{7}, std::string("hi")};
  // A vector left over from a larger request is overwritten, not appended to.
  std::vector<uint8_t> message(3 * kPageSize, 0xee);
  auto encoded = encodeCallRequest(3, args, kEntropy, kPageSize, message);
  ASSERT_TRUE(encoded.ok()) << encoded.error().describe();
  sandpool_call_header header;
  ASSERT_GE(message.size(), sizeof header);
  std::memcpy(&header, message.data(), sizeof header);
  EXPECT_EQ(header.magic, SANDPOOL_CALL_MAGIC);
  EXPECT_EQ(header.function_index, 3u);
  EXPECT_EQ(header.arg_count, 2u);
  EXPECT_EQ(header.args_size, message.size() - sizeof header);
  EXPECT_EQ(0, std::memcmp(header.entropy, kEntropy.data(), kEntropyBytes));
  std::span<const uint8_t> arguments = std::span<const uint8_t>(message).subspan(sizeof header);
  for (const Value& expected : args) {
    auto decoded = decodeValue(arguments);
    ASSERT_TRUE(decoded.ok());
    EXPECT_EQ(*decoded, expected);
  }
  EXPECT_TRUE(arguments.empty());
}

TEST(GuestProtocol, CallRequestLargerThanTheInputBufferIsRefused) {
  std::vector<uint8_t> message;
  auto encoded = encodeCallRequest(0, {std::string(100, 'x')}, kEntropy, 64, message);
  ASSERT_FALSE(encoded.ok());
  expectError(encoded.error(), ErrorKind::kLimitExceeded, "the input buffer holds 64");
}

// The output buffer as a guest leaves it: a result header and a payload.
std::vector<uint8_t> outputBuffer(uint32_t magic, uint32_t status, std::vector<uint8_t> payload,
                                  size_t buffer_size = 256) {
  return bytesOf(sandpool_result_header{magic, status, static_cast<uint32_t>(payload.size()), 0},
                 payload, buffer_size);
}

std::vector<uint8_t> encoded(const Value& value) {
  std::vector<uint8_t> out;
  encodeValue(value, out);
  return out;
}

const FunctionSignature kSquare{"square", {ValueType::kI32}, ValueType::kI32};

TEST(GuestProtocol, ResultOfTheDeclaredTypeIsDecoded) {
  auto value = decodeResult(
      outputBuffer(SANDPOOL_RESULT_MAGIC, SANDPOOL_STATUS_OK, encoded(int32_t{49})), kSquare);
  ASSERT_TRUE(value.ok()) << value.error().describe();
  EXPECT_EQ(*value, Value(int32_t{49}));
}

TEST(GuestProtocol, ErrorResultIsTheGuestsAbortWithItsMessage) {
  const std::string text = "negative input";
  auto value = decodeResult(outputBuffer(SANDPOOL_RESULT_MAGIC, SANDPOOL_STATUS_ERROR,
                                         std::vector<uint8_t>(text.begin(), text.end())),
                            kSquare);
  ASSERT_FALSE(value.ok());
  expectError(value.error(), ErrorKind::kGuestAbort,
              "guest function 'square' failed: negative input");
}

TEST(GuestProtocol, MalformedResultHeadersAreGuestFaults) {
  auto bad_magic = decodeResult(outputBuffer(0, SANDPOOL_STATUS_OK, encoded(int32_t{1})), kSquare);
  ASSERT_FALSE(bad_magic.ok());
  expectError(bad_magic.error(), ErrorKind::kGuestFault, "malformed result header");

  auto past_buffer =
      outputBuffer(SANDPOOL_RESULT_MAGIC, SANDPOOL_STATUS_OK, encoded(int32_t{1}), 0);
  past_buffer.pop_back();
  auto overlong = decodeResult(past_buffer, kSquare);
  ASSERT_FALSE(overlong.ok());
  expectError(overlong.error(), ErrorKind::kGuestFault, "malformed result header (size 5)");

  auto shorter = decodeResult(std::vector<uint8_t>(sizeof(sandpool_result_header) - 1), kSquare);
  ASSERT_FALSE(shorter.ok());
  expectError(shorter.error(), ErrorKind::kGuestFault, "malformed result header");
}

TEST(GuestProtocol, ResultOfAnotherTypeIsAGuestFault) {
  auto value = decodeResult(
      outputBuffer(SANDPOOL_RESULT_MAGIC, SANDPOOL_STATUS_OK, encoded(int64_t{1})), kSquare);
  ASSERT_FALSE(value.ok());
  expectError(value.error(), ErrorKind::kGuestFault,
              "guest returned i64 from 'square', declared i32");
}

// The host-call buffer as a guest leaves it.
std::vector<uint8_t> hostCallBuffer(const std::string& name, const std::vector<Value>& args,
                                    size_t extra_bytes = 0, size_t buffer_size = 512) {
  std::vector<uint8_t> encoded_args;
  for (const Value& arg : args) encodeValue(arg, encoded_args);
  encoded_args.resize(encoded_args.size() + extra_bytes);
  std::vector<uint8_t> body(name.begin(), name.end());
  body.insert(body.end(), encoded_args.begin(), encoded_args.end());
  return bytesOf(
      sandpool_host_call_header{SANDPOOL_HOST_CALL_MAGIC, static_cast<uint32_t>(name.size()),
                                static_cast<uint32_t>(args.size()),
                                static_cast<uint32_t>(encoded_args.size())},
      body, buffer_size);
}

TEST(GuestProtocol, HostCallIsDecodedToItsNameAndArguments) {
  auto call = decodeHostCall(hostCallBuffer("lookup", {std::string("key"), uint64_t{9}}));
  ASSERT_TRUE(call.ok()) << call.error().describe();
  EXPECT_EQ(call->name, "lookup");
  ASSERT_EQ(call->args.size(), 2u);
  EXPECT_EQ(call->args[0], Value(std::string("key")));
  EXPECT_EQ(call->args[1], Value(uint64_t{9}));
}

TEST(GuestProtocol, HostCallWithBadMagicIsRefused) {
  auto buffer = hostCallBuffer("f", {});
  buffer[0] ^= 0xff;
  auto call = decodeHostCall(buffer);
  ASSERT_FALSE(call.ok());
  expectError(call.error(), ErrorKind::kBadHostCall, "bad magic");
}

TEST(GuestProtocol, HostCallPastItsBufferIsRefused) {
  auto buffer = hostCallBuffer("f", {std::string(100, 'x')}, 0, 0);
  buffer.resize(buffer.size() - 1);
  auto call = decodeHostCall(buffer);
  ASSERT_FALSE(call.ok());
  expectError(call.error(), ErrorKind::kBadHostCall, "host call header out of bounds");

  auto shorter = decodeHostCall(std::vector<uint8_t>(sizeof(sandpool_host_call_header) - 1));
  ASSERT_FALSE(shorter.ok());
  expectError(shorter.error(), ErrorKind::kBadHostCall, "shorter than its header");
}

TEST(GuestProtocol, HostCallWithBytesAfterItsArgumentsIsRefused) {
  auto call = decodeHostCall(hostCallBuffer("f", {int32_t{1}}, 3));
  ASSERT_FALSE(call.ok());
  expectError(call.error(), ErrorKind::kBadHostCall,
              "host call 'f' has 3 bytes after its arguments");
}

TEST(GuestProtocol, HostCallWithAnUndecodableArgumentIsRefused) {
  auto buffer = hostCallBuffer("f", {int32_t{1}});
  buffer[sizeof(sandpool_host_call_header) + 1] =
      SANDPOOL_TYPE_LAST + 1;  // the argument's type tag
  auto call = decodeHostCall(buffer);
  ASSERT_FALSE(call.ok());
  expectError(call.error(), ErrorKind::kBadHostCall, "host call 'f' argument 0");
}

sandpool_result_header replyHeader(const std::vector<uint8_t>& reply) {
  sandpool_result_header header;
  EXPECT_GE(reply.size(), sizeof header);
  std::memcpy(&header, reply.data(), sizeof header);
  return header;
}

TEST(GuestProtocol, HostReplyCarriesTheValue) {
  auto reply = encodeHostReply(Value(std::string("ok")), kPageSize);
  auto header = replyHeader(reply);
  EXPECT_EQ(header.magic, SANDPOOL_RESULT_MAGIC);
  EXPECT_EQ(header.status, SANDPOOL_STATUS_OK);
  ASSERT_EQ(header.size, reply.size() - sizeof header);
  std::span<const uint8_t> payload = std::span<const uint8_t>(reply).subspan(sizeof header);
  auto value = decodeValue(payload);
  ASSERT_TRUE(value.ok());
  EXPECT_EQ(*value, Value(std::string("ok")));
}

TEST(GuestProtocol, HostReplyCarriesTheErrorMessage) {
  auto reply = encodeHostReply(makeError(ErrorKind::kBadHostCall, "no such function"), kPageSize);
  auto header = replyHeader(reply);
  EXPECT_EQ(header.status, SANDPOOL_STATUS_ERROR);
  EXPECT_EQ(std::string(reply.begin() + sizeof header, reply.end()), "no such function");
}

TEST(GuestProtocol, HostReplyTooLargeForTheBufferBecomesAnError) {
  auto reply = encodeHostReply(Value(std::string(200, 'x')), 128);
  auto header = replyHeader(reply);
  EXPECT_EQ(header.status, SANDPOOL_STATUS_ERROR);
  EXPECT_LE(reply.size(), 128u);
  EXPECT_EQ(std::string(reply.begin() + sizeof header, reply.end()),
            "host reply does not fit the host-call buffer");
}

TEST(GuestProtocol, AbortCodesPickTheErrorKind) {
  expectError(abortError(SANDPOOL_ABORT_OUT_OF_MEMORY, "heap"), ErrorKind::kOutOfMemory,
              "guest ran out of memory: heap");
  expectError(abortError(SANDPOOL_ABORT_BAD_REQUEST, "header"), ErrorKind::kInternal,
              "guest refused the call request: header");
  expectError(abortError(SANDPOOL_ABORT_EXPLICIT, "bye"), ErrorKind::kGuestAbort,
              "guest aborted: bye");
}

}  // namespace
}  // namespace sandpool::vm
