// The waiter (see waiter.h): doorbell, arm/settle, bounded adaptive spins, the JS drain.
#include "waiter.h"

#include <sched.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>

namespace xseg {

namespace {

double now_us() {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return double(t.tv_sec) * 1e6 + double(t.tv_nsec) / 1e3;
}

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield");
#endif
}

uv_handle_t* handle(void* h) { return reinterpret_cast<uv_handle_t*>(h); }

}  // namespace

bool Waiter::Adapt::ready() {
  if (skip == 0) return true;
  skip--;
  return false;
}

void Waiter::Adapt::record(bool hit, double us, bool busy) {
  spins++;
  spun_us += us;
  if (hit) {
    hits++;
    avg = avg == 0 ? us : (7 * avg + us) / 8;
    misses = 0;
  } else {
    misses = std::min(misses + 1, 6u);
    if (busy) contended++;
    skip = (1u << misses) - 1;
  }
}

Waiter* Waiter::start(napi_env env, std::shared_ptr<Seg> seg, uint32_t port, napi_value drain) {
  auto* w = new Waiter();
  w->seg_ = std::move(seg);
  w->port_ = port;
  try {
    w->init(env, drain);
  } catch (...) {
    delete w;  // open_doorbell failed before any handle was initialised
    throw;
  }
  return w;
}

void Waiter::init(napi_env env, napi_value drain) {
  env_ = env;
  p_ = seg_->port(port_);
  fd_ = seg_->open_doorbell(port_);
  napi_get_uv_event_loop(env, &loop_);
  napi_create_reference(env, drain, 1, &fn_);
  napi_value res, name;
  napi_create_object(env, &res);
  napi_create_reference(env, res, 1, &resource_);
  napi_create_string_utf8(env, "xseg-port", NAPI_AUTO_LENGTH, &name);
  napi_async_init(env, res, name, &actx_);
  poll_.data = prep_.data = idle_.data = this;
  uv_poll_init(loop_, &poll_, fd_);
  uv_prepare_init(loop_, &prep_);
  uv_idle_init(loop_, &idle_);
  open_handles_ = 3;
  uv_unref(handle(&prep_));
  uv_unref(handle(&idle_));
  uv_poll_start(&poll_, UV_READABLE, on_poll);
  uv_prepare_start(&prep_, on_prepare);
  napi_add_async_cleanup_hook(env, on_teardown, this, &hook_);
  // Whatever is queued already is drained before the loop next sleeps (never in this call).
  seen_seq_ = __atomic_load_n(&p_->seq, __ATOMIC_SEQ_CST) - 1;
  uv_idle_start(&idle_, on_idle);
}

void Waiter::set_ref(bool ref) {
  if (stopped_) return;
  if (ref) uv_ref(handle(&poll_));
  else uv_unref(handle(&poll_));
}

WaiterStats Waiter::stats() const {
  return WaiterStats{
      outstanding_,
      reply_spin_.spins,
      reply_spin_.hits,
      reply_spin_.spun_us,
      reply_spin_.avg,
      linger_.spins,
      linger_.hits,
      linger_.spun_us,
      reply_spin_.contended + linger_.contended,
      wakes_,
      spin_max_us_,
      linger_max_us_,
      __atomic_load_n(&p_->waiters, __ATOMIC_SEQ_CST) != 0,
  };
}

void Waiter::arm(uint32_t v) { __atomic_store_n(&p_->waiters, v, __ATOMIC_SEQ_CST); }

// The port is armed only while its loop may sleep: `settle` (the last thing before epoll)
// arms it, everything that runs JS disarms it, so peers ring only a loop that may be asleep.

// Disarms and runs the JS drain if anything is queued. Returns whether JS ran.
bool Waiter::service() {
  arm(0);
  seen_seq_ = __atomic_load_n(&p_->seq, __ATOMIC_SEQ_CST);
  if (!seg_->has_work(port_)) return false;
  bool requests = __atomic_load_n(&p_->rq.count, __ATOMIC_SEQ_CST) != 0;
  call_js();
  if (requests && !stopped_) served_at_ = now_us();
  return true;
}

// Arms, then drains again if anything arrived since the last look (a peer that saw us
// disarmed did not ring). Bounded: a peer that keeps the queue busy gets the next loop turn,
// and the idle handle keeps that turn's poll from blocking. Returns whether JS ran.
bool Waiter::settle() {
  bool ran = false;
  for (int round = 0; round < 4 && !stopped_; round++) {
    arm(1);
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    if (__atomic_load_n(&p_->seq, __ATOMIC_SEQ_CST) == seen_seq_) return ran;
    ran |= service();
  }
  if (!stopped_) {
    arm(1);
    uv_idle_start(&idle_, on_idle);
  }
  return ran;
}

void Waiter::call_js() {
  napi_handle_scope scope;
  if (napi_open_handle_scope(env_, &scope) != napi_ok) return;
  napi_value f, recv, result;
  napi_get_reference_value(env_, fn_, &f);
  napi_get_reference_value(env_, resource_, &recv);  // must be an object
  if (napi_make_callback(env_, actx_, recv, f, 0, nullptr, &result) == napi_pending_exception) {
    // Handler errors are the facade's business (it catches and reports them); anything that
    // still escapes is dropped here as the thread-safe function did before.
    napi_value e;
    napi_get_and_clear_last_exception(env_, &e);
  }
  napi_close_handle_scope(env_, scope);
}

void Waiter::on_poll(uv_poll_t* h, int status, int events) {
  auto* w = static_cast<Waiter*>(h->data);
  if (w->stopped_) return;
  uint8_t buf[256];
  while (read(w->fd_, buf, sizeof buf) > 0) {
  }
  w->wakes_++;
  w->service();
}

// Only keeps one loop turn from blocking (the prepare callback does the work).
void Waiter::on_idle(uv_idle_t* h) { uv_idle_stop(h); }

// Spins until the port has work or `budget` µs passed; returns the µs spent (negative: miss).
// Every ~10 µs it offers the CPU (sched_yield: a no-op when nothing else is runnable here).
// A long gap between two looks means another task ran on this CPU: with more runnable
// tasks than CPUs, spinning only delays the process doing the work (on 2 vCPUs, five
// daemons), so the spin stops there and counts as a miss (back-off); `contended` counts them.
double Waiter::spin(double budget, bool* contended) {
  double t0 = now_us(), t = t0;
  *contended = false;
  for (uint32_t i = 1;; i++) {
    if (seg_->has_work(port_)) return t - t0;
    for (int k = 0; k < 16; k++) cpu_relax();
    if ((i & 15) == 0) sched_yield();
    double t2 = now_us();
    // a gap this long: we yielded to, or were preempted by, another task
    if (t2 - t > kYieldedUs && !fixed_spin_) *contended = true;
    t = t2;
    if (*contended || t - t0 >= budget) return -(t - t0);
  }
}

// Right before the loop would block in epoll (see Adapt).
void Waiter::on_prepare(uv_prepare_t* h) {
  auto* w = static_cast<Waiter*>(h->data);
  if (w->stopped_) return;
  bool replies = w->outstanding_ > 0;
  Adapt* a = nullptr;
  double cap = 0;
  if (replies && w->spin_max_us_ > 0) {
    a = &w->reply_spin_;
    cap = w->spin_max_us_;
  } else if (!replies && w->served_at_ != 0 && w->linger_max_us_ > 0) {
    cap = w->linger_max_us_ - (now_us() - w->served_at_);
    if (cap > 1) a = &w->linger_;
  }
  w->served_at_ = 0;  // at most one linger per drain
  bool ran = false;
  bool want = a != nullptr && (w->fixed_spin_ || a->ready());
  // timeout 0: timers, immediates or closing handles are ready, so no spinning
  int timeout = want ? uv_backend_timeout(w->loop_) : 0;
  if (want && timeout != 0) {
    double budget = w->fixed_spin_ ? cap : std::min(cap, std::max(kMinSpin, 4 * a->avg));
    if (timeout > 0 && !w->fixed_spin_) budget = std::min(budget, timeout * 1000.0);
    w->arm(0);
    bool busy;
    double r = w->spin(budget, &busy);
    a->record(r >= 0, r >= 0 ? r : -r, busy);
    if (r >= 0) ran = w->service();
  } else if (want && a == &w->reply_spin_) {
    // Something else is ready this turn; look again on the next one (which the idle handle
    // keeps from blocking) rather than sleeping with replies due.
    ran = true;
  }
  ran |= w->settle();
  // JS ran here, right before the poll: it may have sent requests (or served some) worth
  // spinning for, so come back through this callback instead of blocking.
  if (ran && !w->stopped_) uv_idle_start(&w->idle_, on_idle);
}

void Waiter::on_close(uv_handle_t* h) {
  auto* w = static_cast<Waiter*>(h->data);
  if (--w->open_handles_ > 0) return;
  if (w->fd_ >= 0) close(w->fd_);
  w->fd_ = -1;
  if (w->from_hook_) napi_remove_async_cleanup_hook(w->hook_);
  if (w->orphaned_) delete w;
}

void Waiter::on_teardown(napi_async_cleanup_hook_handle, void* arg) {
  auto* w = static_cast<Waiter*>(arg);
  w->from_hook_ = true;
  w->halt();
}

// On the JS thread. Safe to call from inside the drain (the handles close later).
void Waiter::halt() {
  if (stopped_) return;
  stopped_ = true;
  arm(0);
  if (!from_hook_ && hook_ != nullptr) napi_remove_async_cleanup_hook(hook_);
  if (actx_ != nullptr) napi_async_destroy(env_, actx_);
  if (fn_ != nullptr) napi_delete_reference(env_, fn_);
  if (resource_ != nullptr) napi_delete_reference(env_, resource_);
  actx_ = nullptr;
  fn_ = resource_ = nullptr;
  uv_poll_stop(&poll_);
  uv_prepare_stop(&prep_);
  uv_idle_stop(&idle_);
  uv_close(handle(&poll_), on_close);
  uv_close(handle(&prep_), on_close);
  uv_close(handle(&idle_), on_close);
}

void Waiter::drop() {
  halt();
  orphaned_ = true;
  if (open_handles_ == 0) delete this;
}

}  // namespace xseg
