// The segment for JavaScript: one ObjectWrap, `NativeSegment`, over the segment core
// (segment.cc), with a waiter (waiter.h) per port it serves. The TypeScript facade
// (src/segment/) checks arguments and keeps this object behind a Symbol; the class itself is
// defined once per environment (addon.h).
#include "addon.h"  // first: it configures napi.h

#include <algorithm>
#include <cstddef>
#include <cstring>
#include <map>

#include "segment.h"
#include "waiter.h"

namespace xseg {

namespace {

[[noreturn]] void throw_js(Napi::Env env, const Error& e) {
  Napi::Error err = Napi::Error::New(env, e.message);
  err.Set("code", Napi::String::New(env, e.code));
  if (e.corrupt) err.Set("corrupt", Napi::Boolean::New(env, true));
  throw err;
}

uint32_t U32(const Napi::Value& v) { return v.As<Napi::Number>().Uint32Value(); }
double Num(const Napi::Value& v) { return v.As<Napi::Number>().DoubleValue(); }

// Sets these number properties on `o`, in this order; returns `o`.
Napi::Object SetNumbers(Napi::Object o, std::initializer_list<std::pair<const char*, double>> fields) {
  for (const auto& [name, v] : fields) o.Set(name, v);
  return o;
}

class NativeSegment : public Napi::ObjectWrap<NativeSegment> {
 public:
  static Napi::Function Define(Napi::Env env) {
    using W = NativeSegment;
    return DefineClass(env, "NativeSegment",
                       {
                           StaticMethod<&W::JsStatic<&W::Create>>("create"),
                           StaticMethod<&W::JsStatic<&W::Join>>("join"),
                           StaticMethod<&W::JsStatic<&W::Destroy>>("destroy"),
                           StaticMethod<&W::JsStatic<&W::Share>>("share"),
                           InstanceMethod<&W::Js<&W::Geometry>>("geometry"),
                           InstanceMethod<&W::Js<&W::Bind>>("bind"),
                           InstanceMethod<&W::Js<&W::BindDynamic>>("bindDynamic"),
                           InstanceMethod<&W::Js<&W::Leave>>("leave"),
                           InstanceMethod<&W::Js<&W::Submit>>("submit"),
                           InstanceMethod<&W::Js<&W::Prepare>>("prepare"),
                           InstanceMethod<&W::Js<&W::SubmitPrepared>>("submitPrepared"),
                           InstanceMethod<&W::Js<&W::Accept>>("accept"),
                           InstanceMethod<&W::Js<&W::AcceptFast>>("acceptFast"),
                           InstanceMethod<&W::Js<&W::ReceiveFast>>("receiveFast"),
                           InstanceMethod<&W::Js<&W::SetScratch>>("setScratch"),
                           InstanceMethod<&W::Js<&W::Respond>>("respond"),
                           InstanceMethod<&W::Js<&W::Receive>>("receive"),
                           InstanceMethod<&W::Js<&W::Release>>("release"),
                           InstanceMethod<&W::Js<&W::StartWaiter>>("startWaiter"),
                           InstanceMethod<&W::Js<&W::StopWaiter>>("stopWaiter"),
                           InstanceMethod<&W::Js<&W::RefWaiter>>("refWaiter"),
                           InstanceMethod<&W::Js<&W::SetSpin>>("setSpin"),
                           InstanceMethod<&W::Js<&W::WaiterStats>>("waiterStats"),
                           InstanceMethod<&W::Js<&W::DebugFixedSpin>>("debugFixedSpin"),
                           InstanceMethod<&W::Js<&W::Report>>("report"),
                           InstanceMethod<&W::Js<&W::RecoverPort>>("recoverPort"),
                           InstanceMethod<&W::Js<&W::RecoverLocks>>("recoverLocks"),
                           InstanceMethod<&W::Js<&W::Close>>("close"),
                           InstanceMethod<&W::Js<&W::DebugHoldLock>>("debugHoldLock"),
                           InstanceMethod<&W::Js<&W::HeapBuffer>>("heapBuffer"),
                       });
  }

  NativeSegment(const Napi::CallbackInfo& info) : Napi::ObjectWrap<NativeSegment>(info) {
    if (info.Length() != 1 || !info[0].IsExternal()) throw Napi::TypeError::New(info.Env(), "use create() or join()");
    auto* m = info[0].As<Napi::External<std::shared_ptr<Mapping>>>().Data();
    seg_ = std::make_shared<Seg>(*m);
  }

  ~NativeSegment() override { StopAll(); }

 private:
  std::shared_ptr<Seg> seg_;
  std::map<uint32_t, Waiter*> waiters_;
  static constexpr size_t kScratch = 11;
  Napi::Reference<Napi::Float64Array> scratch_ref_;
  double* scratch_ = nullptr;

  Seg& S(Napi::Env env) {
    if (!seg_) fail("ECLOSED", "the segment was closed");
    return *seg_;
  }

  // Every method runs through one of these: a segment error (xseg::Error, thrown by the core
  // or by fail()) becomes a JS Error with its `code` (and `corrupt`).
  template <Napi::Value (NativeSegment::*M)(const Napi::CallbackInfo&)>
  Napi::Value Js(const Napi::CallbackInfo& info) {
    try {
      return (this->*M)(info);
    } catch (const Error& e) {
      throw_js(info.Env(), e);
    }
  }

  template <Napi::Value (*F)(const Napi::CallbackInfo&)>
  static Napi::Value JsStatic(const Napi::CallbackInfo& info) {
    try {
      return F(info);
    } catch (const Error& e) {
      throw_js(info.Env(), e);
    }
  }

  // ---------------------------------------------------------------------------------------------
  // Making, joining, destroying

  // A new NativeSegment over `m`, made by this environment's class.
  static Napi::Value Wrap(Napi::Env env, std::shared_ptr<Mapping> m) {
    auto* holder = new std::shared_ptr<Mapping>(std::move(m));
    auto ext = Napi::External<std::shared_ptr<Mapping>>::New(
        env, holder, [](Napi::Env, std::shared_ptr<Mapping>* h) { delete h; });
    return XsegAddon::segment_class(env).New({ext});
  }

  static Napi::Value Create(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    xseg::Geometry g;
    std::string name = info[0].As<Napi::String>();
    g.nr_ports = U32(info[1]);
    g.dynports = U32(info[2]);
    g.heap_size = static_cast<uint64_t>(Num(info[3]));
    g.page_shift = U32(info[4]);
    g.nr_reqs = U32(info[5]);
    return Wrap(env, Seg::create(name, g));
  }

  static Napi::Value Join(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    return Wrap(env, Seg::join(info[0].As<Napi::String>()));
  }

  static Napi::Value Destroy(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Seg::destroy(info[0].As<Napi::String>());
    return env.Undefined();
  }

  static Napi::Value Share(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Seg::share(info[0].As<Napi::String>(), static_cast<int64_t>(Num(info[1])), static_cast<int64_t>(Num(info[2])));
    return env.Undefined();
  }

  Napi::Value Geometry(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Header* h = S(env).hdr();
    Napi::Object o = Napi::Object::New(env);
    o.Set("name", Napi::String::New(env, h->name));
    return SetNumbers(o, {
        {"version", h->version},
        {"segmentSize", double(h->segment_size)},
        {"nrPorts", h->nr_ports},
        {"dynports", h->dynports},
        {"nrReqs", h->nr_reqs},
        {"heapSize", double(h->heap_size)},
        {"pageShift", h->page_shift},
        {"portsOff", double(h->ports_off)},
        {"reqsOff", double(h->reqs_off)},
        {"heapOff", double(h->heap_off)},
        {"portSize", h->port_size},
        {"reqSize", h->req_size},
        {"reqRqOff", double(offsetof(Port, rq))},
        {"reqOpOff", double(offsetof(Req, op))},
    });
  }

  Napi::Value Close(const Napi::CallbackInfo& info) {
    StopAll();
    seg_.reset();  // the mapping lives on while external Buffers still reference it
    return info.Env().Undefined();
  }

  // ---------------------------------------------------------------------------------------------
  // Ports

  static Napi::Object Recovery(Napi::Env env, uint32_t port, const Recovered& r) {
    return SetNumbers(Napi::Object::New(env), {{"port", port}, {"failed", r.failed}, {"freed", r.freed}});
  }

  Napi::Value Bind(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    uint32_t n = U32(info[0]);
    Recovered r;
    S(env).bind(n, false, &r);
    return Recovery(env, n, r);
  }

  Napi::Value BindDynamic(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Recovered r;
    uint32_t n = S(env).bind_dynamic(&r);
    return Recovery(env, n, r);
  }

  Napi::Value Leave(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    uint32_t n = U32(info[0]);
    DropWaiter(n);
    S(env).leave(n);
    return env.Undefined();
  }

  Napi::Value RecoverPort(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    uint32_t n = U32(info[0]);
    return Recovery(env, n, S(env).recover_port(n, info[1].ToBoolean()));
  }

  Napi::Value RecoverLocks(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    return Napi::Number::New(env, S(env).recover_locks(U32(info[0])));
  }

  // ---------------------------------------------------------------------------------------------
  // Requests

  static double Handle(uint32_t idx, uint32_t gen) { return double(idx) * 4294967296.0 + double(gen); }

  Req* FromHandle(Napi::Env env, Napi::Value v, uint32_t* idx) {
    double h = Num(v);
    if (!(h >= 0) || h > 9007199254740991.0) fail("EINVAL", "bad request handle");
    uint64_t u = static_cast<uint64_t>(h);
    *idx = static_cast<uint32_t>(u >> 32);
    Req* r = S(env).req(*idx);
    if (r->gen != static_cast<uint32_t>(u)) fail("EINVAL", "stale request handle (already released)");
    return r;
  }

  // Fill the routing fields. args from `at`: dst, op, flags, offset, size, target
  void Fill(const Napi::CallbackInfo& info, Req* r, int at) {
    r->dst = U32(info[at]);
    r->op = U32(info[at + 1]);
    r->flags = U32(info[at + 2]);
    r->offset = static_cast<uint64_t>(Num(info[at + 3]));
    r->size = static_cast<uint64_t>(Num(info[at + 4]));
    std::string t = info[at + 5].As<Napi::String>();
    if (t.size() > MAX_TARGET) fail("EINVAL", "target longer than 256 bytes");
    memcpy(r->target, t.data(), t.size());
    r->targetlen = static_cast<uint32_t>(t.size());
  }

  // submit(src, dst, op, flags, offset, size, target, data|null, reserve) -> handle
  Napi::Value Submit(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Seg& s = S(env);
    uint32_t src = U32(info[0]);
    uint32_t idx = s.get_request(src);
    try {
      Req* r = s.req(idx);
      Fill(info, r, 1);
      uint64_t datalen = static_cast<uint64_t>(Num(info[8]));
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
    auto* keep = new std::shared_ptr<Mapping>(seg_->mapping());
    return Napi::ArrayBuffer::New(env, s.heap(), s.hdr()->heap_size,
                                  [](Napi::Env, void*, std::shared_ptr<Mapping>* k) { delete k; }, keep);
  }

  // prepare(src, datalen) -> {handle, dataOff, dataLen}: data to fill in place before submitPrepared.
  Napi::Value Prepare(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Seg& s = S(env);
    uint32_t src = U32(info[0]);
    uint64_t datalen = static_cast<uint64_t>(Num(info[1]));
    uint32_t idx = s.get_request(src);
    try {
      s.prep(idx, datalen);
    } catch (...) {
      s.put_request(src, idx);
      throw;
    }
    Req* r = s.req(idx);
    uint64_t len;
    uint8_t* p = s.payload(r, &len);
    Napi::Object o = Napi::Object::New(env);
    o.Set("handle", Napi::Number::New(env, Handle(idx, r->gen)));
    SetData(o, p, len);
    return o;
  }

  // submitPrepared(handle, dst, op, flags, offset, size, target)
  Napi::Value SubmitPrepared(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    uint32_t idx;
    Req* r = FromHandle(env, info[0], &idx);
    if (r->loc != LOC_HELD) fail("EINVAL", "request already submitted");
    Fill(info, r, 1);
    uint32_t src = r->src;  // read before the request leaves our hands
    S(env).submit(idx);
    Submitted(src);
    return env.Undefined();
  }

  // A request as an object: the scratch array's numbers under their names, and the target.
  // Without data, its data is left unchecked and dataOff/dataLen out.
  Napi::Object ReqObject(Napi::Env env, uint32_t idx, Req* r, bool with_data) {
    static constexpr const char* kNames[kScratch] = {"handle", "op",  "flags", "state",   "offset", "size",
                                                     "serviced", "src", "dst",   "dataOff", "dataLen"};
    constexpr size_t kData = 9;  // dataOff, dataLen come after the target
    double v[kScratch];
    Numbers(idx, r, with_data, v);
    Napi::Object o = Napi::Object::New(env);
    for (size_t i = 0; i < kData; i++) o.Set(kNames[i], v[i]);
    o.Set("target", Target(env, r));
    for (size_t i = kData; with_data && i < kScratch; i++) o.Set(kNames[i], v[i]);
    return o;
  }

  static Napi::String Target(Napi::Env env, Req* r) {
    uint32_t tl = r->targetlen <= MAX_TARGET ? r->targetlen : 0;
    return Napi::String::New(env, r->target, tl);
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

  void FillScratch(uint32_t idx, Req* r) { Numbers(idx, r, true, scratch_); }

  // The numbers of request idx in the scratch layout, into o[0..kScratch). With data, its data
  // is checked first (throws when corrupt); without, dataOff and dataLen are 0.
  void Numbers(uint32_t idx, Req* r, bool with_data, double* o) {
    uint64_t len = 0;
    uint8_t* p = with_data ? seg_->payload(r, &len) : nullptr;
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

  // accept(port, errors[]) -> request | null
  // acceptFast(port, errors[]) -> target (numbers in the scratch array) | null
  // receive(port, errors[]) -> reply | null
  // receiveFast(port, errors[]) -> target (numbers in the scratch array) | null
  // Problems met on the way (corrupt entries, failed back or dropped) are appended to errors[].
  // A reply whose data failed a check comes, from either receive, as an object with `corrupt`.
  Napi::Value Accept(const Napi::CallbackInfo& info) { return Take(info, false, false); }
  Napi::Value AcceptFast(const Napi::CallbackInfo& info) { return Take(info, false, true); }
  Napi::Value Receive(const Napi::CallbackInfo& info) { return Take(info, true, false); }
  Napi::Value ReceiveFast(const Napi::CallbackInfo& info) { return Take(info, true, true); }

  Napi::Value Take(const Napi::CallbackInfo& info, bool reply, bool fast) {
    Napi::Env env = info.Env();
    if (fast && scratch_ == nullptr) fail("EINVAL", "setScratch first");
    uint32_t n = U32(info[0]);
    std::vector<Error> errs;
    Seg& s = S(env);
    uint32_t idx = reply ? s.receive(n, &errs) : s.accept(n, &errs);
    Errors(env, info[1], errs);
    if (idx == NONE) return env.Null();
    Waiter* w = reply ? FindWaiter(n) : nullptr;
    if (w != nullptr) w->received();
    Req* r = seg_->req(idx);
    try {
      if (!fast) return ReqObject(env, idx, r, true);
      FillScratch(idx, r);
      return Target(env, r);
    } catch (const Error& e) {
      if (!reply) throw;
      // The reply's bytes were damaged: give the sender a failure, never the bad data.
      Napi::Object o = ReqObject(env, idx, r, false);
      o.Set("state", 0x2);
      o.Set("corrupt", e.message);
      o.Set("dataOff", 0);
      o.Set("dataLen", 0);
      return o;
    }
  }

  // respond(port, handle, state, serviced, data|null)
  Napi::Value Respond(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Seg& s = S(env);
    uint32_t n = U32(info[0]);
    uint32_t idx;
    Req* r = FromHandle(env, info[1], &idx);
    if (r->loc != LOC_ACCEPTED || r->loc_port != n)
      fail("EINVAL", "request not accepted by this port (answered twice?)");
    r->state = U32(info[2]);
    r->serviced = static_cast<uint64_t>(Num(info[3]));
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
  }

  // release(port, handle): give a received reply (or an unsent prepared request) back.
  Napi::Value Release(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    uint32_t n = U32(info[0]);
    uint32_t idx;
    FromHandle(env, info[1], &idx);
    S(env).put_request(n, idx);
    return env.Undefined();
  }

  // ---------------------------------------------------------------------------------------------
  // Waiters: one per port served in this environment

  Waiter* FindWaiter(uint32_t n) {
    auto it = waiters_.find(n);
    return it == waiters_.end() ? nullptr : it->second;
  }

  void DropWaiter(uint32_t n) {
    auto it = waiters_.find(n);
    if (it == waiters_.end()) return;
    it->second->drop();
    waiters_.erase(it);
  }

  void StopAll() {
    for (auto& [n, w] : waiters_) w->drop();
    waiters_.clear();
  }

  void Submitted(uint32_t src) {
    if (Waiter* w = FindWaiter(src)) w->submitted();
  }

  // startWaiter(port, drain)
  Napi::Value StartWaiter(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    uint32_t n = U32(info[0]);
    S(env).port(n);
    if (waiters_.count(n) == 0) waiters_[n] = Waiter::start(env, seg_, n, info[1]);
    return env.Undefined();
  }

  Napi::Value StopWaiter(const Napi::CallbackInfo& info) {
    DropWaiter(U32(info[0]));
    return info.Env().Undefined();
  }

  // refWaiter(port, ref): whether the port's doorbell keeps the loop alive.
  Napi::Value RefWaiter(const Napi::CallbackInfo& info) {
    if (Waiter* w = FindWaiter(U32(info[0]))) w->set_ref(info[1].ToBoolean());
    return info.Env().Undefined();
  }

  // setSpin(port, maxUs, lingerUs): the most a port may spin per loop turn for replies it has
  // due, and for the next request after serving (0: never).
  Napi::Value SetSpin(const Napi::CallbackInfo& info) {
    if (Waiter* w = FindWaiter(U32(info[0]))) w->set_spin(std::max(0.0, Num(info[1])), std::max(0.0, Num(info[2])));
    return info.Env().Undefined();
  }

  // Test hook: the port spins its whole budget (spinUs / lingerUs) every time, so a test can
  // catch it mid-spin.
  Napi::Value DebugFixedSpin(const Napi::CallbackInfo& info) {
    if (Waiter* w = FindWaiter(U32(info[0]))) w->set_fixed_spin(info[1].ToBoolean());
    return info.Env().Undefined();
  }

  // waiterStats(port) -> counters (see NativeWaiterStats in native.ts) | null
  Napi::Value WaiterStats(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Waiter* w = FindWaiter(U32(info[0]));
    if (w == nullptr) return env.Null();
    xseg::WaiterStats st = w->stats();
    Napi::Object o = Napi::Object::New(env);
    o.Set("outstanding", st.outstanding);
    // spins for replies due, then lingers after serving: how many, how many found work, how long
    SetNumbers(o, {{"spins", st.spins}, {"hits", st.hits}, {"spunUs", st.spun_us}, {"avgHitUs", st.avg_hit_us}});
    SetNumbers(o, {{"lingers", st.lingers}, {"lingerHits", st.linger_hits}, {"lingerUs", st.linger_us}});
    SetNumbers(o, {{"contended", st.contended}, {"wakes", st.wakes}});
    SetNumbers(o, {{"spinMaxUs", st.spin_max_us}, {"lingerMaxUs", st.linger_max_us}});
    o.Set("armed", st.armed);
    return o;
  }

  // ---------------------------------------------------------------------------------------------
  // Diagnostics

  Napi::Value Report(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Seg& s = S(env);
    Header* h = s.hdr();
    Napi::Object o = Napi::Object::New(env);
    o.Set("name", Napi::String::New(env, h->name));
    o.Set("segmentSize", static_cast<double>(h->segment_size));
    o.Set("nrPorts", h->nr_ports);
    o.Set("dynports", h->dynports);
    o.Set("heap", HeapReport(env, s));
    o.Set("requests", RequestsReport(env, s));
    Napi::Array locks = Napi::Array::New(env);
    locks.Set(0u, LockReport(env, "segment", &h->seg_lock));
    locks.Set(1u, LockReport(env, "heap", &h->heap_lock));
    Napi::Array ports = Napi::Array::New(env);
    uint32_t k = 0;
    for (uint32_t i = 0; i < h->nr_ports; i++) {
      Port* p = s.port(i);
      if (p->lock.owner_pid != 0) locks.Set(locks.Length(), LockReport(env, "port " + std::to_string(i), &p->lock));
      if (p->binds == 0 && p->rq.count == 0) continue;
      Napi::Object x = Napi::Object::New(env);
      x.Set("port", i);
      x.Set("dynamic", i >= h->dynports);
      x.Set("bound", (p->flags & PF_BOUND) != 0);
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
  }

  static Napi::Object HeapReport(Napi::Env env, Seg& s) {
    Napi::Object heap = Napi::Object::New(env);
    heap.Set("size", static_cast<double>(s.hdr()->heap_size));
    try {
      auto st = s.heap_stats();
      SetNumbers(heap, {
          {"used", double(st.used)},
          {"free", double(st.free)},
          {"usedChunks", double(st.used_chunks)},
          {"freeChunks", double(st.free_chunks)},
          {"largestFree", double(st.largest_free)},
      });
    } catch (const Error& e) {
      heap.Set("error", e.message);
    }
    return heap;
  }

  // Requests by location.
  static Napi::Object RequestsReport(Napi::Env env, Seg& s) {
    Header* h = s.hdr();
    uint32_t counts[8] = {0};
    uint32_t bad = 0;
    for (uint32_t i = 0; i < h->nr_reqs; i++) {
      auto* r = reinterpret_cast<Req*>(s.mapping()->base + h->reqs_off + uint64_t(i) * sizeof(Req));
      if (r->magic != REQ_MAGIC || r->loc < 1 || r->loc > 6) bad++;
      else counts[r->loc]++;
    }
    return SetNumbers(Napi::Object::New(env), {
        {"total", h->nr_reqs},
        {"free", counts[LOC_POOL] + counts[LOC_FQ]},
        {"held", counts[LOC_HELD]},
        {"queued", counts[LOC_RQ]},
        {"accepted", counts[LOC_ACCEPTED]},
        {"replies", counts[LOC_PQ]},
        {"corrupt", bad},
    });
  }

  static Napi::Object LockReport(Napi::Env env, const std::string& name, Lock* l) {
    Napi::Object x = Napi::Object::New(env);
    x.Set("name", name);
    x.Set("ownerPid", l->owner_pid);
    x.Set("ownerAlive", Seg::pid_alive(l->owner_pid));
    return x;
  }

  // Test hook: take a lock and never release it (the caller is about to be SIGKILLed).
  Napi::Value DebugHoldLock(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Seg& s = S(env);
    std::string which = info[0].As<Napi::String>();
    if (which == "heap") s.lock(&s.hdr()->heap_lock);
    else if (which == "segment") s.lock(&s.hdr()->seg_lock);
    else s.lock(&s.port(U32(info[1]))->lock);
    return env.Undefined();
  }
};

}  // namespace

Napi::Function DefineNativeSegment(Napi::Env env) { return NativeSegment::Define(env); }

}  // namespace xseg
