// Advisory locks (cls_lock through rados_lock_*): these librados calls block, so each runs on a
// libuv worker thread and settles a promise.
#include "common.h"

namespace archip {

namespace {
using Strings = std::vector<std::string>;
Strings Split(const std::vector<char>& buf, size_t len) {
  std::vector<std::string> out;
  size_t i = 0;
  while (i < len) {
    size_t n = strnlen(buf.data() + i, len - i);
    out.emplace_back(buf.data() + i, n);
    i += n + 1;
  }
  return out;
}
}  // namespace

// Runs `fn(io, args)`, a blocking rados_*lock* call, on a worker thread once the first `n`
// arguments (oid, name, ...) are strings and the pool is open; `call` and the oid name it in
// errors. `result` makes the promise's value (default: the call's return value).
template <typename Call>
Napi::Value Pool::LockCall(const Napi::CallbackInfo& info, size_t n, const char* usage, const char* call, Call fn,
                           PromiseWorker::Result result) {
  bool ok = true;
  for (size_t i = 0; ok && i < n; i++) ok = info[i].IsString();
  if (!Usage(info, ok, usage) || !Check(info)) return info.Env().Undefined();
  Strings a;
  for (size_t i = 0; i < n; i++) a.push_back(info[i].As<Napi::String>().Utf8Value());
  std::string what = std::string(call) + " " + a[0];
  rados_ioctx_t io = io_;
  return RunAsync(
      info.Env(), Value(), std::move(what), [io, a = std::move(a), fn]() -> int { return fn(io, a); },
      std::move(result));
}

// lockExclusive(oid, name, cookie, description, renew) -> Promise<void>
// Rejects with EBUSY (held by another client/cookie) or EEXIST (held by us, renew false).
Napi::Value Pool::LockExclusive(const Napi::CallbackInfo& info) {
  uint8_t flags = info.Length() > 4 && info[4].ToBoolean().Value() ? LIBRADOS_LOCK_FLAG_MAY_RENEW : 0;
  return LockCall(info, 4, "lockExclusive(oid, name, cookie, description, renew)", "rados_lock_exclusive",
                  [flags](rados_ioctx_t io, const Strings& a) {
                    return rados_lock_exclusive(io, a[0].c_str(), a[1].c_str(), a[2].c_str(), a[3].c_str(),
                                                nullptr, flags);
                  });
}

// unlock(oid, name, cookie) -> Promise<void>; ENOENT when this client/cookie does not hold it.
Napi::Value Pool::Unlock(const Napi::CallbackInfo& info) {
  return LockCall(info, 3, "unlock(oid, name, cookie)", "rados_unlock", [](rados_ioctx_t io, const Strings& a) {
    return rados_unlock(io, a[0].c_str(), a[1].c_str(), a[2].c_str());
  });
}

// listLockers(oid, name) -> Promise<{exclusive, tag, lockers: [{client, cookie, address}]}>
// A missing lock object lists no lockers.
Napi::Value Pool::ListLockers(const Napi::CallbackInfo& info) {
  struct Out {
    int exclusive = 0;
    std::vector<char> tag, clients, cookies, addrs;
    size_t tagLen = 0, clientsLen = 0, cookiesLen = 0, addrsLen = 0;
    ssize_t n = 0;
  };
  auto out = std::make_shared<Out>();
  return LockCall(
      info, 2, "listLockers(oid, name)", "rados_list_lockers",
      [out](rados_ioctx_t io, const Strings& a) -> int {
        size_t cap = 256;
        for (int attempt = 0; attempt < 8; attempt++) {
          out->tag.assign(cap, 0);
          out->clients.assign(cap, 0);
          out->cookies.assign(cap, 0);
          out->addrs.assign(cap, 0);
          out->tagLen = out->clientsLen = out->cookiesLen = out->addrsLen = cap;
          ssize_t r = rados_list_lockers(io, a[0].c_str(), a[1].c_str(), &out->exclusive,
                                         out->tag.data(), &out->tagLen, out->clients.data(),
                                         &out->clientsLen, out->cookies.data(), &out->cookiesLen,
                                         out->addrs.data(), &out->addrsLen);
          if (r == -ERANGE) {
            cap = std::max({out->tagLen, out->clientsLen, out->cookiesLen, out->addrsLen, cap * 2});
            continue;
          }
          if (r == -ENOENT) {
            out->n = 0;
            out->tagLen = out->clientsLen = out->cookiesLen = out->addrsLen = 0;
            return 0;
          }
          if (r < 0) return static_cast<int>(r);
          out->n = r;
          return 0;
        }
        return -ERANGE;
      },
      [out](Napi::Env env) -> Napi::Value {
        Napi::Object o = Napi::Object::New(env);
        o.Set("exclusive", Napi::Boolean::New(env, out->exclusive != 0));
        o.Set("tag", Napi::String::New(env, std::string(out->tag.data(), strnlen(out->tag.data(), out->tagLen))));
        auto clients = Split(out->clients, out->n > 0 ? out->clientsLen : 0);
        auto cookies = Split(out->cookies, out->n > 0 ? out->cookiesLen : 0);
        auto addrs = Split(out->addrs, out->n > 0 ? out->addrsLen : 0);
        Napi::Array arr = Napi::Array::New(env);
        for (ssize_t i = 0; i < out->n; i++) {
          Napi::Object l = Napi::Object::New(env);
          size_t k = static_cast<size_t>(i);
          l.Set("client", k < clients.size() ? clients[k] : std::string());
          l.Set("cookie", k < cookies.size() ? cookies[k] : std::string());
          l.Set("address", k < addrs.size() ? addrs[k] : std::string());
          arr.Set(static_cast<uint32_t>(i), l);
        }
        o.Set("lockers", arr);
        return o;
      });
}

// breakLock(oid, name, client, cookie) -> Promise<void>
Napi::Value Pool::BreakLock(const Napi::CallbackInfo& info) {
  return LockCall(info, 4, "breakLock(oid, name, client, cookie)", "rados_break_lock",
                  [](rados_ioctx_t io, const Strings& a) {
                    return rados_break_lock(io, a[0].c_str(), a[1].c_str(), a[2].c_str(), a[3].c_str());
                  });
}

}  // namespace archip
