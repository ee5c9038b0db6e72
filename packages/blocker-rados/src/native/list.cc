// Object listing: rados_nobjects_list_* walks the pool; each batch runs on a worker thread.
#include "common.h"

namespace archip {

// listOpen() -> id
Napi::Value Pool::ListOpen(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!Check(info)) return env.Undefined();
  rados_list_ctx_t ctx = nullptr;
  int r = rados_nobjects_list_open(io_, &ctx);
  if (r < 0) {
    ErrnoError(env, -r, "rados_nobjects_list_open").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  uint32_t id = nextId_++;
  lists_[id] = ctx;
  return Napi::Number::New(env, id);
}

// listNext(id, max, prefix) -> Promise<{names: string[], done: boolean}>; names start with prefix.
Napi::Value Pool::ListNext(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!Check(info) ||
      !Usage(info, info[0].IsNumber() && info[1].IsNumber() && info[2].IsString(), "listNext(id, max, prefix)"))
    return env.Undefined();
  auto it = lists_.find(info[0].As<Napi::Number>().Uint32Value());
  if (it == lists_.end()) {
    Napi::Error::New(env, "listNext: unknown or closed listing").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  rados_list_ctx_t ctx = it->second;
  uint32_t max = info[1].As<Napi::Number>().Uint32Value();
  std::string prefix = info[2].As<Napi::String>().Utf8Value();
  struct Out {
    std::vector<std::string> names;
    bool done = false;
  };
  auto out = std::make_shared<Out>();
  return RunAsync(
      env, Value(), "rados_nobjects_list_next",
      [ctx, max, prefix, out]() -> int {
        // Stop after `max` matches, or after a bounded number of entries so a sparse prefix
        // still yields control back regularly.
        for (uint32_t seen = 0; out->names.size() < max && seen < max * 16; seen++) {
          const char* entry = nullptr;
          size_t entryLen = 0;
          int r = rados_nobjects_list_next2(ctx, &entry, nullptr, nullptr, &entryLen, nullptr, nullptr);
          if (r == -ENOENT) {
            out->done = true;
            return 0;
          }
          if (r < 0) return r;
          if (entryLen >= prefix.size() && std::memcmp(entry, prefix.data(), prefix.size()) == 0)
            out->names.emplace_back(entry, entryLen);
        }
        return 0;
      },
      [out](Napi::Env e) -> Napi::Value {
        Napi::Object o = Napi::Object::New(e);
        Napi::Array a = Napi::Array::New(e, out->names.size());
        for (size_t i = 0; i < out->names.size(); i++) a.Set(static_cast<uint32_t>(i), out->names[i]);
        o.Set("names", a);
        o.Set("done", Napi::Boolean::New(e, out->done));
        return o;
      });
}

// listClose(id)
Napi::Value Pool::ListClose(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() >= 1 && info[0].IsNumber()) {
    auto it = lists_.find(info[0].As<Napi::Number>().Uint32Value());
    if (it != lists_.end()) {
      rados_nobjects_list_close(it->second);
      lists_.erase(it);
    }
  }
  return env.Undefined();
}

}  // namespace archip
