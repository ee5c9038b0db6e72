// Node-API wrapper of the segment core (segment.cc). One ObjectWrap, `NativeSegment`; the
// TypeScript facade (src/segment/) checks arguments and keeps this object behind a Symbol.
//
// Wake-ups (one per direction, no helper thread): every port this process serves has a
// doorbell, a FIFO that its libuv loop watches with a uv_poll handle. An enqueuer rings it only
// while the owner is armed (Port::waiters), i.e. may be asleep in epoll; the poll callback runs
// the JS drain directly (napi_make_callback), which takes everything that arrived (a batch).
// While a port has requests of its own outstanding and the loop has nothing else to do, a
// uv_prepare handle spins on the port's queues for a bounded, adaptive number of microseconds
// before the loop goes to sleep, disarmed, so a fast reply costs no wake-up at all.
#include <napi.h>
#include <sched.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include <algorithm>
#include <map>

#include "segment.h"

namespace {

using xseg::Error;
using xseg::Seg;

[[noreturn]] void throw_js(Napi::Env env, const Error& e) {
  Napi::Error err = Napi::Error::New(env, e.message);
  err.Set("code", Napi::String::New(env, e.code));
  if (e.corrupt) err.Set("corrupt", Napi::Boolean::New(env, true));
  throw err;
}

#define GUARD_BEGIN try {
#define GUARD_END(env)            \
  }                               \
  catch (const Error& e) {        \
    throw_js(env, e);             \
  }

static double now_us() {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return double(t.tv_sec) * 1e6 + double(t.tv_nsec) / 1e3;
}

static inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield");
#endif
}

// The serving end of one port in this process. Lives on the JS thread only. Its three libuv
// handles are closed by halt(); the struct is freed once they are closed and its NativeSegment
// has let go of it (whichever comes last).
struct Waiter {
  std::shared_ptr<Seg> seg;
  uint32_t port = 0;
  xseg::Port* p = nullptr;
  napi_env env = nullptr;
  napi_ref fn = nullptr;
  napi_ref resource = nullptr;
  napi_async_context actx = nullptr;
  napi_async_cleanup_hook_handle hook = nullptr;
  int fd = -1;
  uv_loop_t* loop = nullptr;
  uv_poll_t poll;
  uv_prepare_t prep;
  uv_idle_t idle;
  int open_handles = 0;
  bool stopped = false;
  bool orphaned = false;     // the NativeSegment no longer points at it
  bool from_hook = false;    // halted by the environment's teardown
  uint32_t seen_seq = 0;     // the port's seq when the last drain started

  // Requests this port submitted whose replies it has not received yet.
  uint32_t outstanding = 0;

  // Spinning, right before the loop would sleep and only when it has nothing else ready, for
  // at most spin_max_us per loop turn, in two cases:
  //  - replies are due (outstanding > 0): spin for them;
  //  - linger: this port just served requests (a peer in a request/reply stream usually sends
  //    the next one within microseconds): spin for the next, up to linger_max_us after the end
  //    of the last drain, never later. An idle port therefore spins at most once, briefly.
  // Each case adapts: the budget is 4x the moving average of how long hits took (at least
  // kMinSpin), and a miss skips the next 1, 3, 7 ... 63 chances, so a port whose peers are slow
  // stops spinning almost entirely. Spinning disarms the port: the peer pays no wake-up either.
  struct Adapt {
    double avg = 0;
    uint32_t misses = 0, skip = 0;
    double spins = 0, hits = 0, spun_us = 0;
    bool ready() {
      if (skip == 0) return true;
      skip--;
      return false;
    }
    double contended = 0;
    void record(bool hit, double us, bool busy) {
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
  };
  double spin_max_us = 0;
  double linger_max_us = 0;
  Adapt reply_spin, linger;
  double served_at = 0;  // when the last drain that took requests ended (0: not recently)
  static constexpr double kMinSpin = 25;
  static constexpr double kYieldedUs = 20;  // a sched_yield this long ran someone else

  double wakes = 0;  // doorbell wake-ups (stats)
  bool fixed_spin = false;  // test hook: spin the whole cap, no adapting

  void start(napi_env e, napi_value f) {
    env = e;
    p = seg->port(port);
    fd = seg->open_doorbell(port);
    napi_get_uv_event_loop(env, &loop);
    napi_create_reference(env, f, 1, &fn);
    napi_value res, name;
    napi_create_object(env, &res);
    napi_create_reference(env, res, 1, &resource);
    napi_create_string_utf8(env, "xseg-port", NAPI_AUTO_LENGTH, &name);
    napi_async_init(env, res, name, &actx);
    poll.data = prep.data = idle.data = this;
    uv_poll_init(loop, &poll, fd);
    uv_prepare_init(loop, &prep);
    uv_idle_init(loop, &idle);
    open_handles = 3;
    uv_unref(reinterpret_cast<uv_handle_t*>(&prep));
    uv_unref(reinterpret_cast<uv_handle_t*>(&idle));
    uv_poll_start(&poll, UV_READABLE, on_poll);
    uv_prepare_start(&prep, on_prepare);
    napi_add_async_cleanup_hook(env, on_teardown, this, &hook);
    // Whatever is queued already is drained before the loop next sleeps (never in this call).
    seen_seq = __atomic_load_n(&p->seq, __ATOMIC_SEQ_CST) - 1;
    uv_idle_start(&idle, on_idle);
  }

  void set_ref(bool ref) {
    if (stopped) return;
    if (ref) uv_ref(reinterpret_cast<uv_handle_t*>(&poll));
    else uv_unref(reinterpret_cast<uv_handle_t*>(&poll));
  }

  void arm(uint32_t v) { __atomic_store_n(&p->waiters, v, __ATOMIC_SEQ_CST); }

  // The port is armed only while its loop may sleep: `settle` (the last thing before epoll)
  // arms it, everything that runs JS disarms it, so peers ring only a loop that may be asleep.

  // Disarms and runs the JS drain if anything is queued. Returns whether JS ran.
  bool service() {
    arm(0);
    seen_seq = __atomic_load_n(&p->seq, __ATOMIC_SEQ_CST);
    if (!seg->has_work(port)) return false;
    bool requests = __atomic_load_n(&p->rq.count, __ATOMIC_SEQ_CST) != 0;
    call_js();
    if (requests && !stopped) served_at = now_us();
    return true;
  }

  // Arms, then drains again if anything arrived since the last look (a peer that saw us
  // disarmed did not ring). Bounded: a peer that keeps the queue busy gets the next loop turn,
  // and the idle handle keeps that turn's poll from blocking. Returns whether JS ran.
  bool settle() {
    bool ran = false;
    for (int round = 0; round < 4 && !stopped; round++) {
      arm(1);
      __atomic_thread_fence(__ATOMIC_SEQ_CST);
      if (__atomic_load_n(&p->seq, __ATOMIC_SEQ_CST) == seen_seq) return ran;
      ran |= service();
    }
    if (!stopped) {
      arm(1);
      uv_idle_start(&idle, on_idle);
    }
    return ran;
  }

  void call_js() {
    napi_handle_scope scope;
    if (napi_open_handle_scope(env, &scope) != napi_ok) return;
    napi_value f, recv, result;
    napi_get_reference_value(env, fn, &f);
    napi_get_reference_value(env, resource, &recv);  // must be an object
    if (napi_make_callback(env, actx, recv, f, 0, nullptr, &result) == napi_pending_exception) {
      // Handler errors are the facade's business (it catches and reports them); anything that
      // still escapes is dropped here as the thread-safe function did before.
      napi_value e;
      napi_get_and_clear_last_exception(env, &e);
    }
    napi_close_handle_scope(env, scope);
  }

  static void on_poll(uv_poll_t* h, int status, int events) {
    auto* w = static_cast<Waiter*>(h->data);
    if (w->stopped) return;
    uint8_t buf[256];
    while (read(w->fd, buf, sizeof buf) > 0) {
    }
    w->wakes++;
    w->service();
  }

  // Only keeps one loop turn from blocking (the prepare callback does the work).
  static void on_idle(uv_idle_t* h) { uv_idle_stop(h); }

  // Spins until the port has work or `budget` µs passed; returns the µs spent (negative: miss).
  // Every ~10 µs it offers the CPU (sched_yield: a no-op when nothing else is runnable here).
  // A long gap between two looks means another task ran on this CPU: with more runnable
  // tasks than CPUs, spinning only delays the process doing the work (on 2 vCPUs, five
  // daemons), so the spin stops there and counts as a miss (back-off); `contended` counts them.
  double spin(double budget, bool* contended) {
    double t0 = now_us(), t = t0;
    *contended = false;
    for (uint32_t i = 1;; i++) {
      if (seg->has_work(port)) return t - t0;
      for (int k = 0; k < 16; k++) cpu_relax();
      if ((i & 15) == 0) sched_yield();
      double t2 = now_us();
      // a gap this long: we yielded to, or were preempted by, another task
      if (t2 - t > kYieldedUs && !fixed_spin) *contended = true;
      t = t2;
      if (*contended || t - t0 >= budget) return -(t - t0);
    }
  }

  // Right before the loop would block in epoll (see Adapt above).
  static void on_prepare(uv_prepare_t* h) {
    auto* w = static_cast<Waiter*>(h->data);
    if (w->stopped) return;
    bool replies = w->outstanding > 0;
    Adapt* a = nullptr;
    double cap = 0;
    if (replies && w->spin_max_us > 0) {
      a = &w->reply_spin;
      cap = w->spin_max_us;
    } else if (!replies && w->served_at != 0 && w->linger_max_us > 0) {
      cap = w->linger_max_us - (now_us() - w->served_at);
      if (cap > 1) a = &w->linger;
    }
    w->served_at = 0;  // at most one linger per drain
    bool ran = false;
    bool want = a != nullptr && (w->fixed_spin || a->ready());
    // timeout 0: timers, immediates or closing handles are ready, so no spinning
    int timeout = want ? uv_backend_timeout(w->loop) : 0;
    if (want && timeout != 0) {
      double budget = w->fixed_spin ? cap : std::min(cap, std::max(kMinSpin, 4 * a->avg));
      if (timeout > 0 && !w->fixed_spin) budget = std::min(budget, timeout * 1000.0);
      w->arm(0);
      bool busy;
      double r = w->spin(budget, &busy);
      a->record(r >= 0, r >= 0 ? r : -r, busy);
      if (r >= 0) ran = w->service();
    } else if (want && a == &w->reply_spin) {
      // Something else is ready this turn; look again on the next one (which the idle handle
      // keeps from blocking) rather than sleeping with replies due.
      ran = true;
    }
    ran |= w->settle();
    // JS ran here, right before the poll: it may have sent requests (or served some) worth
    // spinning for, so come back through this callback instead of blocking.
    if (ran && !w->stopped) uv_idle_start(&w->idle, on_idle);
  }

  static void on_close(uv_handle_t* h) {
    auto* w = static_cast<Waiter*>(h->data);
    if (--w->open_handles > 0) return;
    if (w->fd >= 0) close(w->fd);
    w->fd = -1;
    if (w->from_hook) napi_remove_async_cleanup_hook(w->hook);
    if (w->orphaned) delete w;
  }

  static void on_teardown(napi_async_cleanup_hook_handle, void* arg) {
    auto* w = static_cast<Waiter*>(arg);
    w->from_hook = true;
    w->halt();
  }

  // On the JS thread. Safe to call from inside the drain (the handles close later).
  void halt() {
    if (stopped) return;
    stopped = true;
    arm(0);
    if (!from_hook && hook != nullptr) napi_remove_async_cleanup_hook(hook);
    if (actx != nullptr) napi_async_destroy(env, actx);
    if (fn != nullptr) napi_delete_reference(env, fn);
    if (resource != nullptr) napi_delete_reference(env, resource);
    actx = nullptr;
    fn = resource = nullptr;
    uv_poll_stop(&poll);
    uv_prepare_stop(&prep);
    uv_idle_stop(&idle);
    uv_close(reinterpret_cast<uv_handle_t*>(&poll), on_close);
    uv_close(reinterpret_cast<uv_handle_t*>(&prep), on_close);
    uv_close(reinterpret_cast<uv_handle_t*>(&idle), on_close);
  }

  // The NativeSegment lets go: frees it now or once its handles are closed.
  void drop() {
    halt();
    orphaned = true;
    if (open_handles == 0) delete this;
  }
};

class NativeSegment : public Napi::ObjectWrap<NativeSegment> {
 public:
  static Napi::Function Init(Napi::Env env) {
    return DefineClass(
        env, "NativeSegment",
        {
            StaticMethod("create", &NativeSegment::Create),
            StaticMethod("join", &NativeSegment::Join),
            StaticMethod("destroy", &NativeSegment::Destroy),
            InstanceMethod("geometry", &NativeSegment::Geometry),
            InstanceMethod("bind", &NativeSegment::Bind),
            InstanceMethod("bindDynamic", &NativeSegment::BindDynamic),
            InstanceMethod("leave", &NativeSegment::Leave),
            InstanceMethod("submit", &NativeSegment::Submit),
            InstanceMethod("prepare", &NativeSegment::Prepare),
            InstanceMethod("submitPrepared", &NativeSegment::SubmitPrepared),
            InstanceMethod("accept", &NativeSegment::Accept),
            InstanceMethod("acceptFast", &NativeSegment::AcceptFast),
            InstanceMethod("receiveFast", &NativeSegment::ReceiveFast),
            InstanceMethod("setScratch", &NativeSegment::SetScratch),
            InstanceMethod("respond", &NativeSegment::Respond),
            InstanceMethod("receive", &NativeSegment::Receive),
            InstanceMethod("release", &NativeSegment::Release),
            InstanceMethod("startWaiter", &NativeSegment::StartWaiter),
            InstanceMethod("stopWaiter", &NativeSegment::StopWaiter),
            InstanceMethod("refWaiter", &NativeSegment::RefWaiter),
            InstanceMethod("setSpin", &NativeSegment::SetSpin),
            InstanceMethod("waiterStats", &NativeSegment::WaiterStats),
            InstanceMethod("debugFixedSpin", &NativeSegment::DebugFixedSpin),
            InstanceMethod("report", &NativeSegment::Report),
            InstanceMethod("recoverPort", &NativeSegment::RecoverPort),
            InstanceMethod("recoverLocks", &NativeSegment::RecoverLocks),
            InstanceMethod("close", &NativeSegment::Close),
            InstanceMethod("debugHoldLock", &NativeSegment::DebugHoldLock),
            InstanceMethod("heapBuffer", &NativeSegment::HeapBuffer),
        });
  }

  NativeSegment(const Napi::CallbackInfo& info) : Napi::ObjectWrap<NativeSegment>(info) {
    if (info.Length() != 1 || !info[0].IsExternal()) throw Napi::TypeError::New(info.Env(), "use create() or join()");
    auto* m = info[0].As<Napi::External<std::shared_ptr<xseg::Mapping>>>().Data();
    seg_ = std::make_shared<Seg>(*m);
  }

  ~NativeSegment() override { StopAll(); }

  static Napi::FunctionReference* ctor;

 private:
  std::shared_ptr<Seg> seg_;
  std::map<uint32_t, Waiter*> waiters_;
  static constexpr size_t kScratch = 11;
  Napi::Reference<Napi::Float64Array> scratch_ref_;
  double* scratch_ = nullptr;

  Seg& S(Napi::Env env) {
    if (!seg_) throw_js(env, Error{"ECLOSED", "the segment was closed", false});
    return *seg_;
  }

  void StopAll() {
    for (auto& [n, w] : waiters_) w->drop();
    waiters_.clear();
  }

  static Napi::Value Wrap(Napi::Env env, std::shared_ptr<xseg::Mapping> m) {
    auto* holder = new std::shared_ptr<xseg::Mapping>(std::move(m));
    auto ext = Napi::External<std::shared_ptr<xseg::Mapping>>::New(
        env, holder, [](Napi::Env, std::shared_ptr<xseg::Mapping>* h) { delete h; });
    return ctor->New({ext});
  }

  static Napi::Value Create(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    GUARD_BEGIN
    xseg::Geometry g;
    std::string name = info[0].As<Napi::String>();
    g.nr_ports = info[1].As<Napi::Number>().Uint32Value();
    g.dynports = info[2].As<Napi::Number>().Uint32Value();
    g.heap_size = static_cast<uint64_t>(info[3].As<Napi::Number>().DoubleValue());
    g.page_shift = info[4].As<Napi::Number>().Uint32Value();
    g.nr_reqs = info[5].As<Napi::Number>().Uint32Value();
    return Wrap(env, Seg::create(name, g));
    GUARD_END(env)
  }

  static Napi::Value Join(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    GUARD_BEGIN
    return Wrap(env, Seg::join(info[0].As<Napi::String>()));
    GUARD_END(env)
  }

  static Napi::Value Destroy(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    GUARD_BEGIN
    Seg::destroy(info[0].As<Napi::String>());
    return env.Undefined();
    GUARD_END(env)
  }

  Napi::Value Geometry(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    xseg::Header* h = S(env).hdr();
    Napi::Object o = Napi::Object::New(env);
    o.Set("name", Napi::String::New(env, h->name));
    o.Set("version", h->version);
    o.Set("segmentSize", static_cast<double>(h->segment_size));
    o.Set("nrPorts", h->nr_ports);
    o.Set("dynports", h->dynports);
    o.Set("nrReqs", h->nr_reqs);
    o.Set("heapSize", static_cast<double>(h->heap_size));
    o.Set("pageShift", h->page_shift);
    o.Set("portsOff", static_cast<double>(h->ports_off));
    o.Set("reqsOff", static_cast<double>(h->reqs_off));
    o.Set("heapOff", static_cast<double>(h->heap_off));
    o.Set("portSize", h->port_size);
    o.Set("reqSize", h->req_size);
    o.Set("reqRqOff", static_cast<double>(offsetof(xseg::Port, rq)));
    o.Set("reqOpOff", static_cast<double>(offsetof(xseg::Req, op)));
    return o;
  }

  static Napi::Object Recovery(Napi::Env env, uint32_t port, const xseg::Recovered& r) {
    Napi::Object o = Napi::Object::New(env);
    o.Set("port", port);
    o.Set("failed", r.failed);
    o.Set("freed", r.freed);
    return o;
  }

  Napi::Value Bind(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    GUARD_BEGIN
    uint32_t n = info[0].As<Napi::Number>().Uint32Value();
    xseg::Recovered r;
    S(env).bind(n, false, &r);
    return Recovery(env, n, r);
    GUARD_END(env)
  }

  Napi::Value BindDynamic(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    GUARD_BEGIN
    xseg::Recovered r;
    uint32_t n = S(env).bind_dynamic(&r);
    return Recovery(env, n, r);
    GUARD_END(env)
  }

  Napi::Value Leave(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    GUARD_BEGIN
    uint32_t n = info[0].As<Napi::Number>().Uint32Value();
    auto it = waiters_.find(n);
    if (it != waiters_.end()) {
      it->second->drop();
      waiters_.erase(it);
    }
    S(env).leave(n);
    return env.Undefined();
    GUARD_END(env)
  }

  static double Handle(uint32_t idx, uint32_t gen) { return double(idx) * 4294967296.0 + double(gen); }

  xseg::Req* FromHandle(Napi::Env env, Napi::Value v, uint32_t* idx) {
    double h = v.As<Napi::Number>().DoubleValue();
    if (!(h >= 0) || h > 9007199254740991.0) throw_js(env, Error{"EINVAL", "bad request handle", false});
    uint64_t u = static_cast<uint64_t>(h);
    *idx = static_cast<uint32_t>(u >> 32);
    xseg::Req* r = S(env).req(*idx);
    if (r->gen != static_cast<uint32_t>(u)) throw_js(env, Error{"EINVAL", "stale request handle (already released)", false});
    return r;
  }

  // Fill the routing fields. args: src, dst, op, flags, offset, size, target
  void Fill(const Napi::CallbackInfo& info, xseg::Req* r, int at) {
    r->dst = info[at].As<Napi::Number>().Uint32Value();
    r->op = info[at + 1].As<Napi::Number>().Uint32Value();
    r->flags = info[at + 2].As<Napi::Number>().Uint32Value();
    r->offset = static_cast<uint64_t>(info[at + 3].As<Napi::Number>().DoubleValue());
    r->size = static_cast<uint64_t>(info[at + 4].As<Napi::Number>().DoubleValue());
    std::string t = info[at + 5].As<Napi::String>();
    if (t.size() > xseg::MAX_TARGET) throw_js(info.Env(), Error{"EINVAL", "target longer than 256 bytes", false});
    memcpy(r->target, t.data(), t.size());
    r->targetlen = static_cast<uint32_t>(t.size());
  }

  // submit(src, dst, op, flags, offset, size, target, data|null, reserve) -> handle
  Napi::Value Submit(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    GUARD_BEGIN
    Seg& s = S(env);
    uint32_t src = info[0].As<Napi::Number>().Uint32Value();
    uint32_t idx = s.get_request(src);
    try {
      xseg::Req* r = s.req(idx);
      Fill(info, r, 1);
      uint64_t datalen = static_cast<uint64_t>(info[8].As<Napi::Number>().DoubleValue());
      s.prep(idx, datalen);
      if (info[7].IsBuffer()) {
        auto b = info[7].As<Napi::Buffer<uint8_t>>();
        uint64_t len;
        uint8_t* dst = s.payload(r, &len);
        if (b.Length() > 0 && dst != b.Data()) memcpy(dst, b.Data(), b.Length() < len ? b.Length() : len);
      }
      uint32_t gen = r->gen;
      s.submit(idx);
      Submitted(src);
      return Napi::Number::New(env, Handle(idx, gen));
    } catch (...) {
      try {
        s.put_request(src, idx);
      } catch (...) {
      }
      throw;
    }
    GUARD_END(env)
  }

  // Request data crosses as (offset, length) into the heap; JS slices one external ArrayBuffer
  // over the whole heap (see HeapBuffer). Creating an external Buffer per request would make V8
  // count every one as new external memory and run a full GC every few megabytes.
  void SetData(Napi::Object o, uint8_t* p, uint64_t len) {
    o.Set("dataOff", p == nullptr ? 0.0 : static_cast<double>(p - seg_->heap()));
    o.Set("dataLen", static_cast<double>(p == nullptr ? 0 : len));
  }

  // heapBuffer() -> ArrayBuffer over the heap; it keeps the mapping alive while referenced.
  Napi::Value HeapBuffer(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Seg& s = S(env);
    auto* keep = new std::shared_ptr<xseg::Mapping>(seg_->mapping());
    return Napi::ArrayBuffer::New(env, s.heap(), s.hdr()->heap_size,
                                  [](Napi::Env, void*, std::shared_ptr<xseg::Mapping>* k) { delete k; }, keep);
  }

  // prepare(src, datalen) -> [handle, Buffer]: data to fill in place before submitPrepared.
  Napi::Value Prepare(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    GUARD_BEGIN
    Seg& s = S(env);
    uint32_t src = info[0].As<Napi::Number>().Uint32Value();
    uint64_t datalen = static_cast<uint64_t>(info[1].As<Napi::Number>().DoubleValue());
    uint32_t idx = s.get_request(src);
    try {
      s.prep(idx, datalen);
    } catch (...) {
      s.put_request(src, idx);
      throw;
    }
    xseg::Req* r = s.req(idx);
    uint64_t len;
    uint8_t* p = s.payload(r, &len);
    Napi::Object o = Napi::Object::New(env);
    o.Set("handle", Napi::Number::New(env, Handle(idx, r->gen)));
    SetData(o, p, len);
    return o;
    GUARD_END(env)
  }

  // submitPrepared(handle, dst, op, flags, offset, size, target)
  Napi::Value SubmitPrepared(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    GUARD_BEGIN
    uint32_t idx;
    xseg::Req* r = FromHandle(env, info[0], &idx);
    if (r->loc != xseg::LOC_HELD) throw_js(env, Error{"EINVAL", "request already submitted", false});
    Fill(info, r, 1);
    uint32_t src = r->src;  // read before the request leaves our hands
    S(env).submit(idx);
    Submitted(src);
    return env.Undefined();
    GUARD_END(env)
  }

  Napi::Object ReqObject(Napi::Env env, uint32_t idx, xseg::Req* r, bool with_data) {
    Napi::Object o = Napi::Object::New(env);
    o.Set("handle", Handle(idx, r->gen));
    o.Set("op", r->op);
    o.Set("flags", r->flags);
    o.Set("state", r->state);
    o.Set("offset", static_cast<double>(r->offset));
    o.Set("size", static_cast<double>(r->size));
    o.Set("serviced", static_cast<double>(r->serviced));
    o.Set("src", r->src);
    o.Set("dst", r->dst);
    uint32_t tl = r->targetlen <= xseg::MAX_TARGET ? r->targetlen : 0;
    o.Set("target", Napi::String::New(env, r->target, tl));
    if (with_data) {
      uint64_t len;
      uint8_t* p = seg_->payload(r, &len);
      SetData(o, p, len);
    }
    return o;
  }

  static void Errors(Napi::Env env, Napi::Value arr, const std::vector<Error>& errs) {
    if (!arr.IsArray()) return;
    Napi::Array a = arr.As<Napi::Array>();
    for (const Error& e : errs) {
      Napi::Object o = Napi::Object::New(env);
      o.Set("code", e.code);
      o.Set("message", e.message);
      a.Set(a.Length(), o);
    }
  }

  // The hot path hands a request's numbers over in a Float64Array shared with JS (set once with
  // setScratch) and returns only the target string: building a 12-property object through
  // Node-API cost ~2 µs per request, a good part of a round trip. Layout (see native.ts):
  // handle, op, flags, state, offset, size, serviced, src, dst, dataOff, dataLen.
  Napi::Value SetScratch(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    auto a = info[0].As<Napi::Float64Array>();
    if (a.ElementLength() < kScratch) throw Napi::RangeError::New(env, "scratch too small");
    scratch_ref_ = Napi::Persistent(a);
    scratch_ = a.Data();
    return env.Undefined();
  }

  void FillScratch(uint32_t idx, xseg::Req* r) {
    uint64_t len;
    uint8_t* p = seg_->payload(r, &len);  // throws on corrupt data
    double* o = scratch_;
    o[0] = Handle(idx, r->gen);
    o[1] = r->op;
    o[2] = r->flags;
    o[3] = r->state;
    o[4] = static_cast<double>(r->offset);
    o[5] = static_cast<double>(r->size);
    o[6] = static_cast<double>(r->serviced);
    o[7] = r->src;
    o[8] = r->dst;
    o[9] = p == nullptr ? 0.0 : static_cast<double>(p - seg_->heap());
    o[10] = p == nullptr ? 0.0 : static_cast<double>(len);
  }

  Napi::String Target(Napi::Env env, xseg::Req* r) {
    uint32_t tl = r->targetlen <= xseg::MAX_TARGET ? r->targetlen : 0;
    return Napi::String::New(env, r->target, tl);
  }

  // acceptFast(port, errors[]) -> target (numbers in the scratch array) | null
  Napi::Value AcceptFast(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    GUARD_BEGIN
    if (scratch_ == nullptr) throw_js(env, Error{"EINVAL", "setScratch first", false});
    uint32_t n = info[0].As<Napi::Number>().Uint32Value();
    std::vector<Error> errs;
    uint32_t idx = S(env).accept(n, &errs);
    Errors(env, info[1], errs);
    if (idx == xseg::NONE) return env.Null();
    xseg::Req* r = seg_->req(idx);
    FillScratch(idx, r);
    return Target(env, r);
    GUARD_END(env)
  }

  // receiveFast(port, errors[]) -> target (numbers in the scratch array) | null; a reply whose
  // data failed a check comes as receive() returns it (an object with `corrupt`).
  Napi::Value ReceiveFast(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    GUARD_BEGIN
    if (scratch_ == nullptr) throw_js(env, Error{"EINVAL", "setScratch first", false});
    uint32_t n = info[0].As<Napi::Number>().Uint32Value();
    std::vector<Error> errs;
    uint32_t idx = S(env).receive(n, &errs);
    Errors(env, info[1], errs);
    if (idx == xseg::NONE) return env.Null();
    auto w = waiters_.find(n);
    if (w != waiters_.end() && w->second->outstanding > 0) w->second->outstanding--;
    xseg::Req* r = seg_->req(idx);
    try {
      FillScratch(idx, r);
      return Target(env, r);
    } catch (const Error& e) {
      Napi::Object o = ReqObject(env, idx, r, false);
      o.Set("state", 0x2);
      o.Set("corrupt", e.message);
      o.Set("dataOff", 0);
      o.Set("dataLen", 0);
      return o;
    }
    GUARD_END(env)
  }

  // accept(port, errors[]) -> request | null
  Napi::Value Accept(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    GUARD_BEGIN
    uint32_t n = info[0].As<Napi::Number>().Uint32Value();
    std::vector<Error> errs;
    uint32_t idx = S(env).accept(n, &errs);
    Errors(env, info[1], errs);
    if (idx == xseg::NONE) return env.Null();
    return ReqObject(env, idx, seg_->req(idx), true);
    GUARD_END(env)
  }

  // respond(port, handle, state, serviced, data|null)
  Napi::Value Respond(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    GUARD_BEGIN
    Seg& s = S(env);
    uint32_t n = info[0].As<Napi::Number>().Uint32Value();
    uint32_t idx;
    xseg::Req* r = FromHandle(env, info[1], &idx);
    if (r->loc != xseg::LOC_ACCEPTED || r->loc_port != n)
      throw_js(env, Error{"EINVAL", "request not accepted by this port (answered twice?)", false});
    r->state = info[2].As<Napi::Number>().Uint32Value();
    r->serviced = static_cast<uint64_t>(info[3].As<Napi::Number>().DoubleValue());
    if (info[4].IsBuffer()) {
      auto b = info[4].As<Napi::Buffer<uint8_t>>();
      uint64_t len;
      uint8_t* cur = s.payload(r, &len);
      if (cur != b.Data() || b.Length() > r->data_cap) {
        if (b.Length() > r->data_cap) {
          s.prep(idx, b.Length());
          cur = s.payload(r, &len);
        }
        if (b.Length() > 0) memmove(cur, b.Data(), b.Length());
      }
      r->datalen = b.Length();
    }
    s.respond(n, idx);
    return env.Undefined();
    GUARD_END(env)
  }

  // receive(port, errors[]) -> reply | null
  Napi::Value Receive(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    GUARD_BEGIN
    uint32_t n = info[0].As<Napi::Number>().Uint32Value();
    std::vector<Error> errs;
    uint32_t idx = S(env).receive(n, &errs);
    Errors(env, info[1], errs);
    if (idx == xseg::NONE) return env.Null();
    auto w = waiters_.find(n);
    if (w != waiters_.end() && w->second->outstanding > 0) w->second->outstanding--;
    xseg::Req* r = seg_->req(idx);
    try {
      return ReqObject(env, idx, r, true);
    } catch (const Error& e) {
      // The reply's bytes were damaged: give the sender a failure, never the bad data.
      Napi::Object o = ReqObject(env, idx, r, false);
      o.Set("state", 0x2);
      o.Set("corrupt", e.message);
      o.Set("dataOff", 0);
      o.Set("dataLen", 0);
      return o;
    }
    GUARD_END(env)
  }

  // release(port, handle): give a received reply (or an unsent prepared request) back.
  Napi::Value Release(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    GUARD_BEGIN
    uint32_t n = info[0].As<Napi::Number>().Uint32Value();
    uint32_t idx;
    FromHandle(env, info[1], &idx);
    S(env).put_request(n, idx);
    return env.Undefined();
    GUARD_END(env)
  }

  Napi::Value StartWaiter(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    GUARD_BEGIN
    uint32_t n = info[0].As<Napi::Number>().Uint32Value();
    S(env).port(n);
    if (waiters_.count(n)) return env.Undefined();
    auto* w = new Waiter();
    w->seg = seg_;
    w->port = n;
    try {
      w->start(env, info[1]);
    } catch (...) {
      delete w;  // open_doorbell failed before any handle was initialised
      throw;
    }
    waiters_[n] = w;
    return env.Undefined();
    GUARD_END(env)
  }

  Napi::Value StopWaiter(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    uint32_t n = info[0].As<Napi::Number>().Uint32Value();
    auto it = waiters_.find(n);
    if (it != waiters_.end()) {
      it->second->drop();
      waiters_.erase(it);
    }
    return env.Undefined();
  }

  Napi::Value RefWaiter(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    uint32_t n = info[0].As<Napi::Number>().Uint32Value();
    auto it = waiters_.find(n);
    if (it != waiters_.end()) {
      it->second->set_ref(info[1].ToBoolean());
    }
    return env.Undefined();
  }

  // setSpin(port, maxUs, lingerUs): the most a port may spin per loop turn for replies it has
  // due, and for the next request after serving (0: never).
  Napi::Value SetSpin(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    auto it = waiters_.find(info[0].As<Napi::Number>().Uint32Value());
    if (it != waiters_.end()) {
      it->second->spin_max_us = std::max(0.0, info[1].As<Napi::Number>().DoubleValue());
      it->second->linger_max_us = std::max(0.0, info[2].As<Napi::Number>().DoubleValue());
    }
    return env.Undefined();
  }

  // waiterStats(port) -> counters (see NativeWaiterStats in native.ts) | null
  Napi::Value WaiterStats(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    auto it = waiters_.find(info[0].As<Napi::Number>().Uint32Value());
    if (it == waiters_.end()) return env.Null();
    Waiter* w = it->second;
    Napi::Object o = Napi::Object::New(env);
    o.Set("outstanding", w->outstanding);
    o.Set("spins", w->reply_spin.spins);
    o.Set("hits", w->reply_spin.hits);
    o.Set("spunUs", w->reply_spin.spun_us);
    o.Set("avgHitUs", w->reply_spin.avg);
    o.Set("lingers", w->linger.spins);
    o.Set("lingerHits", w->linger.hits);
    o.Set("lingerUs", w->linger.spun_us);
    o.Set("contended", w->reply_spin.contended + w->linger.contended);
    o.Set("wakes", w->wakes);
    o.Set("spinMaxUs", w->spin_max_us);
    o.Set("lingerMaxUs", w->linger_max_us);
    o.Set("armed", __atomic_load_n(&w->p->waiters, __ATOMIC_SEQ_CST) != 0);
    return o;
  }

  // Test hook: the port spins its whole budget (spinUs / lingerUs) every time, so a test can
  // catch it mid-spin.
  Napi::Value DebugFixedSpin(const Napi::CallbackInfo& info) {
    auto it = waiters_.find(info[0].As<Napi::Number>().Uint32Value());
    if (it != waiters_.end()) it->second->fixed_spin = info[1].ToBoolean();
    return info.Env().Undefined();
  }

  void Submitted(uint32_t src) {
    auto it = waiters_.find(src);
    if (it != waiters_.end()) it->second->outstanding++;
  }

  Napi::Value Report(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    GUARD_BEGIN
    Seg& s = S(env);
    xseg::Header* h = s.hdr();
    Napi::Object o = Napi::Object::New(env);
    o.Set("name", Napi::String::New(env, h->name));
    o.Set("segmentSize", static_cast<double>(h->segment_size));
    o.Set("nrPorts", h->nr_ports);
    o.Set("dynports", h->dynports);
    Napi::Object heap = Napi::Object::New(env);
    heap.Set("size", static_cast<double>(h->heap_size));
    try {
      auto st = s.heap_stats();
      heap.Set("used", static_cast<double>(st.used));
      heap.Set("free", static_cast<double>(st.free));
      heap.Set("usedChunks", static_cast<double>(st.used_chunks));
      heap.Set("freeChunks", static_cast<double>(st.free_chunks));
      heap.Set("largestFree", static_cast<double>(st.largest_free));
    } catch (const Error& e) {
      heap.Set("error", e.message);
    }
    o.Set("heap", heap);
    // requests by location
    uint32_t counts[8] = {0};
    uint32_t bad = 0;
    for (uint32_t i = 0; i < h->nr_reqs; i++) {
      auto* r = reinterpret_cast<xseg::Req*>(s.mapping()->base + h->reqs_off + uint64_t(i) * sizeof(xseg::Req));
      if (r->magic != xseg::REQ_MAGIC || r->loc < 1 || r->loc > 6) bad++;
      else counts[r->loc]++;
    }
    Napi::Object reqs = Napi::Object::New(env);
    reqs.Set("total", h->nr_reqs);
    reqs.Set("free", counts[xseg::LOC_POOL] + counts[xseg::LOC_FQ]);
    reqs.Set("held", counts[xseg::LOC_HELD]);
    reqs.Set("queued", counts[xseg::LOC_RQ]);
    reqs.Set("accepted", counts[xseg::LOC_ACCEPTED]);
    reqs.Set("replies", counts[xseg::LOC_PQ]);
    reqs.Set("corrupt", bad);
    o.Set("requests", reqs);
    auto lockinfo = [&](const char* name, xseg::Lock* l) {
      Napi::Object x = Napi::Object::New(env);
      x.Set("name", name);
      x.Set("ownerPid", l->owner_pid);
      x.Set("ownerAlive", Seg::pid_alive(l->owner_pid));
      return x;
    };
    Napi::Array locks = Napi::Array::New(env);
    locks.Set(0u, lockinfo("segment", &h->seg_lock));
    locks.Set(1u, lockinfo("heap", &h->heap_lock));
    Napi::Array ports = Napi::Array::New(env);
    uint32_t k = 0;
    for (uint32_t i = 0; i < h->nr_ports; i++) {
      xseg::Port* p = s.port(i);
      if (p->lock.owner_pid != 0) locks.Set(locks.Length(), lockinfo(("port " + std::to_string(i)).c_str(), &p->lock));
      if (p->binds == 0 && p->rq.count == 0) continue;
      Napi::Object x = Napi::Object::New(env);
      x.Set("port", i);
      x.Set("dynamic", i >= h->dynports);
      x.Set("bound", (p->flags & xseg::PF_BOUND) != 0);
      x.Set("ownerPid", p->owner_pid);
      x.Set("ownerAlive", Seg::pid_alive(p->owner_pid));
      x.Set("binds", static_cast<double>(p->binds));
      x.Set("allocReqs", p->alloc_reqs);
      x.Set("requestQueue", p->rq.count);
      x.Set("replyQueue", p->pq.count);
      x.Set("freeQueue", p->fq.count);
      x.Set("lockOwnerPid", p->lock.owner_pid);
      x.Set("armed", __atomic_load_n(&p->waiters, __ATOMIC_SEQ_CST) != 0);
      ports.Set(k++, x);
    }
    o.Set("locks", locks);
    o.Set("ports", ports);
    return o;
    GUARD_END(env)
  }

  Napi::Value RecoverPort(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    GUARD_BEGIN
    uint32_t n = info[0].As<Napi::Number>().Uint32Value();
    return Recovery(env, n, S(env).recover_port(n, info[1].ToBoolean()));
    GUARD_END(env)
  }

  Napi::Value RecoverLocks(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    GUARD_BEGIN
    return Napi::Number::New(env, S(env).recover_locks(info[0].As<Napi::Number>().Uint32Value()));
    GUARD_END(env)
  }

  Napi::Value Close(const Napi::CallbackInfo& info) {
    StopAll();
    seg_.reset();  // the mapping lives on while external Buffers still reference it
    return info.Env().Undefined();
  }

  // Test hook: take a lock and never release it (the caller is about to be SIGKILLed).
  Napi::Value DebugHoldLock(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    GUARD_BEGIN
    Seg& s = S(env);
    std::string which = info[0].As<Napi::String>();
    if (which == "heap") s.lock(&s.hdr()->heap_lock);
    else if (which == "segment") s.lock(&s.hdr()->seg_lock);
    else s.lock(&s.port(info[1].As<Napi::Number>().Uint32Value())->lock);
    return env.Undefined();
    GUARD_END(env)
  }
};

Napi::FunctionReference* NativeSegment::ctor = nullptr;

Napi::Object InitAll(Napi::Env env, Napi::Object exports) {
  Napi::Function f = NativeSegment::Init(env);
  NativeSegment::ctor = new Napi::FunctionReference(Napi::Persistent(f));
  exports.Set("NativeSegment", f);
  exports.Set("VERSION", xseg::VERSION);
  return exports;
}

}  // namespace

NODE_API_MODULE(xseg, InitAll)
