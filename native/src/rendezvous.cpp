// rendezvous.cpp: see rendezvous.h. Why it exists: c10d's TCPStore client bounds its connect by the store timeout but
// not its first reads (libtorch 1.13: waitForWorkers' ADD waits for an answer forever), so a program that holds the
// master port, accepts and never answers kept a rank waiting past --dist-timeout. The probe below talks the store's
// own wire protocol over a plain socket, with a deadline on every connect, send and read, before c10d is let near it.
#include "rendezvous.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>
#include <memory>
#include <set>
#include <sstream>
#include <stdexcept>
#include <thread>
#include <vector>

namespace dc::rendezvous {
namespace {

using Clock = std::chrono::steady_clock;
using Millis = std::chrono::milliseconds;

// c10d's detail::validationMagicNumber (TCPStoreBackend.hpp, libtorch 2.x).
constexpr uint32_t kValidationMagic = 0x3C85F7CE;
// A live store answers a CHECK at once; a peer silent this long is not one, whatever the job's timeout.
constexpr Millis kAnswerBound{60000};
constexpr Millis kRetryDelay{250};

class Socket {
 public:
  explicit Socket(int fd) : fd_(fd) {}
  ~Socket() {
    if (fd_ >= 0) ::close(fd_);
  }
  Socket(const Socket&) = delete;
  Socket& operator=(const Socket&) = delete;
  int get() const { return fd_; }
  int release() {
    const int fd = fd_;
    fd_ = -1;
    return fd;
  }

 private:
  int fd_;
};

struct FreeAddrInfo {
  void operator()(addrinfo* list) const {
    if (list != nullptr) ::freeaddrinfo(list);
  }
};
using AddrList = std::unique_ptr<addrinfo, FreeAddrInfo>;

AddrList resolve(const std::string& host, uint16_t port) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV;
  addrinfo* list = nullptr;
  const std::string service = std::to_string(port);
  const int status = ::getaddrinfo(host.c_str(), service.c_str(), &hints, &list);
  if (status != 0) {
    throw std::runtime_error("cannot resolve the master address '" + host + "': " + ::gai_strerror(status));
  }
  return AddrList(list);
}

std::string address_text(const sockaddr* address) {
  char text[INET6_ADDRSTRLEN] = "?";
  if (address->sa_family == AF_INET) {
    ::inet_ntop(AF_INET, &reinterpret_cast<const sockaddr_in*>(address)->sin_addr, text, sizeof(text));
  } else if (address->sa_family == AF_INET6) {
    ::inet_ntop(AF_INET6, &reinterpret_cast<const sockaddr_in6*>(address)->sin6_addr, text, sizeof(text));
  }
  return text;
}

int remaining_ms(Clock::time_point deadline) {
  const auto left = std::chrono::duration_cast<Millis>(deadline - Clock::now()).count();
  return static_cast<int>(std::clamp<int64_t>(left, 0, 1 << 30));
}

std::string seconds_text(Millis duration) {
  // Tenths of a second, as a person would say it: "3 s", "2.5 s".
  const int64_t tenths = (duration.count() + 50) / 100;
  return std::to_string(tenths / 10) + (tenths % 10 != 0 ? "." + std::to_string(tenths % 10) : "") + " s";
}

// Waits for `events` on fd until the deadline: true when ready, false when the deadline passed.
bool wait_for(int fd, short events, Clock::time_point deadline) {
  pollfd p{fd, events, 0};
  for (;;) {
    const int ready = ::poll(&p, 1, remaining_ms(deadline));
    if (ready > 0) return true;
    if (ready == 0) return false;
    if (errno != EINTR) throw std::runtime_error(std::string("poll: ") + std::strerror(errno));
  }
}

// One non-blocking connect to one address within the deadline: the socket, or -1 with errno set.
int connect_one(const addrinfo& address, Clock::time_point deadline) {
  Socket s(::socket(address.ai_family, address.ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, address.ai_protocol));
  if (s.get() < 0) return -1;
  if (::connect(s.get(), address.ai_addr, address.ai_addrlen) == 0) return s.release();
  if (errno != EINPROGRESS) return -1;
  if (!wait_for(s.get(), POLLOUT, deadline)) {
    errno = ETIMEDOUT;
    return -1;
  }
  int error = 0;
  socklen_t length = sizeof(error);
  if (::getsockopt(s.get(), SOL_SOCKET, SO_ERROR, &error, &length) != 0) return -1;
  if (error != 0) {
    errno = error;
    return -1;
  }
  return s.release();
}

void send_all(int fd, const std::vector<uint8_t>& bytes, Clock::time_point deadline, const std::string& peer) {
  size_t sent = 0;
  while (sent < bytes.size()) {
    const ssize_t n = ::send(fd, bytes.data() + sent, bytes.size() - sent, MSG_NOSIGNAL);
    if (n > 0) {
      sent += static_cast<size_t>(n);
    } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
      if (!wait_for(fd, POLLOUT, deadline)) {
        throw std::runtime_error(peer + " accepted the connection but takes no data (sending timed out)");
      }
    } else {
      throw std::runtime_error(peer + " accepted the connection, then failed it: " + std::strerror(errno));
    }
  }
}

// The bytes a peer sent, printable: "SSH-2.0-OpenSSH_9.2" or "\x00\x17...".
std::string printable(const uint8_t* bytes, size_t n) {
  std::string out;
  for (size_t i = 0; i < n; ++i) {
    const uint8_t c = bytes[i];
    if (c >= 0x20 && c < 0x7f && c != '\'') {
      out += static_cast<char>(c);
    } else {
      char hex[8];
      std::snprintf(hex, sizeof(hex), "\\x%02x", c);
      out += hex;
    }
  }
  return out;
}

void append_u64(std::vector<uint8_t>& out, uint64_t value) {
  const auto* bytes = reinterpret_cast<const uint8_t*>(&value);  // the store's wire format is the host's (x86: LE)
  out.insert(out.end(), bytes, bytes + sizeof(value));
}

// /proc/net/tcp{,6}: the inodes of sockets listening on `port`.
std::set<std::string> listening_inodes(uint16_t port) {
  std::set<std::string> inodes;
  for (const char* table : {"/proc/net/tcp", "/proc/net/tcp6"}) {
    std::ifstream in(table);
    std::string line;
    std::getline(in, line);  // header
    while (std::getline(in, line)) {
      std::istringstream fields(line);
      std::string slot, local, remote, state, queues, timer, retransmits, uid, timeout, inode;
      fields >> slot >> local >> remote >> state >> queues >> timer >> retransmits >> uid >> timeout >> inode;
      const auto colon = local.rfind(':');
      if (colon == std::string::npos || state != "0A") continue;  // 0A: TCP_LISTEN
      if (std::stoul(local.substr(colon + 1), nullptr, 16) == port && inode != "0") inodes.insert(inode);
    }
  }
  return inodes;
}

std::string command_line(const std::string& pid) {
  std::ifstream in("/proc/" + pid + "/cmdline", std::ios::binary);
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  while (!text.empty() && text.back() == '\0') text.pop_back();
  // One line, whatever the arguments held (a `python -c` script has newlines).
  for (char& c : text) {
    if (static_cast<unsigned char>(c) < 0x20) c = ' ';
  }
  if (text.size() > 100) text = text.substr(0, 97) + "...";
  if (text.empty()) {
    std::ifstream comm("/proc/" + pid + "/comm");
    std::getline(comm, text);
  }
  return text;
}

// "the program listening there (pid 1234: python3 -m http.server)" or "the program listening there".
std::string peer_name(const std::string& host, uint16_t port) {
  const std::string owner = is_local_address(host) ? listener_owner(port) : "";
  return "the program listening at " + host + ":" + std::to_string(port) + (owner.empty() ? "" : " (" + owner + ")");
}

}  // namespace

bool is_loopback_name(const std::string& host) {
  if (host == "localhost") return true;
  in_addr v4{};
  if (::inet_pton(AF_INET, host.c_str(), &v4) == 1) return (ntohl(v4.s_addr) >> 24) == 127;
  in6_addr v6{};
  if (::inet_pton(AF_INET6, host.c_str(), &v6) == 1) {
    if (IN6_IS_ADDR_LOOPBACK(&v6)) return true;
    return IN6_IS_ADDR_V4MAPPED(&v6) && v6.s6_addr[12] == 127;
  }
  return false;
}

std::string listener_owner(uint16_t port) {
  const std::set<std::string> inodes = listening_inodes(port);
  if (inodes.empty()) return "";
  std::unique_ptr<DIR, int (*)(DIR*)> proc(::opendir("/proc"), ::closedir);
  if (!proc) return "";
  while (const dirent* entry = ::readdir(proc.get())) {
    const std::string pid = entry->d_name;
    if (pid.empty() || !std::all_of(pid.begin(), pid.end(), ::isdigit)) continue;
    const std::string fd_dir = "/proc/" + pid + "/fd";
    std::unique_ptr<DIR, int (*)(DIR*)> fds(::opendir(fd_dir.c_str()), ::closedir);
    if (!fds) continue;  // another user's process
    while (const dirent* fd = ::readdir(fds.get())) {
      char target[64] = {0};
      const std::string link = fd_dir + "/" + fd->d_name;
      const ssize_t n = ::readlink(link.c_str(), target, sizeof(target) - 1);
      if (n <= 0) continue;
      const std::string text(target, static_cast<size_t>(n));
      if (text.rfind("socket:[", 0) == 0 && inodes.count(text.substr(8, text.size() - 9)) > 0) {
        return "pid " + pid + ": " + command_line(pid);
      }
    }
  }
  return "";
}

bool is_address_literal(const std::string& host) {
  in6_addr buffer{};
  return ::inet_pton(AF_INET, host.c_str(), &buffer) == 1 || ::inet_pton(AF_INET6, host.c_str(), &buffer) == 1;
}

bool is_local_address(const std::string& host) {
  if (is_loopback_name(host)) return true;
  try {
    AddrList list = resolve(host, 0);
    for (const addrinfo* a = list.get(); a != nullptr; a = a->ai_next) {
      Socket s(::socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol));
      if (s.get() < 0) continue;
      // Binding port 0 of an address succeeds exactly when the address is this machine's.
      if (::bind(s.get(), a->ai_addr, a->ai_addrlen) == 0 || errno != EADDRNOTAVAIL) return true;
    }
  } catch (const std::runtime_error&) {
    return false;
  }
  return false;
}

int bind_store_socket(const std::string& host, uint16_t port) {
  AddrList list = resolve(host, port);
  std::string why = "no address";
  for (const addrinfo* a = list.get(); a != nullptr; a = a->ai_next) {
    Socket s(::socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol));
    if (s.get() < 0) continue;
    const int on = 1;
    ::setsockopt(s.get(), SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on));  // as c10d: old TIME_WAIT sockets do not block
    if (::bind(s.get(), a->ai_addr, a->ai_addrlen) == 0) return s.release();
    if (errno == EADDRINUSE) {
      const std::string owner = listener_owner(port);
      throw std::runtime_error("port " + std::to_string(port) + " on " + address_text(a->ai_addr) +
                               " is already in use" + (owner.empty() ? "" : " by " + owner) +
                               " (choose another --master-port / MASTER_PORT)");
    }
    why = std::strerror(errno);
  }
  throw std::runtime_error("cannot bind the rendezvous store to " + host + ":" + std::to_string(port) + ": " + why);
}

void check_port_free(uint16_t port) {
  // c10d listens on the IPv6 wildcard (dual stack) when it can, else on the IPv4 one: try the same.
  for (const int family : {AF_INET6, AF_INET}) {
    Socket s(::socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (s.get() < 0) continue;
    const int on = 1;
    ::setsockopt(s.get(), SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on));
    sockaddr_storage address{};
    socklen_t length;
    if (family == AF_INET6) {
      auto* v6 = reinterpret_cast<sockaddr_in6*>(&address);
      v6->sin6_family = AF_INET6;
      v6->sin6_addr = in6addr_any;
      v6->sin6_port = htons(port);
      length = sizeof(sockaddr_in6);
    } else {
      auto* v4 = reinterpret_cast<sockaddr_in*>(&address);
      v4->sin_family = AF_INET;
      v4->sin_addr.s_addr = htonl(INADDR_ANY);
      v4->sin_port = htons(port);
      length = sizeof(sockaddr_in);
    }
    if (::bind(s.get(), reinterpret_cast<sockaddr*>(&address), length) == 0) return;
    if (errno == EADDRINUSE) {
      const std::string owner = listener_owner(port);
      throw std::runtime_error("port " + std::to_string(port) + " is already in use" +
                               (owner.empty() ? "" : " by " + owner) + " (choose another --master-port / MASTER_PORT)");
    }
  }
}

void probe_store(const std::string& host, uint16_t port, Millis timeout, StoreDialect dialect) {
  const auto deadline = Clock::now() + timeout;
  const std::string where = host + ":" + std::to_string(port);
  // ---- connect, retrying while nothing listens (rank 0 may start later) ----
  std::string last_error;
  int fd = -1;
  while (fd < 0) {
    AddrList list;
    try {
      list = resolve(host, port);
    } catch (const std::runtime_error& e) {
      last_error = e.what();  // name resolution can fail for a moment on a busy cluster: retry it too
    }
    for (const addrinfo* a = list.get(); a != nullptr && fd < 0; a = a->ai_next) {
      fd = connect_one(*a, deadline);
      if (fd < 0) last_error = std::string(std::strerror(errno)) + " from " + address_text(a->ai_addr);
    }
    if (fd >= 0) break;
    if (remaining_ms(deadline) == 0) {
      throw std::runtime_error("nothing accepted a connection at " + where + " within " + seconds_text(timeout) +
                               " (last: " + last_error + "); is rank 0 running, and MASTER_ADDR/MASTER_PORT right?");
    }
    std::this_thread::sleep_for(std::min(kRetryDelay, Millis(remaining_ms(deadline))));
  }
  Socket s(fd);

  // ---- one CHECK of a key nobody sets: a store answers NOT_READY (one byte) and changes nothing ----
  std::vector<uint8_t> query;
  if (dialect.validate_first) {
    query.push_back(0);  // VALIDATE
    const auto* magic = reinterpret_cast<const uint8_t*>(&kValidationMagic);
    query.insert(query.end(), magic, magic + sizeof(kValidationMagic));
  }
  const std::string key = "dc/rendezvous-probe";
  query.push_back(dialect.check_code);
  append_u64(query, 1);  // one key
  append_u64(query, key.size());
  query.insert(query.end(), key.begin(), key.end());
  const auto answer_deadline = std::min(deadline, Clock::now() + kAnswerBound);
  send_all(s.get(), query, answer_deadline, peer_name(host, port));

  // ---- the answer ----
  uint8_t reply[64];
  size_t got = 0;
  const auto bound = std::chrono::duration_cast<Millis>(answer_deadline - Clock::now());
  while (got == 0) {
    if (!wait_for(s.get(), POLLIN, answer_deadline)) {
      throw std::runtime_error(peer_name(host, port) + " is not a c10d store: it accepted the connection but sent no "
                               "answer within " + seconds_text(bound) + " (another program holds the master port; "
                               "choose another --master-port / MASTER_PORT)");
    }
    const ssize_t n = ::recv(s.get(), reply, sizeof(reply), 0);
    if (n == 0) {
      throw std::runtime_error(peer_name(host, port) + " is not a c10d store: it closed the connection without "
                               "answering (another program holds the master port?)");
    }
    if (n < 0) {
      if (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK) continue;
      throw std::runtime_error(peer_name(host, port) + " failed the connection: " + std::strerror(errno));
    }
    got = static_cast<size_t>(n);
  }
  if (got == 1 && reply[0] <= 1) return;  // CheckResponseType READY (0) or NOT_READY (1)
  // Not a store: collect a little more of what it says, for the message.
  const auto more_deadline = Clock::now() + Millis(200);
  while (got < sizeof(reply) && wait_for(s.get(), POLLIN, more_deadline)) {
    const ssize_t n = ::recv(s.get(), reply + got, sizeof(reply) - got, 0);
    if (n <= 0) break;
    got += static_cast<size_t>(n);
  }
  throw std::runtime_error(peer_name(host, port) + " is not a c10d store: it answered '" + printable(reply, got) +
                           "' (another program holds the master port; choose another --master-port / MASTER_PORT)");
}

}  // namespace dc::rendezvous
