#include "server/metrics_server.h"

#include <mutex>
#include <utility>

#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <fmt/format.h>
#include <spdlog/spdlog.h>

namespace sandpool::server {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;

// What a scrape's message needs on the KJ thread. `io` is cleared when the
// server stops, so that a message delivered afterwards does nothing.
struct MetricsServer::Channel {
  Channel(asio::io_context* io_context, Gather gather_on_kj)
      : io(io_context), gather(std::move(gather_on_kj)) {}

  std::mutex mutex;
  asio::io_context* io;
  const Gather gather;  // the KJ thread's
};

namespace {

http::response<http::string_body> textResponse(
    http::status status, unsigned version, bool keep_alive, std::string body,
    const char* content_type = "text/plain; charset=utf-8") {
  http::response<http::string_body> response(status, version);
  response.set(http::field::content_type, content_type);
  response.keep_alive(keep_alive);
  response.body() = std::move(body);
  response.prepare_payload();
  return response;
}

}  // namespace

// One HTTP connection: reads a request, answers it, and reads the next
// while the client keeps the connection alive. Lives on the Asio thread.
class MetricsServer::Session : public std::enable_shared_from_this<Session> {
 public:
  Session(tcp::socket socket, MetricsServer& server)
      : server_(server), stream_(std::move(socket)), gather_timer_(server.io_) {
    ++server_.sessions_;
  }
  ~Session() { --server_.sessions_; }

  void read() {
    parser_.emplace();
    parser_->header_limit(kMaxHeaderBytes);
    parser_->body_limit(kMaxBodyBytes);
    stream_.expires_after(kTimeout);
    http::async_read(stream_, buffer_, *parser_,
                     [self = shared_from_this()](beast::error_code error, size_t) {
                       if (!error) self->answer();
                       // Anything else (closed, timed out, too large,
                       // malformed): the connection ends.
                     });
  }

  // The scrape's snapshot, back from the KJ thread.
  void answerMetrics(MetricsSnapshot snapshot) {
    if (!awaiting_snapshot_) return;  // answered 503 at the timeout
    awaiting_snapshot_ = false;
    gather_timer_.cancel();
    auto& request = parser_->get();
    write(textResponse(http::status::ok, request.version(), request.keep_alive(),
                       renderMetrics(snapshot, residentMemoryBytes()),
                       "text/plain; version=0.0.4; charset=utf-8"));
  }

 private:
  void answer() {
    const auto& request = parser_->get();
    const unsigned version = request.version();
    const bool keep_alive = request.keep_alive();
    std::string_view target(request.target().data(), request.target().size());
    target = target.substr(0, target.find('?'));
    if (target != "/metrics" && target != "/healthz" && target != "/readyz") {
      write(textResponse(http::status::not_found, version, keep_alive, "not found\n"));
      return;
    }
    if (request.method() != http::verb::get) {
      auto response =
          textResponse(http::status::method_not_allowed, version, keep_alive, "GET only\n");
      response.set(http::field::allow, "GET");
      write(std::move(response));
      return;
    }
    if (target == "/healthz") {
      write(textResponse(http::status::ok, version, keep_alive, "alive\n"));
      return;
    }
    if (target == "/readyz") {
      switch (server_.readiness_.load()) {
        case Readiness::kReady:
          write(textResponse(http::status::ok, version, keep_alive, "ready\n"));
          return;
        case Readiness::kStarting:
          write(textResponse(http::status::service_unavailable, version, keep_alive, "starting\n"));
          return;
        case Readiness::kDraining:
          write(textResponse(http::status::service_unavailable, version, keep_alive, "draining\n"));
          return;
      }
    }
    requestSnapshot();
  }

  // Asks the KJ thread for a snapshot; answers 503 if none comes within
  // the timeout (the KJ thread is busy starting: loading stored guests).
  void requestSnapshot() {
    struct Scrape final : KjMailbox::Message {
      std::shared_ptr<Channel> channel;
      std::weak_ptr<Session> session;
      ~Scrape() noexcept override {}
      void deliver() override {
        {
          std::lock_guard lock(channel->mutex);
          if (channel->io == nullptr) return;
        }
        MetricsSnapshot snapshot = channel->gather();
        std::lock_guard lock(channel->mutex);
        if (channel->io == nullptr) return;
        asio::post(*channel->io,
                   [session = std::move(session), snapshot = std::move(snapshot)]() mutable {
                     if (auto alive = session.lock()) alive->answerMetrics(std::move(snapshot));
                   });
      }
    };
    auto* scrape = new Scrape;
    scrape->channel = server_.channel_;
    scrape->session = weak_from_this();
    server_.mailbox_.post(scrape);
    awaiting_snapshot_ = true;
    // The timer's handler holds the session until the snapshot or the
    // timeout.
    gather_timer_.expires_after(kTimeout);
    gather_timer_.async_wait([self = shared_from_this()](beast::error_code error) {
      if (error || !self->awaiting_snapshot_) return;  // the snapshot came
      self->awaiting_snapshot_ = false;
      const auto& request = self->parser_->get();
      self->write(textResponse(http::status::service_unavailable, request.version(), false,
                               "metrics not gathered in time\n"));
    });
  }

  void write(http::response<http::string_body> response) {
    auto shared = std::make_shared<http::response<http::string_body>>(std::move(response));
    stream_.expires_after(kTimeout);
    http::async_write(stream_, *shared,
                      [self = shared_from_this(), shared](beast::error_code error, size_t) {
                        if (error || !shared->keep_alive()) {
                          beast::error_code ignored;
                          self->stream_.socket().shutdown(tcp::socket::shutdown_send, ignored);
                          return;
                        }
                        self->read();
                      });
  }

  MetricsServer& server_;
  beast::tcp_stream stream_;
  beast::flat_buffer buffer_{kMaxHeaderBytes + kMaxBodyBytes};
  std::optional<http::request_parser<http::string_body>> parser_;
  asio::steady_timer gather_timer_;
  bool awaiting_snapshot_ = false;  // a scrape's message is out to the KJ thread
};

MetricsServer::MetricsServer(KjMailbox& mailbox, Gather gather)
    : mailbox_(mailbox),
      channel_(std::make_shared<Channel>(&io_, std::move(gather))),
      acceptor_(io_) {}

MetricsServer::~MetricsServer() {
  {
    std::lock_guard lock(channel_->mutex);
    channel_->io = nullptr;
  }
  io_.stop();
  if (thread_.joinable()) thread_.join();
}

vm::Expected<std::string> MetricsServer::listen(const std::string& address) {
  const size_t colon = address.rfind(':');
  if (colon == std::string::npos)
    return vm::makeError(vm::ErrorKind::kInternal, "--listen-metrics takes HOST:PORT");
  std::string host = address.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']')
    host = host.substr(1, host.size() - 2);
  beast::error_code error;
  tcp::resolver resolver(io_);
  auto endpoints =
      resolver.resolve(host, address.substr(colon + 1), tcp::resolver::numeric_service, error);
  if (error || endpoints.empty())
    return vm::makeError(vm::ErrorKind::kInternal,
                         fmt::format("cannot resolve {}: {}", address, error.message()));
  const tcp::endpoint endpoint = endpoints.begin()->endpoint();
  if (acceptor_.open(endpoint.protocol(), error) ||
      acceptor_.set_option(asio::socket_base::reuse_address(true), error) ||
      acceptor_.bind(endpoint, error) ||
      acceptor_.listen(asio::socket_base::max_listen_connections, error)) {
    return vm::makeError(vm::ErrorKind::kInternal,
                         fmt::format("cannot listen on {}: {}", address, error.message()));
  }
  const tcp::endpoint bound = acceptor_.local_endpoint();
  accept();
  thread_ = std::thread([this] { io_.run(); });
  const std::string ip = bound.address().to_string();
  return (bound.address().is_v6() ? "[" + ip + "]" : ip) + ":" + std::to_string(bound.port());
}

void MetricsServer::accept() {
  acceptor_.async_accept([this](beast::error_code error, tcp::socket socket) {
    if (error == asio::error::operation_aborted) return;
    if (!error) {
      if (sessions_ >= kMaxConnections) {
        // Over the bound the connection is closed unanswered.
        spdlog::debug("event=metrics_connection_refused reason=too_many_connections");
      } else {
        std::make_shared<Session>(std::move(socket), *this)->read();
      }
    }
    accept();
  });
}

}  // namespace sandpool::server
