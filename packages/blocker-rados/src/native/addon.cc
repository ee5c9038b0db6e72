// Module entry: exports { Cluster, Pool, librados: [major, minor, extra] }.
#include "common.h"

namespace archip {

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  Napi::Function pool = Pool::Init(env);
  env.SetInstanceData(new AddonData{Napi::Persistent(pool)});
  exports.Set("Cluster", Cluster::Init(env));
  exports.Set("Pool", pool);
  int major = 0, minor = 0, extra = 0;
  rados_version(&major, &minor, &extra);
  Napi::Array v = Napi::Array::New(env, 3);
  v.Set(0u, major);
  v.Set(1u, minor);
  v.Set(2u, extra);
  exports.Set("librados", v);
  return exports;
}

}  // namespace archip

static Napi::Object InitModule(Napi::Env env, Napi::Object exports) {
  return archip::Init(env, exports);
}

NODE_API_MODULE(archip_rados, InitModule)
