// The whole binding as one translation unit (faster builds, internal linkage for helpers).
#include "errors.cc"
#include "cluster.cc"
#include "pool.cc"
#include "aio.cc"
#include "ops.cc"
#include "watch.cc"
#include "list.cc"
#include "addon.cc"
