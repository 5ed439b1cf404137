// The time loop of seqlab.nn.scan, compiled: the same recurrences and the same hand-written
// backward pass as the Python loop in scan.py, which stays the readable reference.
//
// Each step is one matrix product W_hh h into a preallocated buffer (two for the GRU with the
// reset gate before W_hn), called straight into BLAS, then loops over the batch rows and the
// units that add the input side x_proj and do all the gate arithmetic. When a step is large
// enough to pay for it, the LSTM's hidden units are shared out across threads for the whole
// sequence (over_units), the other cells' rows step by step (over_rows). Tensors are time-major and
// contiguous: x_proj (L, N, G*H), states (N, H), valid (L, N, 1) bool or absent. A step
// outside a sequence's length emits zeros and keeps the previous state; in the backward pass
// it passes the state gradient through unchanged. Sums over steps (weight, bias and peephole
// gradients) are left to the Python side. A forward pass that no backward pass will follow
// (keep = false) holds only the buffers of two steps instead of every step's.
//
// The loops over units are written so that the compiler can vectorise them: float32 uses the
// exp and tanh below (a few units in the last place, no library call); float64 uses std::exp
// and std::tanh, so that gradcheck sees the exact functions.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <optional>
#include <thread>
#include <type_traits>
#include <vector>

namespace {

using at::Tensor;

// ---------------------------------------------------------------- element-wise functions

// e^x for float: x = n ln2 + r with |r| <= ln2 / 2, e^r by a polynomial, 2^n by the exponent bits.
inline float exp_approx(float x) {
  x = std::min(std::max(x, -87.3f), 88.3f);  // keeps 2^n a normal float; NaN passes through
  const float shift = 12582912.0f;            // 1.5 * 2^23: adding it rounds to an integer
  const float n = (x * 1.44269504088896341f + shift) - shift;
  const float r = (x - n * 0.693359375f) + n * 2.12194440e-4f;  // ln2 split in two parts
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return p * scale;
}

// tanh for float: an odd polynomial near zero, 1 - 2 / (e^{2|x|} + 1) elsewhere.
inline float tanh_approx(float x) {
  const float a = std::abs(x);
  const float z = x * x;
  float p = -5.70498872745e-3f;
  p = p * z + 2.06390887954e-2f;
  p = p * z - 5.37397155531e-2f;
  p = p * z + 1.33314422036e-1f;
  p = p * z - 3.33332819422e-1f;
  const float small = p * z * x + x;
  const float large = std::copysign(1.0f - 2.0f / (exp_approx(2.0f * a) + 1.0f), x);
  return a < 0.625f ? small : large;
}

template <typename T>
inline T exp_(T x) {
  if constexpr (std::is_same_v<T, float>) {
    return exp_approx(x);
  } else {
    return std::exp(x);
  }
}

template <typename T>
inline T tanh_(T x) {
  if constexpr (std::is_same_v<T, float>) {
    return tanh_approx(x);
  } else {
    return std::tanh(x);
  }
}

template <typename T>
inline T sigmoid_(T x) {
  return T(1) / (T(1) + exp_(-x));
}

// ---------------------------------------------------------------- matrix products

// BLAS's general matrix product, which torch's CPU builds carry (MKL or OpenBLAS). Declared
// weak, so that the library loads where a build lacks them; the products then go through
// at::mm_out. Called directly, a step's product skips the dispatcher and the Tensor wrappers.
extern "C" {
void sgemm_(const char* transa, const char* transb, const int* m, const int* n, const int* k,
            const float* alpha, const float* a, const int* lda, const float* b, const int* ldb,
            const float* beta, float* c, const int* ldc) __attribute__((weak));
void dgemm_(const char* transa, const char* transb, const int* m, const int* n, const int* k,
            const double* alpha, const double* a, const int* lda, const double* b,
            const int* ldb, const double* beta, double* c, const int* ldc) __attribute__((weak));
}

// c (m, n) = a (m, k) b (k, n), or c += a b when accumulate; row-major, with row strides lda,
// ldb, ldc. BLAS is column-major, where the same memory reads c^T = b^T a^T.
template <typename T>
void matmul(const T* a, int64_t lda, const T* b, int64_t ldb, T* c, int64_t ldc, int64_t m,
            int64_t k, int64_t n, bool accumulate = false) {
  if (m == 0 || n == 0) return;
  const T one = 1, beta = accumulate ? 1 : 0;
  const int rows = m, inner = k, cols = n, la = lda, lb = ldb, lc = ldc;
  if (k > 0) {
    if constexpr (std::is_same_v<T, float>) {
      if (sgemm_ != nullptr) {
        sgemm_("N", "N", &cols, &rows, &inner, &one, b, &lb, a, &la, &beta, c, &lc);
        return;
      }
    } else {
      if (dgemm_ != nullptr) {
        dgemm_("N", "N", &cols, &rows, &inner, &one, b, &lb, a, &la, &beta, c, &lc);
        return;
      }
    }
  }
  const auto options = at::TensorOptions().dtype(c10::CppTypeToScalarType<T>::value);
  const Tensor ta = at::from_blob(const_cast<T*>(a), {m, k}, {lda, 1}, options);
  const Tensor tb = at::from_blob(const_cast<T*>(b), {k, n}, {ldb, 1}, options);
  Tensor tc = at::from_blob(c, {m, n}, {ldc, 1}, options);
  if (accumulate) {
    tc.addmm_(ta, tb);
  } else {
    tc.copy_(at::mm(ta, tb));
  }
}

// ---------------------------------------------------------------- shared helpers

// Whether step t of sequence n lies inside its length.
struct Mask {
  const bool* data;
  int64_t batch;
  bool operator()(int64_t t, int64_t n) const { return data == nullptr || data[t * batch + n]; }
};

// Makes `valid` contiguous in place, so that the mask can read it.
Mask make_mask(std::optional<Tensor>& valid, int64_t batch) {
  if (!valid.has_value()) return {nullptr, batch};
  TORCH_CHECK(valid->scalar_type() == at::kBool, "scan: valid must be a bool tensor");
  valid = valid->contiguous();
  return {valid->data_ptr<bool>(), batch};
}

void check_inputs(const Tensor& x_proj, const Tensor& h0) {
  TORCH_CHECK(x_proj.device().is_cpu(), "scan: the compiled loop runs on the CPU only");
  TORCH_CHECK(x_proj.dim() == 3 && h0.dim() == 2 && x_proj.size(1) == h0.size(0),
              "scan: expected x_proj (L, N, G*H) and a state (N, H)");
}

// Copy the rows of `src` (N, H) that are inside their sequence at step t into `dst`: `count`
// entries of each (the whole row by default; a range of units when src and dst are offset).
template <typename T>
void copy_valid_rows(const Mask& mask, int64_t t, const T* src, T* dst, int64_t batch,
                     int64_t hidden, int64_t count = -1) {
  const int64_t size = (count < 0 ? hidden : count) * sizeof(T);
  for (int64_t n = 0; n < batch; ++n) {
    if (mask(t, n)) std::memcpy(dst + n * hidden, src + n * hidden, size);
  }
}

// A row past its sequence's end after its step ran: it emits zeros and keeps the state.
template <typename T>
void keep_state(T* out, const T* prev, T* next, int64_t hidden) {
  std::fill(out, out + hidden, T(0));
  std::memcpy(next, prev, hidden * sizeof(T));
}

// to[c * ld_to + r] = from[r * ld_from + c] for r < rows, c < cols: a transpose, in tiles.
template <typename T>
void transpose_into(const T* from, int64_t ld_from, int64_t rows, int64_t cols, T* to,
                    int64_t ld_to) {
  constexpr int64_t kTile = 32;
  for (int64_t r0 = 0; r0 < rows; r0 += kTile) {
    for (int64_t c0 = 0; c0 < cols; c0 += kTile) {
      const int64_t r1 = std::min(rows, r0 + kTile), c1 = std::min(cols, c0 + kTile);
      for (int64_t c = c0; c < c1; ++c) {
        for (int64_t r = r0; r < r1; ++r) to[c * ld_to + r] = from[r * ld_from + c];
      }
    }
  }
}

// W^T as a contiguous matrix: the per-step products h W^T run markedly faster on it than on
// the transposed view (measured with MKL on this CPU), and it is made once per call, in tiles
// (a plain strided copy of a 1024 x 256 matrix took ~0.5 ms, a tenth of what it saves).
Tensor transposed(const Tensor& weight) {
  const Tensor source = weight.contiguous();
  const int64_t rows = source.size(0), cols = source.size(1);
  Tensor result = at::empty({cols, rows}, source.options());
  AT_DISPATCH_FLOATING_TYPES(source.scalar_type(), "transposed", [&] {
    transpose_into(source.data_ptr<scalar_t>(), cols, rows, cols, result.data_ptr<scalar_t>(),
                   rows);
  });
  return result;
}

// Step t of a contiguous time-major tensor (L, N, W): its (N, W) block, by pointer arithmetic
// (slicing a Tensor at every step costs more than the arithmetic of a small step). A buffer
// with fewer blocks than steps is a ring: step t uses block t mod its size.
template <typename T>
struct Steps {
  T* base;
  int64_t stride, blocks;
  explicit Steps(const Tensor& tensor)
      : base(tensor.data_ptr<T>()), stride(tensor.stride(0)), blocks(tensor.size(0)) {}
  T* operator[](int64_t t) const { return base + (t % blocks) * stride; }
};

// A per-step buffer (L, N, W) when the backward pass will read it (keep), otherwise a ring of
// `ring` blocks: a forward pass without gradients holds two states and one step's gates, not L.
Tensor step_buffer(int64_t length, int64_t batch, int64_t width, bool keep, int64_t ring,
                   const at::TensorOptions& options) {
  return at::empty({keep ? length : std::min(length, ring), batch, width}, options);
}

// Runs body(n) for every row n of the batch: across threads when a step has enough work
// (rows * width elements) to pay for waking them, in order on this thread otherwise.
template <typename Body>
void over_rows(int64_t batch, int64_t width, const Body& body) {
  constexpr int64_t kGrain = 1 << 14;  // elements per thread, below which one thread is quicker
  if (batch * width < 2 * kGrain || at::get_num_threads() < 2) {
    for (int64_t n = 0; n < batch; ++n) body(n);
    return;
  }
  const int64_t rows = std::max<int64_t>(1, kGrain / width);
  at::parallel_for(0, batch, rows, [&](int64_t begin, int64_t end) {
    for (int64_t n = begin; n < end; ++n) body(n);
  });
}

// How many threads share out a step's hidden units (see over_units): 1 when the step is too
// small to pay for a wait per step, or when the threads cannot be known to run at once (torch
// not built with OpenMP, or already inside a parallel region).
int64_t unit_parts(int64_t batch, int64_t width, int64_t hidden) {
#if AT_PARALLEL_OPENMP
  // gate elements per step below which one thread is quicker (measured: L = 1000, N = 8, H = 128,
  // 4,096 a step, runs ~10 % faster on two threads)
  constexpr int64_t kGrain = 1 << 12;
  const int64_t threads = at::get_num_threads();
  if (threads < 2 || at::in_parallel_region() || batch * width < kGrain) return 1;
  return std::min(threads, std::max<int64_t>(1, hidden / 16));
#else
  (void)batch, (void)width, (void)hidden;
  return 1;
#endif
}

// The first unit of part p when `hidden` units are cut into `parts` ranges (multiples of 16, so
// that each range starts on a vector boundary).
inline int64_t unit_bound(int64_t p, int64_t parts, int64_t hidden) {
  return p == parts ? hidden : (hidden / 16) * p / parts * 16;
}

// Runs first(t, u0, u1), then second(t, u0, u1), for t = 0 .. length - 1 and the unit ranges
// [u0, u1) of `parts` parts. With several parts, each thread keeps its ranges for the whole
// sequence and waits between first and second until every range has done first: a step's
// product reads what all the ranges wrote (the forward pass multiplies in first, the backward
// pass in second). Each thread multiplies by its units' slice of the weights, which stays in
// its core's cache from step to step (one product split across threads by BLAS reads all of
// the weights on every core), and BLAS called inside the parallel region runs on the calling
// thread. The wait counts finished ranges, not threads, so it holds however many threads
// OpenMP hands out.
template <typename First, typename Second>
void over_units(int64_t length, int64_t hidden, int64_t parts, const First& first,
                const Second& second) {
  if (parts <= 1) {
    for (int64_t t = 0; t < length; ++t) {
      first(t, 0, hidden);
      second(t, 0, hidden);
    }
    return;
  }
  std::atomic<int64_t> finished{0};
  at::parallel_for(0, parts, 1, [&](int64_t begin, int64_t end) {
    for (int64_t t = 0; t < length; ++t) {
      for (int64_t p = begin; p < end; ++p) {
        first(t, unit_bound(p, parts, hidden), unit_bound(p + 1, parts, hidden));
      }
      finished.fetch_add(end - begin, std::memory_order_acq_rel);
      const int64_t target = parts * (t + 1);
      for (int64_t spins = 0; finished.load(std::memory_order_acquire) < target; ++spins) {
        if (spins > 512) std::this_thread::yield();  // another job holds the core: let it run
#if defined(__x86_64__) || defined(__i386__)
        else __builtin_ia32_pause();
#endif
      }
      for (int64_t p = begin; p < end; ++p) {
        second(t, unit_bound(p, parts, hidden), unit_bound(p + 1, parts, hidden));
      }
    }
  });
}

// No second phase.
inline void nothing(int64_t, int64_t, int64_t) {}

// Calls body(a, b) with two runtime flags turned into std::true_type / std::false_type.
template <typename Body>
void with_flags(bool a, bool b, Body&& body) {
  if (a) {
    b ? body(std::true_type{}, std::true_type{}) : body(std::true_type{}, std::false_type{});
  } else {
    b ? body(std::false_type{}, std::true_type{}) : body(std::false_type{}, std::false_type{});
  }
}

// ---------------------------------------------------------------- RNN: h' = act(x_proj + W_hh h)

template <typename T, bool kRelu>
void rnn_forward_row(const T* __restrict__ x, T* __restrict__ out, T* __restrict__ h_next,
                     int64_t hidden) {
  for (int64_t j = 0; j < hidden; ++j) {
    const T pre = x[j] + out[j];  // out holds W_hh h
    const T h = kRelu ? std::max(pre, T(0)) : tanh_(pre);
    out[j] = h;
    h_next[j] = h;
  }
}

// Returns outputs (zeros past each length), h_n and prevs (L, N, H), the state before each step
// (only its last two blocks when not keep).
std::vector<Tensor> rnn_forward(Tensor x_proj, Tensor h0, Tensor weight_hh,
                                std::optional<Tensor> valid, bool relu, bool keep) {
  check_inputs(x_proj, h0);
  x_proj = x_proj.contiguous();
  const int64_t length = x_proj.size(0), batch = h0.size(0), hidden = h0.size(1);
  const Mask mask = make_mask(valid, batch);
  Tensor outputs = at::empty_like(x_proj);
  Tensor prevs = step_buffer(length, batch, hidden, keep, 2, x_proj.options());
  Tensor h_n = at::empty_like(h0);
  if (length == 0) return {outputs, h_n.copy_(h0), prevs};
  prevs[0].copy_(h0);
  const Tensor weight_t = transposed(weight_hh);
  AT_DISPATCH_FLOATING_TYPES(x_proj.scalar_type(), "rnn_forward", [&] {
    using T = scalar_t;
    const Steps<T> xs(x_proj), outs(outputs), h_prevs(prevs);
    const T* w_t = weight_t.data_ptr<T>();
    with_flags(relu, false, [&](auto relu_flag, auto) {
      for (int64_t t = 0; t < length; ++t) {
        const T* x = xs[t];
        T* out = outs[t];
        const T* h_prev = h_prevs[t];
        T* h_next = t + 1 < length ? h_prevs[t + 1] : h_n.data_ptr<T>();
        matmul(h_prev, hidden, w_t, hidden, out, hidden, batch, hidden, hidden);  // W_hh h
        over_rows(batch, hidden, [&](int64_t n) {
          const int64_t k = n * hidden;
          rnn_forward_row<T, decltype(relu_flag)::value>(x + k, out + k, h_next + k, hidden);
          if (!mask(t, n)) keep_state(out + k, h_prev + k, h_next + k, hidden);
        });
      }
    });
  });
  return {outputs, h_n, prevs};
}

template <typename T, bool kRelu>
void rnn_backward_row(T* __restrict__ grad_pre, const T* __restrict__ grad_out,
                      const T* __restrict__ grad_state, const T* __restrict__ h, int64_t hidden) {
  for (int64_t j = 0; j < hidden; ++j) {
    // act'(pre) from the output: tanh' = 1 - h², relu' = [h > 0]
    const T slope = kRelu ? T(h[j] > T(0)) : T(1) - h[j] * h[j];
    grad_pre[j] = (grad_out[j] + grad_state[j]) * slope;
  }
}

// Returns grad_x_proj (L, N, H) and grad_h0 (N, H).
std::vector<Tensor> rnn_backward(Tensor grad_out, Tensor grad_h, Tensor weight_hh,
                                 std::optional<Tensor> valid, Tensor outputs, bool relu) {
  grad_out = grad_out.contiguous();
  grad_h = grad_h.contiguous().clone();
  const int64_t length = outputs.size(0), batch = outputs.size(1), hidden = outputs.size(2);
  outputs = outputs.contiguous();
  const Mask mask = make_mask(valid, batch);
  Tensor grad_x_proj = at::empty_like(outputs);
  Tensor product = at::empty_like(grad_h);  // grad_pre W_hh, before the masked rows are kept
  const Tensor weight = weight_hh.contiguous();
  AT_DISPATCH_FLOATING_TYPES(outputs.scalar_type(), "rnn_backward", [&] {
    using T = scalar_t;
    const Steps<T> grad_pres(grad_x_proj), grad_outs(grad_out), outs(outputs);
    const T* w = weight.data_ptr<T>();
    T* prod = product.data_ptr<T>();
    with_flags(relu, false, [&](auto relu_flag, auto) {
      T* grad_state = grad_h.data_ptr<T>();
      for (int64_t t = length - 1; t >= 0; --t) {
        T* grad_pre = grad_pres[t];
        const T* grad_o = grad_outs[t];
        const T* h = outs[t];
        for (int64_t n = 0; n < batch; ++n) {
          const int64_t k = n * hidden;
          if (mask(t, n)) {
            rnn_backward_row<T, decltype(relu_flag)::value>(grad_pre + k, grad_o + k,
                                                            grad_state + k, h + k, hidden);
          } else {
            std::fill(grad_pre + k, grad_pre + k + hidden, T(0));
          }
        }
        if (mask.data == nullptr) {
          matmul(grad_pre, hidden, w, hidden, grad_state, hidden, batch, hidden, hidden);
        } else {
          matmul(grad_pre, hidden, w, hidden, prod, hidden, batch, hidden, hidden);
          copy_valid_rows<T>(mask, t, prod, grad_state, batch, hidden);
        }
      }
    });
  });
  return {grad_x_proj, grad_h};
}

// ---------------------------------------------------------------- LSTM
// Gates per row: i, f, g, o (coupled: f, g, o, with i = 1 - f). Peepholes: weight_ch holds
// w_ci, w_cf, w_co (coupled: w_cf, w_co); i and f look at c_{t-1}, o at c_t.

// One row of the batch at one step: x (G*H) is the input side of the pre-activations, acts
// (G*H) holds the hidden side W_hh h and gets the activations; the other pointers are (H)
// slices of the step's buffers. Three passes: i and f (contiguous, with their peepholes), g,
// then the cell, o and h.
template <typename T, bool kCoupled, bool kPeephole>
void lstm_forward_row(const T* __restrict__ x, const T* __restrict__ pre, T* __restrict__ acts,
                      const T* __restrict__ c_prev, T* __restrict__ c_new, T* __restrict__ tanh_c,
                      T* __restrict__ out, T* __restrict__ h_next, T* __restrict__ c_next,
                      const T* __restrict__ w_ch, int64_t hidden, int64_t count) {
  // Units [0, count) of the row: gate p of unit j at p * hidden + j in x, acts and w_ch, and
  // its hidden side W_hh h at p * count + j in pre (the part's own block, see over_units).
  constexpr int64_t kPeeps = kCoupled ? 1 : 2;  // the sigmoid gates before g: (i, f) or f
  for (int64_t p = 0; p < kPeeps; ++p) {
    T* __restrict__ gate = acts + p * hidden;
    const T* __restrict__ pre_gate = pre + p * count;
    const T* __restrict__ x_gate = x + p * hidden;
    const T* __restrict__ w = w_ch + p * hidden;
    for (int64_t j = 0; j < count; ++j) {
      T sum = pre_gate[j] + x_gate[j];
      if constexpr (kPeephole) sum += w[j] * c_prev[j];  // i and f peep at the previous cell
      gate[j] = sigmoid_(sum);
    }
  }
  T* __restrict__ g_gate = acts + kPeeps * hidden;
  const T* __restrict__ pre_g = pre + kPeeps * count;
  const T* __restrict__ x_g = x + kPeeps * hidden;
  for (int64_t j = 0; j < count; ++j) g_gate[j] = tanh_(pre_g[j] + x_g[j]);
  const T* __restrict__ i_gate = acts;
  const T* __restrict__ f_gate = acts + (kPeeps - 1) * hidden;
  T* __restrict__ o_gate = acts + (kPeeps + 1) * hidden;
  const T* __restrict__ pre_o = pre + (kPeeps + 1) * count;
  const T* __restrict__ x_o = x + (kPeeps + 1) * hidden;
  const T* __restrict__ w_co = w_ch + kPeeps * hidden;
  for (int64_t j = 0; j < count; ++j) {
    const T c = c_prev[j], f = f_gate[j], g = g_gate[j];
    const T cell = kCoupled ? g + f * (c - g) : f * c + i_gate[j] * g;  // coupled: i = 1 - f
    T o_pre = pre_o[j] + x_o[j];
    if constexpr (kPeephole) o_pre += w_co[j] * cell;  // o peeps at the new cell
    const T o = sigmoid_(o_pre);
    const T tc = tanh_(cell);
    const T h = o * tc;
    o_gate[j] = o;
    c_new[j] = cell;
    tanh_c[j] = tc;
    out[j] = h;
    h_next[j] = h;
    c_next[j] = cell;
  }
}

// W_hh^T (H, G*H) with its columns regrouped by unit range, made from W_hh (G*H, H) in one pass:
// the columns of part p's units, gate after gate, form one contiguous (H, G * count) block, so
// that each thread's product is a single BLAS call on memory of its own. With one part this is
// W_hh^T itself.
Tensor grouped_by_units(const Tensor& weight_hh, int64_t gates, int64_t parts) {
  if (parts <= 1) return transposed(weight_hh);
  const Tensor source = weight_hh.contiguous();
  const int64_t width = source.size(0), hidden = source.size(1), units = width / gates;
  Tensor result = at::empty({hidden, width}, source.options());
  AT_DISPATCH_FLOATING_TYPES(source.scalar_type(), "grouped_by_units", [&] {
    const scalar_t* from = source.data_ptr<scalar_t>();
    scalar_t* to = result.data_ptr<scalar_t>();
    for (int64_t p = 0; p < parts; ++p) {
      const int64_t u0 = unit_bound(p, parts, units), count = unit_bound(p + 1, parts, units) - u0;
      for (int64_t g = 0; g < gates; ++g) {  // rows g*units + u0 .. of W_hh, transposed
        transpose_into(from + (g * units + u0) * hidden, hidden, count, hidden,
                       to + hidden * gates * u0 + g * count, gates * count);
      }
    }
  });
  return result;
}

// Returns outputs, h_n, c_n and what the backward pass needs: acts (the gate activations),
// c_prevs, c_news, tanh(c_news), h_prevs, each (L, N, ·) (when keep; rings otherwise).
std::vector<Tensor> lstm_forward(Tensor x_proj, Tensor h0, Tensor c0, Tensor weight_hh,
                                 std::optional<Tensor> weight_ch, std::optional<Tensor> valid,
                                 bool coupled, bool keep) {
  check_inputs(x_proj, h0);
  x_proj = x_proj.contiguous();
  const int64_t length = x_proj.size(0), batch = h0.size(0), hidden = h0.size(1);
  const int64_t gates = coupled ? 3 : 4;
  const Mask mask = make_mask(valid, batch);
  const auto options = x_proj.options();
  Tensor acts = step_buffer(length, batch, gates * hidden, keep, 1, options);
  Tensor outputs = at::empty({length, batch, hidden}, options);
  Tensor h_prevs = step_buffer(length, batch, hidden, keep, 2, options);
  Tensor c_prevs = step_buffer(length, batch, hidden, keep, 2, options);
  Tensor c_news = step_buffer(length, batch, hidden, keep, 1, options);
  Tensor tanh_cs = step_buffer(length, batch, hidden, keep, 1, options);
  Tensor h_n = at::empty_like(h0), c_n = at::empty_like(c0);
  if (length == 0) {
    return {outputs, h_n.copy_(h0), c_n.copy_(c0), acts, c_prevs, c_news, tanh_cs, h_prevs};
  }
  h_prevs[0].copy_(h0);
  c_prevs[0].copy_(c0);
  Tensor w_ch = weight_ch.has_value() ? weight_ch->contiguous() : Tensor();
  const int64_t parts = unit_parts(batch, gates * hidden, hidden);
  const Tensor weight_t = grouped_by_units(weight_hh, gates, parts);
  Tensor product = at::empty({batch, gates * hidden}, options);  // each step's W_hh h
  AT_DISPATCH_FLOATING_TYPES(x_proj.scalar_type(), "lstm_forward", [&] {
    using T = scalar_t;
    const T* w = w_ch.defined() ? w_ch.data_ptr<T>() : nullptr;
    const T* w_t = weight_t.data_ptr<T>();
    T* hidden_side = product.data_ptr<T>();
    const Steps<T> xs(x_proj), as(acts), hs(h_prevs), cs(c_prevs), c_ns(c_news), tcs(tanh_cs),
        outs(outputs);
    const int64_t width = gates * hidden;
    with_flags(coupled, w != nullptr, [&](auto coupled_flag, auto peephole_flag) {
      // Step t for the units [u0, u1): W_hh h for their gates, then their arithmetic.
      auto step = [&](int64_t t, int64_t u0, int64_t u1) {
        const int64_t count = u1 - u0, span = gates * count;
        const T* h_prev = hs[t];
        T* pre = hidden_side + batch * gates * u0;  // this part's (N, G * count) block
        matmul(h_prev, hidden, w_t + hidden * gates * u0, span, pre, span, batch, hidden, span);
        const T* x = xs[t];
        T* a = as[t];
        const T* c_prev = cs[t];
        T* c_new = c_ns[t];
        T* tanh_c = tcs[t];
        T* out = outs[t];
        T* h_next = t + 1 < length ? hs[t + 1] : h_n.data_ptr<T>();
        T* c_next = t + 1 < length ? cs[t + 1] : c_n.data_ptr<T>();
        for (int64_t n = 0; n < batch; ++n) {
          const int64_t k = n * hidden + u0, r = n * width + u0;
          lstm_forward_row<T, decltype(coupled_flag)::value, decltype(peephole_flag)::value>(
              x + r, pre + n * span, a + r, c_prev + k, c_new + k, tanh_c + k, out + k,
              h_next + k, c_next + k, w == nullptr ? nullptr : w + u0, hidden, count);
          if (!mask(t, n)) {
            keep_state(out + k, h_prev + k, h_next + k, count);
            std::memcpy(c_next + k, c_prev + k, count * sizeof(T));
          }
        }
      };
      over_units(length, hidden, parts, step, nothing);
    });
  });
  return {outputs, h_n, c_n, acts, c_prevs, c_news, tanh_cs, h_prevs};
}

template <typename T, bool kCoupled, bool kPeephole>
void lstm_backward_row(T* __restrict__ grad_row, const T* __restrict__ row,
                       const T* __restrict__ c_prev, const T* __restrict__ tanh_c,
                       const T* __restrict__ grad_out, const T* __restrict__ grad_state,
                       T* __restrict__ grad_cell, const T* __restrict__ w_ch, int64_t hidden,
                       int64_t count) {
  // Units [0, count) of the row; gate p of unit j lies at p * hidden + j.
  const int64_t f_at = kCoupled ? 0 : hidden, g_at = f_at + hidden, o_at = g_at + hidden;
  const T* __restrict__ w_ci = w_ch;
  const T* __restrict__ w_cf = kCoupled ? w_ch : w_ch + hidden;
  const T* __restrict__ w_co = w_cf + hidden;
  for (int64_t j = 0; j < count; ++j) {
    const T grad_h_new = grad_out[j] + grad_state[j];  // everything that reaches h_t
    const T f = row[f_at + j], g = row[g_at + j], o = row[o_at + j];
    const T tc = tanh_c[j], c = c_prev[j];
    const T grad_o_pre = grad_h_new * (tc * o * (T(1) - o));
    T grad_c_new = grad_cell[j] + grad_h_new * (o * (T(1) - tc * tc));
    if constexpr (kPeephole) grad_c_new += grad_o_pre * w_co[j];
    T grad_c_prev = grad_c_new * f;
    if constexpr (kCoupled) {
      const T grad_f_pre = grad_c_new * ((c - g) * f * (T(1) - f));
      grad_row[f_at + j] = grad_f_pre;
      grad_row[g_at + j] = grad_c_new * ((T(1) - f) * (T(1) - g * g));
      if constexpr (kPeephole) grad_c_prev += grad_f_pre * w_cf[j];
    } else {
      const T i = row[j];
      const T grad_i_pre = grad_c_new * (g * i * (T(1) - i));
      const T grad_f_pre = grad_c_new * (c * f * (T(1) - f));
      grad_row[j] = grad_i_pre;
      grad_row[f_at + j] = grad_f_pre;
      grad_row[g_at + j] = grad_c_new * (i * (T(1) - g * g));
      if constexpr (kPeephole) grad_c_prev += grad_i_pre * w_ci[j] + grad_f_pre * w_cf[j];
    }
    grad_row[o_at + j] = grad_o_pre;
    grad_cell[j] = grad_c_prev;  // the gates that peeped at c send gradient back to it
  }
}

// Returns grad_gates (L, N, G*H), the gradient of the gate pre-activations (and so of x_proj),
// grad_h0 and grad_c0.
std::vector<Tensor> lstm_backward(Tensor grad_out, Tensor grad_h, Tensor grad_c, Tensor weight_hh,
                                  std::optional<Tensor> weight_ch, std::optional<Tensor> valid,
                                  Tensor acts, Tensor c_prevs, Tensor tanh_cs, bool coupled) {
  grad_out = grad_out.contiguous();
  grad_h = grad_h.contiguous().clone();
  grad_c = grad_c.contiguous().clone();
  const int64_t length = acts.size(0), batch = grad_h.size(0), hidden = grad_h.size(1);
  const int64_t gates = coupled ? 3 : 4;
  const Mask mask = make_mask(valid, batch);
  acts = acts.contiguous();
  c_prevs = c_prevs.contiguous();
  tanh_cs = tanh_cs.contiguous();
  const Tensor weight = weight_hh.contiguous();
  Tensor grad_gates = at::empty_like(acts);
  Tensor product = at::empty_like(grad_h);
  Tensor w_ch = weight_ch.has_value() ? weight_ch->contiguous() : Tensor();
  AT_DISPATCH_FLOATING_TYPES(acts.scalar_type(), "lstm_backward", [&] {
    using T = scalar_t;
    const T* w = w_ch.defined() ? w_ch.data_ptr<T>() : nullptr;
    const T* w_hh = weight.data_ptr<T>();
    T* prod = product.data_ptr<T>();
    const Steps<T> grad_gate_steps(grad_gates), as(acts), cs(c_prevs), tcs(tanh_cs),
        grad_outs(grad_out);
    const int64_t width = gates * hidden;
    with_flags(coupled, w != nullptr, [&](auto coupled_flag, auto peephole_flag) {
      T* grad_state = grad_h.data_ptr<T>();
      T* grad_cell = grad_c.data_ptr<T>();
      // Steps run backwards: s = 0 is t = L - 1. First the gates of the units [u0, u1), which
      // read only those units' state gradients; then (once every unit's gates are known) those
      // units' columns of grad_gates W_hh, the state gradient of the step before.
      auto gates_of = [&](int64_t s, int64_t u0, int64_t u1) {
        const int64_t t = length - 1 - s, count = u1 - u0;
        T* grad_rows = grad_gate_steps[t];
        const T* a = as[t];
        const T* c_prev = cs[t];
        const T* tanh_c = tcs[t];
        const T* grad_o = grad_outs[t];
        for (int64_t n = 0; n < batch; ++n) {
          const int64_t k = n * hidden + u0, r = n * width + u0;
          if (mask(t, n)) {
            lstm_backward_row<T, decltype(coupled_flag)::value, decltype(peephole_flag)::value>(
                grad_rows + r, a + r, c_prev + k, tanh_c + k, grad_o + k, grad_state + k,
                grad_cell + k, w == nullptr ? nullptr : w + u0, hidden, count);
          } else {  // past the end: no gradient for the gates, the state's passes through
            for (int64_t g = 0; g < gates; ++g) {
              std::fill(grad_rows + r + g * hidden, grad_rows + r + g * hidden + count, T(0));
            }
          }
        }
      };
      auto state_of = [&](int64_t s, int64_t u0, int64_t u1) {
        const int64_t t = length - 1 - s, count = u1 - u0;
        const T* grad_rows = grad_gate_steps[t];
        if (mask.data == nullptr) {
          matmul(grad_rows, width, w_hh + u0, hidden, grad_state + u0, hidden, batch, width,
                 count);
          return;
        }
        matmul(grad_rows, width, w_hh + u0, hidden, prod + u0, hidden, batch, width, count);
        copy_valid_rows<T>(mask, t, prod + u0, grad_state + u0, batch, hidden, count);
      };
      over_units(length, hidden, unit_parts(batch, width, hidden), gates_of, state_of);
    });
  });
  return {grad_gates, grad_h, grad_c};
}

// ---------------------------------------------------------------- GRU
// Gates per row: r, z, n. reset_after: n = tanh(x_n + r (W_hn h + b_hn)); otherwise
// n = tanh(x_n + W_hn (r h) + b_hn). Both: h' = (1 - z) n + z h.

// reset_after: r, z, n from x_proj and the hidden side W_hh h + b_hh, then the new state.
template <typename T>
void gru_forward_row_after(const T* __restrict__ x, const T* __restrict__ side,
                           const T* __restrict__ bias, T* __restrict__ act,
                           T* __restrict__ saved_n, const T* __restrict__ h_prev,
                           T* __restrict__ out, T* __restrict__ h_next, int64_t hidden) {
  for (int64_t j = 0; j < hidden; ++j) {
    const T r = sigmoid_(x[j] + side[j] + bias[j]);
    const T z = sigmoid_(x[hidden + j] + side[hidden + j] + bias[hidden + j]);
    const T side_n = side[2 * hidden + j] + bias[2 * hidden + j];
    const T gate_n = tanh_(x[2 * hidden + j] + r * side_n);
    const T h = gate_n + z * (h_prev[j] - gate_n);  // (1 - z) n + z h
    act[j] = r;
    act[hidden + j] = z;
    act[2 * hidden + j] = gate_n;
    saved_n[j] = side_n;
    out[j] = h;
    h_next[j] = h;
  }
}

// reset before, first half: r, z from x_proj and W_hrz h + b_hrz, and r h for W_hn.
template <typename T>
void gru_forward_row_gates(const T* __restrict__ x, const T* __restrict__ side,
                           const T* __restrict__ bias, T* __restrict__ act,
                           T* __restrict__ reset_h, const T* __restrict__ h_prev, int64_t hidden) {
  for (int64_t j = 0; j < hidden; ++j) {
    const T r = sigmoid_(x[j] + side[j] + bias[j]);
    act[j] = r;
    act[hidden + j] = sigmoid_(x[hidden + j] + side[hidden + j] + bias[hidden + j]);
    reset_h[j] = r * h_prev[j];
  }
}

// reset before, second half: n from x_proj and W_hn (r h) + b_hn, then the new state.
template <typename T>
void gru_forward_row_new(const T* __restrict__ x, const T* __restrict__ side_n,
                         const T* __restrict__ bias_n, T* __restrict__ act,
                         const T* __restrict__ h_prev, T* __restrict__ out,
                         T* __restrict__ h_next, int64_t hidden) {
  for (int64_t j = 0; j < hidden; ++j) {
    const T z = act[hidden + j];
    const T gate_n = tanh_(x[2 * hidden + j] + side_n[j] + bias_n[j]);
    const T h = gate_n + z * (h_prev[j] - gate_n);
    act[2 * hidden + j] = gate_n;
    out[j] = h;
    h_next[j] = h;
  }
}

// Returns outputs, h_n and what the backward pass needs: acts (r, z, n), h_prevs and hidden_n,
// what r multiplies (reset_after: W_hn h + b_hn) or what W_hn multiplies (r h) (rings when
// not keep).
std::vector<Tensor> gru_forward(Tensor x_proj, Tensor h0, Tensor weight_hh,
                                std::optional<Tensor> bias_hh, std::optional<Tensor> valid,
                                bool reset_after, bool keep) {
  check_inputs(x_proj, h0);
  x_proj = x_proj.contiguous();
  const int64_t length = x_proj.size(0), batch = h0.size(0), hidden = h0.size(1);
  const Mask mask = make_mask(valid, batch);
  const auto options = x_proj.options();
  Tensor acts = step_buffer(length, batch, 3 * hidden, keep, 1, options);
  Tensor outputs = at::empty({length, batch, hidden}, options);
  Tensor h_prevs = step_buffer(length, batch, hidden, keep, 2, options);
  Tensor hidden_n = step_buffer(length, batch, hidden, keep, 1, options);
  Tensor h_n = at::empty_like(h0);
  if (length == 0) return {outputs, h_n.copy_(h0), acts, h_prevs, hidden_n};
  h_prevs[0].copy_(h0);
  // W_hh^T whole (reset_after) or in two parts, [W_hr; W_hz]^T and W_hn^T (reset before)
  const Tensor w_t = reset_after ? transposed(weight_hh) : Tensor();
  const Tensor w_rz = reset_after ? Tensor() : transposed(weight_hh.narrow(0, 0, 2 * hidden));
  const Tensor w_n = reset_after ? Tensor() : transposed(weight_hh.narrow(0, 2 * hidden, hidden));
  // b_hh is added inside the row loops (zeros when the layer has no bias)
  const Tensor bias = bias_hh.has_value() ? bias_hh->contiguous()
                                          : at::zeros({3 * hidden}, x_proj.options());
  // the hidden side of a step: W_hh h + b_hh (reset_after) or W_hrz h + b_hrz, then W_hn (r h)
  const int64_t side_width = reset_after ? 3 * hidden : 2 * hidden;
  Tensor side = at::empty({batch, side_width}, x_proj.options());
  Tensor side_n = at::empty({batch, hidden}, x_proj.options());
  AT_DISPATCH_FLOATING_TYPES(x_proj.scalar_type(), "gru_forward", [&] {
    using T = scalar_t;
    T* s = side.data_ptr<T>();
    T* s_n = side_n.data_ptr<T>();
    const T* b = bias.data_ptr<T>();
    const Steps<T> hs(h_prevs), ns(hidden_n), xs(x_proj), as(acts), outs(outputs);
    for (int64_t t = 0; t < length; ++t) {
      const T* h_prev = hs[t];
      const T* x = xs[t];
      T* a = as[t];
      T* saved_n = ns[t];
      T* out = outs[t];
      T* h_next = t + 1 < length ? hs[t + 1] : h_n.data_ptr<T>();
      if (reset_after) {
        matmul(h_prev, hidden, w_t.data_ptr<T>(), side_width, s, side_width, batch, hidden,
               side_width);
        over_rows(batch, 3 * hidden, [&](int64_t n) {
          const int64_t k = n * hidden, r = 3 * k;
          gru_forward_row_after<T>(x + r, s + n * side_width, b, a + r, saved_n + k, h_prev + k,
                                   out + k, h_next + k, hidden);
          if (!mask(t, n)) keep_state(out + k, h_prev + k, h_next + k, hidden);
        });
      } else {
        matmul(h_prev, hidden, w_rz.data_ptr<T>(), side_width, s, side_width, batch, hidden,
               side_width);
        over_rows(batch, 2 * hidden, [&](int64_t n) {
          const int64_t k = n * hidden, r = 3 * k;
          gru_forward_row_gates<T>(x + r, s + n * side_width, b, a + r, saved_n + k, h_prev + k,
                                   hidden);
        });
        matmul(saved_n, hidden, w_n.data_ptr<T>(), hidden, s_n, hidden, batch, hidden, hidden);
        over_rows(batch, hidden, [&](int64_t n) {
          const int64_t k = n * hidden, r = 3 * k;
          gru_forward_row_new<T>(x + r, s_n + k, b + 2 * hidden, a + r, h_prev + k, out + k,
                                 h_next + k, hidden);
          if (!mask(t, n)) keep_state(out + k, h_prev + k, h_next + k, hidden);
        });
      }
    }
  });
  return {outputs, h_n, acts, h_prevs, hidden_n};
}

// The gradients of a step's gate pre-activations that need no matrix product: z and n, and for
// reset_after also r, what the hidden side gets and grad * z toward h_{t-1}.
template <typename T, bool kResetAfter>
void gru_backward_row(const T* __restrict__ act, const T* __restrict__ h_prev,
                      const T* __restrict__ saved_n, const T* __restrict__ grad_out,
                      const T* __restrict__ grad_state, T* __restrict__ grad_new,
                      T* __restrict__ grad_hidden, T* __restrict__ grad_x,
                      T* __restrict__ grad_prev, int64_t hidden) {
  for (int64_t j = 0; j < hidden; ++j) {
    const T r = act[j], z = act[hidden + j], gate_n = act[2 * hidden + j];
    const T grad = grad_out[j] + grad_state[j];  // everything that reaches h_t
    const T grad_n_pre = grad * ((T(1) - z) * (T(1) - gate_n * gate_n));
    const T grad_z_pre = grad * ((h_prev[j] - gate_n) * z * (T(1) - z));
    grad_hidden[hidden + j] = grad_z_pre;
    if constexpr (kResetAfter) {
      const T grad_r_pre = grad_n_pre * (saved_n[j] * r * (T(1) - r));
      grad_hidden[j] = grad_r_pre;
      grad_hidden[2 * hidden + j] = grad_n_pre * r;
      grad_x[j] = grad_r_pre;
      grad_x[hidden + j] = grad_z_pre;
      grad_x[2 * hidden + j] = grad_n_pre;
      grad_prev[j] = grad * z;
    } else {  // grad_x is grad_hidden: r is filled in after the product with W_hn
      grad_hidden[2 * hidden + j] = grad_n_pre;
      grad_new[j] = grad;
    }
  }
}

// reset before, after grad_reset_h = grad_n_pre W_hn: the gradient of r and toward h_{t-1}.
template <typename T>
void gru_backward_row_reset(const T* __restrict__ act, const T* __restrict__ h_prev,
                            const T* __restrict__ grad_new, const T* __restrict__ grad_reset_h,
                            T* __restrict__ grad_hidden, T* __restrict__ grad_prev,
                            int64_t hidden) {
  for (int64_t j = 0; j < hidden; ++j) {
    const T r = act[j], z = act[hidden + j];
    grad_hidden[j] = grad_reset_h[j] * (h_prev[j] * r * (T(1) - r));
    grad_prev[j] = grad_new[j] * z + grad_reset_h[j] * r;
  }
}

// Returns grad_x_proj (L, N, 3H), grad_h0 and grad_hidden (L, N, 3H), the gradient of the
// hidden-side products: W_hh h + b_hh (reset_after) or [W_hrz h + b_hrz; W_hn (r h) + b_hn].
std::vector<Tensor> gru_backward(Tensor grad_out, Tensor grad_h, Tensor weight_hh,
                                 std::optional<Tensor> valid, Tensor acts, Tensor h_prevs,
                                 Tensor hidden_n, bool reset_after) {
  grad_out = grad_out.contiguous();
  grad_h = grad_h.contiguous().clone();
  const int64_t length = acts.size(0), batch = grad_h.size(0), hidden = grad_h.size(1);
  const Mask mask = make_mask(valid, batch);
  Tensor grad_hidden = at::empty_like(acts);
  // reset before: the hidden side's gradient is x_proj's (both are pre-activation gradients)
  Tensor grad_x_proj = reset_after ? at::empty_like(acts) : grad_hidden;
  acts = acts.contiguous();
  h_prevs = h_prevs.contiguous();
  hidden_n = hidden_n.contiguous();
  const Tensor weight = weight_hh.contiguous();  // rows [W_hr; W_hz; W_hn]
  Tensor grad_new = at::zeros_like(grad_h);      // what reaches h_t (reset before)
  Tensor grad_reset_h = at::zeros_like(grad_h);  // gradient of r h (reset before)
  Tensor grad_prev = at::zeros_like(grad_h);     // toward h_{t-1}, before the masked rows are kept
  AT_DISPATCH_FLOATING_TYPES(acts.scalar_type(), "gru_backward", [&] {
    using T = scalar_t;
    with_flags(reset_after, false, [&](auto after_flag, auto) {
      constexpr bool kResetAfter = decltype(after_flag)::value;
      T* grad_state = grad_h.data_ptr<T>();
      T* g_new = grad_new.data_ptr<T>();
      T* g_prev = grad_prev.data_ptr<T>();
      T* g_reset = grad_reset_h.data_ptr<T>();
      const T* w = weight.data_ptr<T>();
      const int64_t width = 3 * hidden;
      const Steps<T> ghs(grad_hidden), gxs(grad_x_proj), as(acts), hs(h_prevs), ns(hidden_n),
          grad_outs(grad_out);
      for (int64_t t = length - 1; t >= 0; --t) {
        T* gh = ghs[t];
        T* gx = gxs[t];
        const T* a = as[t];
        const T* h_prev = hs[t];
        const T* saved_n = ns[t];
        const T* grad_o = grad_outs[t];
        over_rows(batch, width, [&](int64_t n) {
          const int64_t k = n * hidden, r = 3 * k;
          if (mask(t, n)) {
            gru_backward_row<T, kResetAfter>(a + r, h_prev + k, saved_n + k, grad_o + k,
                                             grad_state + k, g_new + k, gh + r, gx + r,
                                             g_prev + k, hidden);
          } else {  // past the end: no gradient for the gates, the state's passes through
            std::fill(gh + r, gh + r + 3 * hidden, T(0));
            if constexpr (kResetAfter) std::fill(gx + r, gx + r + 3 * hidden, T(0));
            std::fill(g_new + k, g_new + k + hidden, T(0));
          }
        });
        if constexpr (kResetAfter) {
          matmul(gh, width, w, hidden, g_prev, hidden, batch, width, hidden, true);
        } else {  // grad_reset_h = grad_n_pre W_hn, then grad_prev += grad_rz_pre [W_hr; W_hz]
          matmul(gh + 2 * hidden, width, w + 2 * hidden * hidden, hidden, g_reset, hidden, batch,
                 hidden, hidden);
          over_rows(batch, hidden, [&](int64_t n) {
            const int64_t k = n * hidden, r = 3 * k;
            gru_backward_row_reset<T>(a + r, h_prev + k, g_new + k, g_reset + k, gh + r,
                                      g_prev + k, hidden);
          });
          matmul(gh, width, w, hidden, g_prev, hidden, batch, 2 * hidden, hidden, true);
        }
        copy_valid_rows<T>(mask, t, g_prev, grad_state, batch, hidden);
      }
    });
  });
  return {grad_x_proj, grad_h, grad_hidden};
}

// For the tests: how many parts over_units would cut a step into, and how many distinct threads
// at::parallel_for really runs a two-part loop on (1 where the build ignores OpenMP).
int64_t parts_for(int64_t batch, int64_t width, int64_t hidden) {
  return unit_parts(batch, width, hidden);
}

int64_t parallel_threads() {
  std::atomic<int64_t> calls{0};
  std::atomic<int64_t> arrived{0};
  at::parallel_for(0, 2, 1, [&](int64_t begin, int64_t end) {
    calls.fetch_add(1);
    arrived.fetch_add(end - begin);
    // hold each call until both parts have started, so that one thread cannot run both
    for (int64_t spins = 0; arrived.load() < 2 && spins < (1 << 22); ++spins) {
      std::this_thread::yield();
    }
  });
  return calls.load();
}

}  // namespace

TORCH_LIBRARY(seqlab_scan, m) {
  m.def("parts_for", &parts_for);
  m.def("parallel_threads", &parallel_threads);
  m.def("rnn_forward", &rnn_forward);
  m.def("rnn_backward", &rnn_backward);
  m.def("lstm_forward", &lstm_forward);
  m.def("lstm_backward", &lstm_backward);
  m.def("gru_forward", &gru_forward);
  m.def("gru_backward", &gru_backward);
}
