// Copyright sessiond authors. Licensed under the Apache License 2.0.
#include "server/http_endpoint.h"

#include <httplib.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <pthread.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <deque>
#include <utility>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/log.h"
#include "common/read_file.h"
#include "server/connection_limits.h"
#include "server/tls_credentials.h"

namespace sessiond::server {
namespace {

// The connection the calling worker serves (ConnectionLimits::Begun::id):
// httplib's handlers are given no connection, and RequestRead needs it.
thread_local uint64_t t_connection = 0;

// Serves accepted connections on `workers` threads of its own, so a client
// that stalls holds one worker, not the endpoint; at most `max_waiting`
// wait for a worker. httplib calls enqueue on the accepting thread just
// after each accept, where ConnectionLimits finds the socket. A connection
// refused there (the line full, or its client over its share while every
// worker is busy) is served at once on the accepting thread: it was shut
// down, so that ends at its first read. (One ConnectionLimits did not find
// is never refused.)
class WorkerPool : public httplib::TaskQueue {
 public:
  WorkerPool(ConnectionLimits* limits, int workers, size_t max_waiting,
             const std::string& thread_name)
      : limits_(limits), max_waiting_(max_waiting) {
    for (int i = 0; i < workers; ++i) {
      threads_.emplace_back([this, thread_name] {
        pthread_setname_np(pthread_self(), thread_name.c_str());
        Work();
      });
    }
    // Every worker waiting before the first accept: `idle_` is what
    // enqueue judges by.
    absl::MutexLock lock(&mu_);
    mu_.Await(absl::Condition(this, &WorkerPool::AllIdleOrStopping));
  }
  ~WorkerPool() override { shutdown(); }

  void enqueue(std::function<void()> fn) override {
    bool room = false;
    bool worker_free = false;
    {
      absl::MutexLock lock(&mu_);
      room = !stopping_ && waiting_.size() < max_waiting_;
      // Another worker stays free after this connection takes one: a
      // client over its share may have a worker only while it cannot have
      // them all.
      worker_free = idle_ > waiting_.size() + 1;
    }
    const ConnectionLimits::Begun begun = limits_->Begin(room, worker_free);
    if (begun.admitted) {
      absl::MutexLock lock(&mu_);
      waiting_.push_back({begun.id, std::move(fn)});
      return;
    }
    t_connection = begun.id;
    fn();  // shut down: ends at once, and closes it
    limits_->End(begun.id);
  }

  // The accept loop ended: every connection waiting is served (the
  // endpoint cut them, so each ends at once), then the workers end.
  void shutdown() override {
    {
      absl::MutexLock lock(&mu_);
      stopping_ = true;
    }
    for (std::thread& thread : threads_) {
      if (thread.joinable()) thread.join();
    }
  }

 private:
  struct Waiting {
    uint64_t id;
    std::function<void()> fn;
  };

  void Work() {
    while (true) {
      Waiting next;
      {
        absl::MutexLock lock(&mu_);
        ++idle_;
        mu_.Await(absl::Condition(this, &WorkerPool::StoppingOrWaiting));
        --idle_;
        if (waiting_.empty()) return;  // stopping, nothing left
        next = std::move(waiting_.front());
        waiting_.pop_front();
      }
      limits_->Started(next.id);
      t_connection = next.id;
      next.fn();  // serves the connection, and closes it
      limits_->End(next.id);
      t_connection = 0;
    }
  }

  bool StoppingOrWaiting() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return stopping_ || !waiting_.empty();
  }
  bool AllIdleOrStopping() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return stopping_ || idle_ >= threads_.size();
  }

  ConnectionLimits* const limits_;
  const size_t max_waiting_;
  absl::Mutex mu_;
  std::deque<Waiting> waiting_ ABSL_GUARDED_BY(mu_);
  size_t idle_ ABSL_GUARDED_BY(mu_) = 0;  // workers waiting for one
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::thread> threads_;
};

struct BioFree {
  void operator()(BIO* bio) const { BIO_free(bio); }
};
struct X509Free {
  void operator()(X509* cert) const { X509_free(cert); }
};
struct ChainFree {
  void operator()(STACK_OF(X509) * chain) const {
    sk_X509_pop_free(chain, X509_free);
  }
};
struct PkeyFree {
  void operator()(EVP_PKEY* key) const { EVP_PKEY_free(key); }
};
struct StoreFree {
  void operator()(X509_STORE* store) const { X509_STORE_free(store); }
};

// The first error OpenSSL queued (the cause; the rest say where it
// surfaced), and an empty queue for the next caller.
std::string OpenSslError() {
  const unsigned long code = ERR_peek_error();
  ERR_clear_error();
  if (code == 0) return "no further detail from OpenSSL";
  char text[256];
  ERR_error_string_n(code, text, sizeof text);
  return text;
}

absl::StatusOr<std::string> ReadWhole(const std::string& path) {
  absl::StatusOr<std::string> text = ReadWholeFile(path);
  if (!text.ok()) return absl::InvalidArgumentError(text.status().message());
  return text;
}

std::unique_ptr<BIO, BioFree> MemoryBio(const std::string& text) {
  return std::unique_ptr<BIO, BioFree>(
      BIO_new_mem_buf(text.data(), static_cast<int>(text.size())));
}

// Never asks for a pass phrase (OpenSSL's default would read the terminal):
// an encrypted key fails to load.
int NoPassphrase(char*, int, int, void*) { return 0; }

// Hands every PEM certificate from `bio`'s position on to `take` (which owns
// it), stopping at the first error `take` returns.
template <typename Take>
absl::Status EachCertificate(BIO* bio, Take take) {
  while (X509* cert = PEM_read_bio_X509(bio, nullptr, &NoPassphrase, nullptr)) {
    absl::Status taken = take(cert);
    if (!taken.ok()) return taken;
  }
  ERR_clear_error();  // the end of the file
  return absl::OkStatus();
}

}  // namespace

// One loaded set of files: what a handshake installs. Immutable.
struct HttpTlsMaterial {
  std::unique_ptr<X509, X509Free> leaf;
  std::unique_ptr<STACK_OF(X509), ChainFree> chain;  // after the leaf
  std::unique_ptr<EVP_PKEY, PkeyFree> key;
  std::unique_ptr<X509_STORE, StoreFree> client_cas;  // null: not verifying
  std::string serial;                                 // the leaf's, hex
};

// The certificate and key an HTTPS endpoint presents, and the CA bundle it
// verifies client certificates against, re-read as HttpTlsOptions says.
// OpenSSL calls Install() for every handshake, from SSL_CTX_set_cert_cb.
//
// Thread-safe: the endpoint's workers shake hands at once. The material a
// handshake installed stays alive
// with that connection's SSL (OpenSSL holds references), so a reload never
// frees what an open connection uses.
class HttpTlsIdentity {
 public:
  // Loads the files once. InvalidArgument naming the file that failed.
  static absl::StatusOr<std::unique_ptr<HttpTlsIdentity>> Load(
      HttpTlsOptions options, absl::string_view what) {
    std::unique_ptr<HttpTlsIdentity> identity(
        new HttpTlsIdentity(std::move(options), what));
    const std::string stamp = identity->Stamp();
    absl::StatusOr<std::shared_ptr<const HttpTlsMaterial>> material =
        LoadMaterial(identity->options_);
    if (!material.ok()) return material.status();
    absl::MutexLock lock(&identity->mu_);
    identity->current_ = *std::move(material);
    identity->loaded_stamp_ = stamp;
    identity->next_check_ = std::chrono::steady_clock::now() +
                            std::chrono::seconds(identity->options_.refresh_s);
    return identity;
  }

  // The SSL_CTX settings: httplib::SSLServer's setup callback. `this` must
  // outlive `ctx`.
  bool SetUp(SSL_CTX& ctx) {
    SSL_CTX_set_min_proto_version(&ctx, TLS1_2_VERSION);
    // No session resumption (no cache, no tickets): a resumed session
    // skips the certificate, so a client would keep being shown (and a
    // client certificate be trusted on) what an earlier handshake saw. A
    // scrape every few seconds does not need the saving.
    SSL_CTX_set_options(&ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_TICKET |
                                  SSL_OP_NO_RENEGOTIATION |
                                  SSL_OP_CIPHER_SERVER_PREFERENCE);
    SSL_CTX_set_session_cache_mode(&ctx, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_num_tickets(&ctx, 0);
    SSL_CTX_set_cert_cb(&ctx, &HttpTlsIdentity::CertCallback, this);
    SSL_CTX_set_verify(&ctx,
                       options_.require_client_cert
                           ? SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT
                           : SSL_VERIFY_NONE,
                       nullptr);
    return true;
  }

  bool require_client_cert() const { return options_.require_client_cert; }

 private:
  HttpTlsIdentity(HttpTlsOptions options, absl::string_view what)
      : options_(std::move(options)), what_(what) {}

  static int CertCallback(SSL* ssl, void* self) {
    return static_cast<HttpTlsIdentity*>(self)->Install(ssl);
  }

  // Puts the current pair (and CA bundle) on `ssl`, after a look at the
  // files if one is due. 1 on success, 0 fails the handshake.
  int Install(SSL* ssl) ABSL_LOCKS_EXCLUDED(mu_) {
    std::shared_ptr<const HttpTlsMaterial> material;
    {
      absl::MutexLock lock(&mu_);
      MaybeReload();
      material = current_;
    }
    if (SSL_use_cert_and_key(ssl, material->leaf.get(), material->key.get(),
                             material->chain.get(), /*override=*/1) != 1) {
      ERR_clear_error();
      return 0;
    }
    if (material->client_cas != nullptr &&
        SSL_set1_verify_cert_store(ssl, material->client_cas.get()) != 1) {
      ERR_clear_error();
      return 0;
    }
    return 1;
  }

  std::string Stamp() const {
    std::string stamp = absl::StrCat(FileStamp(options_.cert_file), "|",
                                     FileStamp(options_.key_file));
    if (options_.require_client_cert) {
      absl::StrAppend(&stamp, "|", FileStamp(options_.ca_file));
    }
    return stamp;
  }

  void MaybeReload() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    const auto now = std::chrono::steady_clock::now();
    if (now < next_check_) return;
    next_check_ = now + std::chrono::seconds(options_.refresh_s);
    // Stamped before reading: a file replaced while it is read shows as a
    // change at the next look, which reads it again.
    const std::string stamp = Stamp();
    if (stamp == loaded_stamp_ || stamp == failed_stamp_) return;
    absl::StatusOr<std::shared_ptr<const HttpTlsMaterial>> material =
        LoadMaterial(options_);
    if (!material.ok()) {
      failed_stamp_ = stamp;  // one warning per change of the files
      logging::Warn("http.tls_reload_failed",
                    logging::Fields()
                        .Add("endpoint", what_)
                        .Error(material.status())
                        .Add("serial", current_->serial)
                        .Add("msg",
                             "the TLS files changed but do not load: new "
                             "connections keep the certificate loaded "
                             "before"));
      return;
    }
    current_ = *std::move(material);
    loaded_stamp_ = stamp;
    failed_stamp_.clear();
    logging::Info("http.tls_reloaded", logging::Fields()
                                           .Add("endpoint", what_)
                                           .Add("serial", current_->serial)
                                           .Add("msg",
                                                "new connections get the "
                                                "renewed certificate"));
  }

  static absl::StatusOr<std::shared_ptr<const HttpTlsMaterial>> LoadMaterial(
      const HttpTlsOptions& options) {
    // What the gRPC listeners' files get at start (a certificate of
    // another CA or one that expired): served, every client's handshake
    // would fail until the files were mended, so the last good pair stays.
    if (!options.ca_file.empty()) {
      TlsFiles files;
      files.cert_file = options.cert_file;
      files.key_file = options.key_file;
      files.ca_file = options.ca_file;
      if (absl::Status checked = CheckTlsFiles(files, /*need_identity=*/true);
          !checked.ok()) {
        return checked;
      }
    }
    auto material = std::make_shared<HttpTlsMaterial>();
    absl::StatusOr<std::string> pem = ReadWhole(options.cert_file);
    if (!pem.ok()) return pem.status();
    {
      std::unique_ptr<BIO, BioFree> bio = MemoryBio(*pem);
      material->leaf.reset(
          PEM_read_bio_X509(bio.get(), nullptr, &NoPassphrase, nullptr));
      if (material->leaf == nullptr) {
        return absl::InvalidArgumentError(absl::StrCat(
            options.cert_file, ": no PEM certificate (", OpenSslError(), ")"));
      }
      material->chain.reset(sk_X509_new_null());
      absl::Status chain = EachCertificate(bio.get(), [&](X509* next) {
        sk_X509_push(material->chain.get(), next);
        return absl::OkStatus();
      });
      if (!chain.ok()) return chain;
    }
    // One file holding both (VerifiedTlsFiles' identity.pem) is read once:
    // a rename between two reads would pair a key with another certificate.
    absl::StatusOr<std::string> key_pem = options.key_file == options.cert_file
                                              ? pem
                                              : ReadWhole(options.key_file);
    if (!key_pem.ok()) return key_pem.status();
    {
      std::unique_ptr<BIO, BioFree> bio = MemoryBio(*key_pem);
      material->key.reset(
          PEM_read_bio_PrivateKey(bio.get(), nullptr, &NoPassphrase, nullptr));
      if (material->key == nullptr) {
        return absl::InvalidArgumentError(
            absl::StrCat(options.key_file, ": no unencrypted PEM private key (",
                         OpenSslError(), ")"));
      }
    }
    if (X509_check_private_key(material->leaf.get(), material->key.get()) !=
        1) {
      ERR_clear_error();
      return absl::InvalidArgumentError(
          absl::StrCat(options.key_file, ": not the private key of ",
                       options.cert_file, "'s certificate"));
    }
    if (options.require_client_cert) {
      absl::StatusOr<std::string> ca_pem = ReadWhole(options.ca_file);
      if (!ca_pem.ok()) return ca_pem.status();
      material->client_cas.reset(X509_STORE_new());
      std::unique_ptr<BIO, BioFree> bio = MemoryBio(*ca_pem);
      int count = 0;
      absl::Status cas = EachCertificate(bio.get(), [&](X509* ca) {
        const int added = X509_STORE_add_cert(material->client_cas.get(), ca);
        X509_free(ca);
        if (added != 1) {
          return absl::InvalidArgumentError(
              absl::StrCat(options.ca_file, ": cannot use a certificate (",
                           OpenSslError(), ")"));
        }
        ++count;
        return absl::OkStatus();
      });
      if (!cas.ok()) return cas;
      if (count == 0) {
        return absl::InvalidArgumentError(
            absl::StrCat(options.ca_file, ": no PEM certificate"));
      }
    }
    absl::StatusOr<LeafCertificate> leaf = ReadLeafCertificate(*pem);
    material->serial = leaf.ok() ? leaf->serial : "?";
    return std::shared_ptr<const HttpTlsMaterial>(std::move(material));
  }

  const HttpTlsOptions options_;
  const std::string what_;
  absl::Mutex mu_;
  std::shared_ptr<const HttpTlsMaterial> current_ ABSL_GUARDED_BY(mu_);
  // The files current_ was read from, and the last ones that did not load
  // (and were warned about).
  std::string loaded_stamp_ ABSL_GUARDED_BY(mu_);
  std::string failed_stamp_ ABSL_GUARDED_BY(mu_);
  std::chrono::steady_clock::time_point next_check_ ABSL_GUARDED_BY(mu_);
};

HttpEndpoint::HttpEndpoint() = default;

HttpEndpoint::~HttpEndpoint() { Stop(); }

absl::StatusOr<std::unique_ptr<HttpEndpoint>> HttpEndpoint::Start(
    const std::string& listen, absl::string_view what, const char* thread_name,
    const std::optional<HttpTlsOptions>& tls,
    const std::function<void(httplib::Server&)>& routes) {
  const size_t colon = listen.rfind(':');
  int port = -1;
  if (colon == std::string::npos || colon == 0 ||
      !absl::SimpleAtoi(listen.substr(colon + 1), &port) || port < 0 ||
      port > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, " address \"", listen, "\" is not host:port"));
  }
  std::string host = listen.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  std::unique_ptr<HttpEndpoint> endpoint(new HttpEndpoint());
  if (tls.has_value()) {
    if (tls->refresh_s < 1) {
      return absl::InvalidArgumentError(
          absl::StrCat(what, " TLS: refresh_s must be at least 1"));
    }
    absl::StatusOr<std::unique_ptr<HttpTlsIdentity>> identity =
        HttpTlsIdentity::Load(*tls, what);
    if (!identity.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat(what, " TLS: ", identity.status().message()));
    }
    endpoint->tls_ = *std::move(identity);
    HttpTlsIdentity* tls_identity = endpoint->tls_.get();
    endpoint->http_ = std::make_unique<httplib::SSLServer>(
        [tls_identity](SSL_CTX& ctx) { return tls_identity->SetUp(ctx); });
    if (!endpoint->http_->is_valid()) {
      return absl::InternalError(absl::StrCat(
          what, " TLS: cannot make an OpenSSL context (", OpenSslError(), ")"));
    }
  } else {
    endpoint->http_ = std::make_unique<httplib::Server>();
  }
  httplib::Server& http = *endpoint->http_;
  http.set_keep_alive_max_count(1);
  // How long a connection may stay silent before its request: as long as
  // a read may.
  http.set_keep_alive_timeout(2);
  // Every endpoint here answers GET and HEAD only. Any other method is
  // refused (405) before routing, so before its body is read: httplib would
  // read a POST's body of any size into memory first (its default limit is
  // SIZE_MAX). No body is read at all.
  http.set_payload_max_length(0);
  HttpEndpoint* self = endpoint.get();
  // httplib calls its logger once a response is written.
  http.set_logger([self](const httplib::Request& /*request*/,
                         const httplib::Response& /*response*/) {
    self->deadline_->Answered(t_connection);
  });
  http.set_pre_routing_handler(
      [self](const httplib::Request& request, httplib::Response& response) {
        // Set before the thread that serves requests starts.
        self->deadline_->RequestRead(t_connection);
        if (request.has_header("Range")) {
          // httplib 0.11 would build each range asked for in memory before
          // writing any (a 8 KiB header asks for thousands of copies of the
          // body). No body: an empty one is never multiplied.
          response.status = 416;
          return httplib::Server::HandlerResponse::Handled;
        }
        if (request.method == "GET" || request.method == "HEAD") {
          return httplib::Server::HandlerResponse::Unhandled;
        }
        response.status = 405;
        response.set_header("Allow", "GET, HEAD");
        response.set_content("only GET and HEAD\n", "text/plain");
        return httplib::Server::HandlerResponse::Handled;
      });
  // httplib bounds the TLS handshake by the read timeout.
  http.set_read_timeout(2, 0);
  http.set_write_timeout(2, 0);
  // The listening socket, whose address ConnectionLimits looks for.
  auto listener_fd = std::make_shared<int>(-1);
  http.set_socket_options([listener_fd](socket_t sock) {
    int yes = 1;
    setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
    *listener_fd = sock;
  });
  routes(http);
  const int bound = port == 0 ? http.bind_to_any_port(host)
                              : (http.bind_to_port(host, port) ? port : -1);
  if (bound <= 0) {
    return absl::UnavailableError(absl::StrCat("cannot listen for ", what,
                                               " on ", listen,
                                               " (address in use or not "
                                               "local?)"));
  }
  // httplib listens with a backlog of 5: past it, a connection's SYN is
  // dropped and its client waits a second or more to try again, so a few
  // clients connecting and sending nothing delayed everyone. Linux takes a
  // second listen(2) as a new backlog.
  if (::listen(*listener_fd, kListenBacklog) != 0) {
    return absl::InternalError(absl::StrCat("cannot listen for ", what, " on ",
                                            listen, ": ",
                                            std::strerror(errno)));
  }
  sockaddr_storage listener{};
  socklen_t listener_len = sizeof(listener);
  if (getsockname(*listener_fd, reinterpret_cast<sockaddr*>(&listener),
                  &listener_len) != 0) {
    return absl::InternalError(
        absl::StrCat("cannot read the address ", what,
                     " listens on: ", std::strerror(errno)));
  }
  endpoint->deadline_ = std::make_unique<ConnectionLimits>(
      listener, kRequestLimit, kConnectionLimit, kMaxBytesReceived,
      kMaxConnectionsPerClient);
  ConnectionLimits* deadline = endpoint->deadline_.get();
  const std::string worker_name = absl::StrCat(thread_name, "-w");
  http.new_task_queue = [deadline, worker_name] {
    return new WorkerPool(deadline, kWorkers, kMaxWaiting, worker_name);
  };
  endpoint->address_ = absl::StrCat(listen.substr(0, colon), ":", bound);
  logging::Info("http.listening",
                logging::Fields()
                    .Add("endpoint", std::string(what))
                    .Add("address", endpoint->address_)
                    .Add("scheme", endpoint->tls() ? "https" : "http")
                    .Add("client_cert", !endpoint->tls() ? "none"
                                        : endpoint->tls_->require_client_cert()
                                            ? "required"
                                            : "not asked for"));
  auto done = std::make_shared<std::atomic<bool>>(false);
  const std::string name(thread_name);
  endpoint->thread_ = std::thread([self, done, name] {
    pthread_setname_np(pthread_self(), name.c_str());
    self->http_->listen_after_bind();
    done->store(true);
  });
  // httplib's stop() does nothing until the accept loop runs: wait for it,
  // so a Stop() right after Start() cannot miss it (bounded: 10 s).
  for (int i = 0; i < 10000 && !http.is_running() && !done->load(); ++i) {
    absl::SleepFor(absl::Milliseconds(1));
  }
  return endpoint;
}

uint64_t HttpEndpoint::connections_cut_for_slow_request() const {
  return deadline_ == nullptr ? 0 : deadline_->cut_for_slow_request();
}

uint64_t HttpEndpoint::connections_refused() const {
  return deadline_ == nullptr ? 0 : deadline_->refused();
}

void HttpEndpoint::Stop() {
  absl::MutexLock lock(&mu_);
  if (stopped_) return;
  stopped_ = true;
  if (http_ == nullptr) return;  // Start failed before making it
  // A connection in progress ends now, not at its own pace.
  if (deadline_ != nullptr) deadline_->CutNow();
  http_->stop();
  if (thread_.joinable()) thread_.join();
}

}  // namespace sessiond::server
