// Node-API wrapper of the segment core (segment.cc). One ObjectWrap, `NativeSegment`; the
// TypeScript facade (src/segment/) checks arguments and keeps this object behind a Symbol.
//
// Wake-ups: one native waiter thread per port this process serves. It sleeps in FUTEX_WAIT on
// the port's shared `seq` word (no spinning, no polling) and, when the port's request or reply
// queue is non-empty, calls into JS once through a ThreadSafeFunction; JS drains everything that
// arrived (a batch) and only then does the thread go back to sleep.
#include <linux/futex.h>
#include <napi.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <climits>
#include <condition_variable>
#include <map>
#include <mutex>
#include <thread>

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

struct Waiter {
  std::shared_ptr<Seg> seg;
  uint32_t port = 0;
  std::thread th;
  Napi::ThreadSafeFunction tsfn;
  std::mutex mu;
  std::condition_variable cv;
  bool pending = false;
  std::atomic<bool> stop{false};

  bool is_pending() {
    std::lock_guard<std::mutex> lk(mu);
    return pending;
  }

  // `scheduled` is set when a JS drain is queued and cleared by that drain before it starts
  // popping, so an arrival after the drain's last look always queues another one. The thread
  // never waits for JS: it goes straight back to FUTEX_WAIT on the port's sequence word, which
  // changes only when something new is queued (so a slow JS drain cannot make it spin).
  std::atomic<bool> scheduled{false};

  void run() {
    xseg::Port* p = seg->port(port);
    Waiter* self = this;
    while (!stop.load()) {
      __atomic_add_fetch(&p->waiters, 1, __ATOMIC_SEQ_CST);
      uint32_t s = __atomic_load_n(&p->seq, __ATOMIC_SEQ_CST);
      if (seg->has_work(port) && !scheduled.exchange(true)) {
        {
          std::lock_guard<std::mutex> lk(mu);
          pending = true;
        }
        napi_status st = tsfn.NonBlockingCall([self](Napi::Env, Napi::Function fn) {
          self->scheduled.store(false);
          if (!self->stop.load()) {
            try {
              fn.Call({});
            } catch (...) {
            }
          }
          std::lock_guard<std::mutex> lk(self->mu);
          self->pending = false;
        });
        if (st != napi_ok) {
          __atomic_sub_fetch(&p->waiters, 1, __ATOMIC_SEQ_CST);
          break;
        }
      }
      if (!stop.load()) syscall(SYS_futex, &p->seq, FUTEX_WAIT, s, nullptr, nullptr, 0);
      __atomic_sub_fetch(&p->waiters, 1, __ATOMIC_SEQ_CST);
    }
  }

  // Called on the JS thread. The pending callback, if any, may still run later; it only touches
  // this Waiter, which is kept alive (leaked on purpose when a call is outstanding).
  void halt() {
    stop.store(true);
    xseg::Port* p = seg->port(port);
    __atomic_add_fetch(&p->seq, 1, __ATOMIC_SEQ_CST);
    syscall(SYS_futex, &p->seq, FUTEX_WAKE, INT_MAX, nullptr, nullptr, 0);
    {
      std::lock_guard<std::mutex> lk(mu);
      cv.notify_all();
    }
    if (th.joinable()) th.join();
    tsfn.Release();
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
            InstanceMethod("respond", &NativeSegment::Respond),
            InstanceMethod("receive", &NativeSegment::Receive),
            InstanceMethod("release", &NativeSegment::Release),
            InstanceMethod("startWaiter", &NativeSegment::StartWaiter),
            InstanceMethod("stopWaiter", &NativeSegment::StopWaiter),
            InstanceMethod("refWaiter", &NativeSegment::RefWaiter),
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

  Seg& S(Napi::Env env) {
    if (!seg_) throw_js(env, Error{"ECLOSED", "the segment was closed", false});
    return *seg_;
  }

  void StopAll() {
    for (auto& [n, w] : waiters_) {
      w->halt();
      if (!w->is_pending()) delete w;  // else leaked: a queued JS call still points at it
    }
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
      it->second->halt();
      if (!it->second->is_pending()) delete it->second;
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
    S(env).submit(idx);
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
    w->tsfn = Napi::ThreadSafeFunction::New(env, info[1].As<Napi::Function>(), "xseg-waiter", 0, 1);
    w->th = std::thread([w] { w->run(); });
    waiters_[n] = w;
    return env.Undefined();
    GUARD_END(env)
  }

  Napi::Value StopWaiter(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    uint32_t n = info[0].As<Napi::Number>().Uint32Value();
    auto it = waiters_.find(n);
    if (it != waiters_.end()) {
      it->second->halt();
      if (!it->second->is_pending()) delete it->second;
      waiters_.erase(it);
    }
    return env.Undefined();
  }

  Napi::Value RefWaiter(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    uint32_t n = info[0].As<Napi::Number>().Uint32Value();
    auto it = waiters_.find(n);
    if (it != waiters_.end()) {
      if (info[1].ToBoolean()) it->second->tsfn.Ref(env);
      else it->second->tsfn.Unref(env);
    }
    return env.Undefined();
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
