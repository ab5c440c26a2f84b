// rendezvous.h: plain-socket checks around c10d's TCPStore (rendezvous.cpp), so that what c10d does not bound is
// bounded here: a worker rank proves that the master port speaks the store protocol (within the timeout) before c10d
// connects to it, and rank 0 checks that the port is free, naming the program that holds it, or binds the store's
// socket to the master address itself. No libtorch in here: POSIX sockets and /proc only.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

namespace dc::rendezvous {

// What a store answers to the probe's CHECK query, and what the probe sends first. The query codes of c10d's wire
// protocol changed in 2.x (a VALIDATE query with a magic number became code 0 and must come first), so the caller
// picks the dialect of the libtorch it was built against; every rank of a job runs the same build.
struct StoreDialect {
  bool validate_first;  // send VALIDATE (code 0) + the 32-bit magic number before the query
  uint8_t check_code;   // the CHECK query's code
};

// True for "localhost" and loopback literals (127.0.0.0/8, ::1).
bool is_loopback_name(const std::string& host);

// An IPv4 or IPv6 literal (not a host name).
bool is_address_literal(const std::string& host);

// Whether `host` is (or resolves to) an address of this machine.
bool is_local_address(const std::string& host);

// A listening-ready TCP socket bound to host:port (SO_REUSEADDR, close-on-exec), for c10d to take over; throws with
// the holder of the port named when it is taken.
int bind_store_socket(const std::string& host, uint16_t port);

// Throws, naming the holder, when the port cannot be bound on the wildcard address (what c10d itself will bind).
void check_port_free(uint16_t port);

// Connects to host:port (retrying while nothing listens) and sends one harmless CHECK query; returns once a store
// answered. Throws std::runtime_error when the deadline passes first, or when the peer answers with anything but a
// store's reply or closes the connection: the message names the peer (the local program holding the port when it
// can be found, and what it sent).
void probe_store(const std::string& host, uint16_t port, std::chrono::milliseconds timeout, StoreDialect dialect);

// "pid 1234 (python3)" for the local process listening on `port`, or "" when none can be seen (another user's
// process, or a remote host).
std::string listener_owner(uint16_t port);

}  // namespace dc::rendezvous
