// The sandpool guest SDK, C++ interface: export a plain C++ function and the
// SDK derives its parameter and result types from the signature.
//
//   int32_t add(int32_t a, int32_t b) { return a + b; }
//   void sandpool_main() { sandpool::export_function<add>("add"); }
//
// Supported types: int32_t, int64_t, uint32_t, uint64_t, float, double, bool,
// sandpool::str (string), sandpool::bytes (bytes); results may also be void.
#pragma once

#include <sandpool/guest.h>

namespace sandpool {

struct str {
  const char* data = nullptr;
  uint32_t size = 0;
};

struct bytes {
  const uint8_t* data = nullptr;
  uint32_t size = 0;
};

template <typename T>
struct value_traits;

#define SANDPOOL_SCALAR_TRAITS(T, TAG, FIELD)                        \
  template <>                                                       \
  struct value_traits<T> {                                          \
    static constexpr sandpool_type type = TAG;                      \
    static T get(const sandpool_value& v) { return v.FIELD; }       \
    static void set(sandpool_value& v, T x) { v.FIELD = x; }        \
  };
SANDPOOL_SCALAR_TRAITS(int32_t, SANDPOOL_TYPE_I32, i32)
SANDPOOL_SCALAR_TRAITS(int64_t, SANDPOOL_TYPE_I64, i64)
SANDPOOL_SCALAR_TRAITS(uint32_t, SANDPOOL_TYPE_U32, u32)
SANDPOOL_SCALAR_TRAITS(uint64_t, SANDPOOL_TYPE_U64, u64)
SANDPOOL_SCALAR_TRAITS(float, SANDPOOL_TYPE_F32, f32)
SANDPOOL_SCALAR_TRAITS(double, SANDPOOL_TYPE_F64, f64)
SANDPOOL_SCALAR_TRAITS(bool, SANDPOOL_TYPE_BOOL, b)
#undef SANDPOOL_SCALAR_TRAITS

template <>
struct value_traits<str> {
  static constexpr sandpool_type type = SANDPOOL_TYPE_STRING;
  static str get(const sandpool_value& v) {
    return {reinterpret_cast<const char*>(v.buf.data), v.buf.size};
  }
  static void set(sandpool_value& v, str x) {
    v.buf = {reinterpret_cast<const uint8_t*>(x.data), x.size};
  }
};

template <>
struct value_traits<bytes> {
  static constexpr sandpool_type type = SANDPOOL_TYPE_BYTES;
  static bytes get(const sandpool_value& v) { return {v.buf.data, v.buf.size}; }
  static void set(sandpool_value& v, bytes x) { v.buf = {x.data, x.size}; }
};

namespace detail {

template <unsigned... I>
struct index_list {};
template <unsigned N, unsigned... I>
struct make_index_list : make_index_list<N - 1, N - 1, I...> {};
template <unsigned... I>
struct make_index_list<0, I...> {
  using type = index_list<I...>;
};

template <auto F, typename Signature>
struct exporter;

template <auto F, typename R, typename... Args>
struct exporter<F, R (*)(Args...)> {
  static constexpr sandpool_type params[sizeof...(Args) + 1] = {value_traits<Args>::type...,
                                                               SANDPOOL_TYPE_VOID};

  template <unsigned... I>
  static void invoke(const sandpool_value* args, sandpool_value* result, index_list<I...>) {
    if constexpr (__is_same(R, void)) {
      F(value_traits<Args>::get(args[I])...);
      (void)result;
    } else {
      value_traits<R>::set(*result, F(value_traits<Args>::get(args[I])...));
    }
  }

  static void thunk(const sandpool_value* args, uint32_t, sandpool_value* result) {
    invoke(args, result, typename make_index_list<sizeof...(Args)>::type{});
  }

  static sandpool_type result_type() {
    if constexpr (__is_same(R, void)) {
      return SANDPOOL_TYPE_VOID;
    } else {
      return value_traits<R>::type;
    }
  }
};

}  // namespace detail

// Exports F under `name`; call from sandpool_main().
template <auto F>
void export_function(const char* name) {
  using E = detail::exporter<F, decltype(F)>;
  sandpool_export(name, &E::thunk, E::result_type(), sizeof(E::params) / sizeof(E::params[0]) - 1,
                  E::params);
}

}  // namespace sandpool
