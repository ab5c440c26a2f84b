// process.cpp: the "process" section of detailclip.h. A rank started by `deno task launch` must not outlive its
// launcher: killed with SIGKILL, the launcher cannot stop its ranks, which are re-parented and would train on,
// writing the output folder, with nobody reading their output. A watchdog thread notices the new parent and kills
// its own process.
//
// Why a thread polling getppid() rather than prctl(PR_SET_PDEATHSIG): the death signal follows the *thread* that
// forked the child, and which runtime thread of the launcher spawns a rank is the runtime's business; a polling
// thread depends only on the parent process, and its interval bounds the delay (the launch test: under 10 s).
#include "common.h"

#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <stdexcept>
#include <string>
#include <thread>

extern "C" {

int32_t dc_exit_with_parent(int64_t parent_pid, int64_t interval_ms) {
  DC_GUARD_BEGIN
    if (parent_pid <= 1) throw std::invalid_argument("exit_with_parent: bad parent pid " + std::to_string(parent_pid));
    if (interval_ms < 1) throw std::invalid_argument("exit_with_parent: the interval must be positive");
    if (static_cast<int64_t>(::getppid()) != parent_pid) return 1;
    static std::atomic<bool> watching{false};
    if (watching.exchange(true)) return 0;
    std::thread([parent_pid, interval_ms] {
      while (static_cast<int64_t>(::getppid()) == parent_pid) {
        std::this_thread::sleep_for(std::chrono::milliseconds(interval_ms));
      }
      // Its launcher is gone: nobody reads this rank's output or will stop it. SIGKILL, so that no handler of the
      // rank (a SIGTERM checkpoint, say) writes anything more.
      const std::string line = "detailclip: launcher (pid " + std::to_string(parent_pid) + ") is gone; rank process " +
                               std::to_string(::getpid()) + " stops\n";
      const ssize_t ignored = ::write(2, line.data(), line.size());
      (void)ignored;
      ::kill(::getpid(), SIGKILL);
    }).detach();
    return 0;
  DC_GUARD_END(-1)
}

}  // extern "C"
