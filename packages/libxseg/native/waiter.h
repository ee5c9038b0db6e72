// The waiter: how a port served in this process learns that it has work, with no helper thread.
//
// Every port this process serves has a doorbell, a FIFO that its libuv loop watches with a
// uv_poll handle. An enqueuer rings it only while the owner is armed (Port::waiters), i.e. may
// be asleep in epoll; the poll callback runs the JS drain directly (napi_make_callback), which
// takes everything that arrived (a batch). While a port has requests of its own outstanding and
// the loop has nothing else to do, a uv_prepare handle spins on the port's queues for a bounded,
// adaptive number of microseconds before the loop goes to sleep, disarmed, so a fast reply costs
// no wake-up at all. After serving, it lingers the same way for the next request.
//
// Plain Node-API (C) and libuv, on the JS thread of one environment (the main thread or a
// worker): the loop, the drain function and the async context all belong to the environment
// that started the waiter, and its teardown stops it (an async cleanup hook).
#pragma once
#include <node_api.h>
#include <uv.h>

#include <memory>

#include "segment.h"

namespace xseg {

// Counters of one waiter (diagnostics; NativeWaiterStats in src/segment/native.ts).
struct WaiterStats {
  uint32_t outstanding;
  double spins, hits, spun_us, avg_hit_us;     // spins for replies due
  double lingers, linger_hits, linger_us;      // spins for the next request after serving
  double contended;                            // spins (either kind) cut short by a busy CPU
  double wakes;                                // doorbell wake-ups of the loop
  double spin_max_us, linger_max_us;
  bool armed;
};

class Waiter {
 public:
  // Starts serving port `port` of `seg` on `env`'s loop: `drain` (a JS function) is called with
  // no arguments whenever the port has requests or replies. Whatever is queued already is
  // drained before the loop next sleeps (never in this call). Throws xseg::Error when the
  // doorbell cannot be opened.
  static Waiter* start(napi_env env, std::shared_ptr<Seg> seg, uint32_t port, napi_value drain);

  // Stops the waiter and lets go of it: it is freed now, or once its libuv handles are closed.
  // Safe inside the drain. The pointer must not be used afterwards.
  void drop();

  // Whether the doorbell keeps the loop (the process or worker) alive.
  void set_ref(bool ref);
  // The most the port may spin per loop turn for replies it has due, and for the next request
  // after serving (µs; 0: never).
  void set_spin(double max_us, double linger_us) {
    spin_max_us_ = max_us;
    linger_max_us_ = linger_us;
  }
  // Test hook: spin the whole cap every time, no adapting (a test can catch it mid-spin).
  void set_fixed_spin(bool fixed) { fixed_spin_ = fixed; }

  // The port submitted a request / received a reply: spinning for replies is worth it only
  // while some are due.
  void submitted() { outstanding_++; }
  void received() {
    if (outstanding_ > 0) outstanding_--;
  }

  WaiterStats stats() const;

 private:
  Waiter() = default;
  ~Waiter() = default;

  // Spinning, right before the loop would sleep and only when it has nothing else ready, for
  // at most spin_max_us_ per loop turn, in two cases:
  //  - replies are due (outstanding_ > 0): spin for them;
  //  - linger: this port just served requests (a peer in a request/reply stream usually sends
  //    the next one within microseconds): spin for the next, up to linger_max_us_ after the end
  //    of the last drain, never later. An idle port therefore spins at most once, briefly.
  // Each case adapts: the budget is 4x the moving average of how long hits took (at least
  // kMinSpin), and a miss skips the next 1, 3, 7 ... 63 chances, so a port whose peers are slow
  // stops spinning almost entirely. Spinning disarms the port: the peer pays no wake-up either.
  struct Adapt {
    double avg = 0;
    uint32_t misses = 0, skip = 0;
    double spins = 0, hits = 0, spun_us = 0;
    double contended = 0;
    bool ready();
    void record(bool hit, double us, bool busy);
  };
  static constexpr double kMinSpin = 25;
  static constexpr double kYieldedUs = 20;  // a sched_yield this long ran someone else

  void init(napi_env env, napi_value drain);
  void arm(uint32_t v);
  bool service();
  bool settle();
  void call_js();
  double spin(double budget, bool* contended);
  void halt();

  static void on_poll(uv_poll_t* h, int status, int events);
  static void on_idle(uv_idle_t* h);
  static void on_prepare(uv_prepare_t* h);
  static void on_close(uv_handle_t* h);
  static void on_teardown(napi_async_cleanup_hook_handle, void* arg);

  std::shared_ptr<Seg> seg_;
  uint32_t port_ = 0;
  Port* p_ = nullptr;
  napi_env env_ = nullptr;
  napi_ref fn_ = nullptr;
  napi_ref resource_ = nullptr;
  napi_async_context actx_ = nullptr;
  napi_async_cleanup_hook_handle hook_ = nullptr;
  int fd_ = -1;
  uv_loop_t* loop_ = nullptr;
  uv_poll_t poll_;
  uv_prepare_t prep_;
  uv_idle_t idle_;
  int open_handles_ = 0;
  bool stopped_ = false;
  bool orphaned_ = false;   // drop() was called: nobody points at it any more
  bool from_hook_ = false;  // halted by the environment's teardown
  uint32_t seen_seq_ = 0;   // the port's seq when the last drain started

  uint32_t outstanding_ = 0;  // requests this port submitted whose replies it has not received
  double spin_max_us_ = 0;
  double linger_max_us_ = 0;
  Adapt reply_spin_, linger_;
  double served_at_ = 0;  // when the last drain that took requests ended (0: not recently)
  double wakes_ = 0;
  bool fixed_spin_ = false;
};

}  // namespace xseg
