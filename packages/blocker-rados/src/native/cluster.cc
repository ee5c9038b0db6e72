// Cluster: rados_create + conf + rados_connect on a worker thread; opening pools; shutdown.
#include "common.h"

namespace archip {

Napi::Function Cluster::Init(Napi::Env env) {
  return DefineClass(env, "Cluster",
                     {InstanceMethod<&Cluster::Connect>("connect"),
                      InstanceMethod<&Cluster::OpenPool>("openPool"),
                      InstanceMethod<&Cluster::Shutdown>("shutdown"),
                      InstanceMethod<&Cluster::InstanceId>("instanceId"),
                      InstanceMethod<&Cluster::WaitForLatestOsdmap>("waitForLatestOsdmap"),
                      InstanceMethod<&Cluster::Addrs>("addrs"),
                      InstanceMethod<&Cluster::BlocklistAdd>("blocklistAdd")});
}

Cluster::Cluster(const Napi::CallbackInfo& info) : Napi::ObjectWrap<Cluster>(info) {}

// connect({ id?, conf?, keyring?, options: {key: value} }) -> Promise<void>
Napi::Value Cluster::Connect(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!Usage(info, cluster_ == nullptr && info[0].IsObject(), "connect(options) once per Cluster"))
    return env.Undefined();
  Napi::Object o = info[0].As<Napi::Object>();
  auto str = [&](const char* k) -> std::pair<bool, std::string> {
    Napi::Value v = o.Get(k);
    if (!v.IsString()) return {false, ""};
    return {true, v.As<Napi::String>().Utf8Value()};
  };
  auto id = str("id");
  auto conf = str("conf");
  auto keyring = str("keyring");
  std::vector<std::pair<std::string, std::string>> options;
  if (o.Get("options").IsObject()) {
    Napi::Object opts = o.Get("options").As<Napi::Object>();
    Napi::Array keys = opts.GetPropertyNames();
    for (uint32_t i = 0; i < keys.Length(); i++) {
      std::string k = keys.Get(i).ToString().Utf8Value();
      options.emplace_back(k, opts.Get(k).ToString().Utf8Value());
    }
  }
  if (keyring.first) options.emplace_back("keyring", keyring.second);
  int rc = rados_create(&cluster_, id.first ? id.second.c_str() : nullptr);
  if (rc < 0) {
    cluster_ = nullptr;
    ErrnoError(env, -rc, "rados_create").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  rados_t c = cluster_;
  Napi::Object self = Value();
  return RunAsync(
      env, self, "rados_connect",
      [c, conf, options]() -> int {
        int r = rados_conf_read_file(c, conf.first ? conf.second.c_str() : nullptr);
        if (r < 0) return r;
        for (auto& kv : options) {
          r = rados_conf_set(c, kv.first.c_str(), kv.second.c_str());
          if (r < 0) return r;
        }
        return rados_connect(c);
      },
      [this](Napi::Env e) -> Napi::Value {
        connected_ = true;
        return e.Undefined();
      });
}

// openPool(name, namespace?) -> Promise<Pool>
Napi::Value Cluster::OpenPool(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!Usage(info, connected_ && info[0].IsString(), "openPool(name) needs a connected cluster"))
    return env.Undefined();
  std::string name = info[0].As<Napi::String>().Utf8Value();
  std::string ns = info.Length() > 1 && info[1].IsString() ? info[1].As<Napi::String>().Utf8Value() : "";
  auto io = std::make_shared<rados_ioctx_t>(nullptr);
  rados_t c = cluster_;
  Napi::Object self = Value();
  return RunAsync(
      env, self, "rados_ioctx_create",
      [c, name, ns, io]() -> int {
        int r = rados_ioctx_create(c, name.c_str(), io.get());
        if (r == 0 && !ns.empty()) rados_ioctx_set_namespace(*io, ns.c_str());
        return r;
      },
      [this, io](Napi::Env e) -> Napi::Value {
        return e.GetInstanceData<AddonData>()->pool.New({Value(), Napi::External<void>::New(e, *io)});
      });
}

// shutdown() -> Promise<void>; every Pool must be closed first.
Napi::Value Cluster::Shutdown(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  rados_t c = cluster_;
  bool connected = connected_;
  cluster_ = nullptr;
  connected_ = false;
  if (c == nullptr) return RunAsync(env, Value(), "rados_shutdown", []() { return 0; });
  return RunAsync(env, Value(), "rados_shutdown", [c, connected]() {
    if (connected) rados_watch_flush(c);
    rados_shutdown(c);
    return 0;
  });
}

// instanceId() -> "client.<global id>" (the name `rados lock info` shows)
Napi::Value Cluster::InstanceId(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!connected_) return env.Null();
  return Napi::String::New(env, "client." + std::to_string(rados_get_instance_id(cluster_)));
}

// waitForLatestOsdmap() -> Promise<void>: resolves once this client has the monitors' latest
// OSD map (e.g. after `ceph osd pause`: every op submitted afterwards sees the flag).
Napi::Value Cluster::WaitForLatestOsdmap(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!Usage(info, connected_, "waitForLatestOsdmap() needs a connected cluster")) return env.Undefined();
  rados_t c = cluster_;
  return RunAsync(env, Value(), "rados_wait_for_latest_osdmap",
                  [c]() { return rados_wait_for_latest_osdmap(c); });
}

// addrs() -> the client's messenger addresses (rados_getaddrs), what fencing blocklists; null
// before connect.
Napi::Value Cluster::Addrs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!connected_) return env.Null();
  char* addrs = nullptr;
  int r = rados_getaddrs(cluster_, &addrs);
  if (r < 0) {
    ErrnoError(env, -r, "rados_getaddrs").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  Napi::String s = Napi::String::New(env, addrs != nullptr ? addrs : "");
  free(addrs);  // rados_getaddrs strdup()s it
  return s;
}

// blocklistAdd(addr, expireSeconds) -> Promise<void>: the monitors' "osd blocklist add" for one
// client address (0: the cluster's default expiry); librados then waits for the OSD map that has it.
Napi::Value Cluster::BlocklistAdd(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!Usage(info, connected_ && info[0].IsString() && info[1].IsNumber(),
             "blocklistAdd(addr, expireSeconds) needs a connected cluster"))
    return env.Undefined();
  std::string addr = info[0].As<Napi::String>().Utf8Value();
  uint32_t expire = info[1].As<Napi::Number>().Uint32Value();
  rados_t c = cluster_;
  return RunAsync(env, Value(), "rados_blocklist_add " + addr, [c, addr, expire]() {
    std::vector<char> a(addr.begin(), addr.end());
    a.push_back(0);
    return rados_blocklist_add(c, a.data(), expire);
  });
}

}  // namespace archip
