// CUDA kernels for the MLP: the GPU counterpart of nnpar/kernels.hpp. Plain C++ API (only
// cudaStream_t leaks through), all pointers are device pointers, all matrices row-major fp32,
// every call is asynchronous on `stream` and capturable into a CUDA graph (no allocation, no
// synchronisation, no host reads of device data).
//
// The three GEMM forms a Linear layer needs each carry their element-wise neighbour in the
// epilogue so that a training step is as few launches as possible:
//   forward       Y[M,N]  = act(X[M,K] W[N,K]^T + b)             (act: identity or sigmoid)
//   weight grad   dW[N,K] (+)= dY[M,N]^T X[M,K], db[N] (+)= sum_m dY[m,:]   (+ optional SGD)
//   input grad    dX[M,K] = (dY[M,N] W[N,K]) * H (1 - H)          (H: the sigmoid output, or none)
// Short-and-deep products (few output tiles, long K) are split over K across blocks; the
// partial tiles are summed in a fixed order by the last block to finish, so results are
// deterministic run to run. That needs scratch memory, sized by gemm_scratch_size.
#pragma once
#include <cstddef>
#include <cstdint>

#include <cuda_runtime_api.h>

namespace nnpar::cuda {

// Throws std::runtime_error("WHAT: cuda error string") when status is not cudaSuccess.
void check(cudaError_t status, const char* what);

// Process-wide launch choices of the functions below (each plugin links its own copy). They
// are read when a kernel is launched, so a captured graph keeps the choice made at capture.
enum class MmaPrecision { fp32, tf32, bf16 };

struct KernelOptions {
  // Programmatic dependent launch (sm_90+): each kernel may be launched while its predecessor
  // on the stream still runs and waits on the device for it (griddepcontrol), so consecutive
  // kernels overlap their launch latency. Stream capture keeps these programmatic edges.
  bool pdl = false;
  // Forward and input-gradient products with at most this many rows use warp-per-output
  // (GEMV-style) kernels instead of split-K tiles: no partial tiles, no fix-up pass. 0: never.
  int gemv_max_rows = 8;
  // softmax_xent with <= 32 classes: a warp per row, a lane per class, over many blocks when
  // the caller gives scratch (else a thread per row in one block, beyond 32 rows).
  bool warp_softmax = true;
  // Split-K products are cut into about this many blocks (0: 132, an H100's SM count). Scratch
  // sizes (gemm_scratch_size) depend on it: size scratch after setting it.
  int split_blocks = 0;
  // GEMM blocks load this many K tiles at once (1 or 4; > 1 means 4): fewer dependent global
  // round trips per block, same sums in the same order.
  int k_stage = 4;
  // tf32 / bf16: the tiled products that reduce over more than 8 terms (not the GEMV kernels
  // of batches <= gemv_max_rows, not the weight gradients of batches <= 8, not the fused
  // logits kernel) on tensor cores: operands rounded to TF32 (10-bit mantissa) or BF16 (7-bit),
  // fp32 accumulation; needs sm_80+. Results differ from fp32 by that rounding but still
  // repeat bit for bit.
  MmaPrecision precision = MmaPrecision::fp32;
};
void set_kernel_options(const KernelOptions& options);
KernelOptions kernel_options();

// Which sample row r of the current batch is: order[*step * batch + r], or r itself when
// order is null. `step` is a device counter, so a captured graph can be replayed for
// consecutive batches without changing its parameters; softmax_xent advances it.
struct RowIndex {
  const std::uint32_t* order = nullptr;
  const int* step = nullptr;  // null = step 0
  int batch = 0;
};

// Scratch for split-K GEMMs (products planned with the GEMV kernels never use it). Products running concurrently need separate scratch; the
// counters must be zero before first use (they are left zero after each call).
struct GemmScratch {
  float* partials = nullptr;     // null: never split over K
  unsigned* counters = nullptr;
  // Their sizes, when known: a product whose split would need more runs unsplit instead of
  // overrunning them (slower, same result). 0 = sized by gemm_scratch_size for every shape used.
  std::size_t partial_floats = 0, counter_count = 0;
};
enum class GemmForm { forward, weight_grad, input_grad };
// Floats of partials and number of counters a product of this shape and form needs (both 0
// when it is not split). M, N, K are the forward-pass names of that form's signature below.
void gemm_scratch_size(GemmForm form, int M, int N, int K, std::size_t* floats, std::size_t* counters);
// The same for a product that runs with any of `row_counts` (a range of int) as M: the largest
// need of each, so one scratch serves every batch size an epoch uses (full and partial batches,
// uneven shards or micro-batches).
template <class RowCounts>
void gemm_scratch_size(GemmForm form, const RowCounts& row_counts, int N, int K, std::size_t* floats,
                       std::size_t* counters) {
  *floats = *counters = 0;
  for (int rows : row_counts) {
    std::size_t f = 0, c = 0;
    gemm_scratch_size(form, rows, N, K, &f, &c);
    if (f > *floats) *floats = f;
    if (c > *counters) *counters = c;
  }
}
// Thread blocks of a tiled product that fit on one SM of the current device at once (the
// fp32 weight-gradient kernel with 32x32 tiles; every tiled product is bounded alike), for the
// cost model's block simulation (nnpar calibrate --gpu).
int gemm_blocks_per_sm();

// Forward: Y[M,N] = act(X[M,K] W[N,K]^T + b). b may be null.
void linear_forward(int M, int N, int K, const float* X, const float* W, const float* b, bool sigmoid,
                    float* Y, GemmScratch scratch, cudaStream_t stream);

// Forward of the first layer straight from the uint8 dataset: X[m,k] = pixels[row(m)*K+k] * scale
// with row() from `rows`. The gathered floats are also written to X_out (for the weight
// gradient later in the step) when X_out is not null.
void linear_forward_gather(int M, int N, int K, const std::uint8_t* pixels, float scale, RowIndex rows,
                           float* X_out, const float* W, const float* b, bool sigmoid, float* Y,
                           GemmScratch scratch, cudaStream_t stream);

// The epoch's input staged once as floats in its shuffled order (stage_epoch_input), read by
// the step through the device step counter: X[m,:] = base[((*step + step_delta) * batch + m) * K ..].
// Forward 0 then reads contiguous float rows (no order lookup, no uint8 conversion) and the
// weight gradient of layer 0 reads the same rows instead of a copy the forward wrote.
// step_delta: -1 for kernels that run after softmax_xent advanced the counter in the step.
struct StagedRows {
  const float* base = nullptr;
  const int* step = nullptr;  // null = step 0
  int batch = 0;
  int step_delta = 0;
};
// out[p, :] = pixels[order[p], :] * scale for p < rows (order null: p itself): the same floats
// GatherSrc (linear_forward_gather) computes, so the products that read them sum the same values.
void stage_epoch_input(std::size_t rows, int features, const std::uint8_t* pixels, float scale,
                       const std::uint32_t* order, float* out, cudaStream_t stream);
// linear_forward with X given as staged rows (same plan, same sums as linear_forward).
void linear_forward_staged(int M, int N, int K, StagedRows X, const float* W, const float* b, bool sigmoid,
                           float* Y, GemmScratch scratch, cudaStream_t stream);

// Optional SGD fused into the weight-gradient epilogue (PyTorch semantics, as
// kernels::sgd_update): g = grad + wd*p; v = momentum*v + g; p -= lr*(momentum ? v : g).
// Only safe when nothing reads W/b concurrently (the step must have finished its input grad).
struct FusedSgd {
  float lr = 0, momentum = 0, weight_decay = 0;
  float* W = nullptr;    // null: no update
  float* b = nullptr;
  float* vW = nullptr;   // velocity slices, needed when momentum != 0
  float* vb = nullptr;
};

// More places a weight gradient's values are written to, as the epilogue writes dW and db:
// nccl-data's `reduce = "push_p2p"` has each rank's products store their gradient into every
// peer's memory (CUDA IPC mappings over NVLink/PCIe) while they run, so the step's final sum
// reads local memory only. Each copy has dW's (and db's) layout. A product with copies ends
// with a system-scope fence in every thread, so the copies have landed when it completes.
// Products without copies compile to the same kernels as before (a separate epilogue type).
constexpr int kMaxGradientCopies = 7;
struct GradientCopies {
  int count = 0;
  float* dW[kMaxGradientCopies] = {};
  float* db[kMaxGradientCopies] = {};  // null where db is null
};

// Weight gradient: dW[N,K] = (accumulate ? dW : 0) + dY[M,N]^T X[M,K], likewise
// db[N] = (accumulate ? db : 0) + column sums of dY (db may be null). With sgd.W set, the
// parameters are then updated in place from the new gradient. `copies` get the same values
// as dW and db.
void linear_weight_grad(int M, int N, int K, const float* dY, const float* X, bool accumulate,
                        float* dW, float* db, const FusedSgd& sgd, cudaStream_t stream,
                        const GradientCopies& copies = {});

// linear_weight_grad with X given as staged rows (same plan, same sums).
void linear_weight_grad_staged(int M, int N, int K, const float* dY, StagedRows X, bool accumulate,
                               float* dW, float* db, const FusedSgd& sgd, cudaStream_t stream,
                               const GradientCopies& copies = {});

// Writes zeros to n floats at every copy's dW (a rank with no samples pushes a zero gradient).
void zero_gradient_copies(std::size_t n, const GradientCopies& copies, cudaStream_t stream);

// Rows [n0, n1) of the same weight gradient (dW, db and sgd still point at row 0): the same
// sums in the same order, so a product split into row blocks gives the same values. nccl-data
// splits layer 0's product so each block's allreduce starts while the next is computed.
void linear_weight_grad_rows(int M, int N, int K, int n0, int n1, const float* dY, const float* X,
                             bool accumulate, float* dW, float* db, const FusedSgd& sgd, cudaStream_t stream);

// Input gradient: dX[M,K] = (dY[M,N] W[N,K]) * H*(1-H) elementwise when H (the previous
// sigmoid's output, [M,K]) is not null, else the plain product.
void linear_input_grad(int M, int N, int K, const float* dY, const float* W, const float* H, float* dX,
                       GemmScratch scratch, cudaStream_t stream);

// Softmax + cross-entropy forward and backward in one pass over the logits [rows, classes]:
// dlogits = scale * (softmax - onehot(label)); probs (optional) gets the softmax. Adds the
// summed loss (-log p[label], as kernels::softmax_xent_forward) to *loss_sum and the number of
// rows whose first arg-max of the probabilities is the label to *correct. Labels are
// labels[row(r)]. When advance_step is set, *rows.step is incremented afterwards (the
// batch's last reader of the order must be this kernel or earlier).
void softmax_xent(int rows, int classes, const float* logits, const std::int32_t* labels, RowIndex index,
                  float scale, float* probs, float* dlogits, double* loss_sum,
                  unsigned long long* correct, bool advance_step, cudaStream_t stream);
// The same spread over many blocks (a warp per row; classes <= 32 and warp_softmax), which
// needs softmax_xent_scratch(rows, classes) doubles of scratch, zeroed before first use and
// left so (0: this shape runs in one block and scratch may be null). Concurrent calls need
// separate scratch. With null scratch, the one-block kernels above.
std::size_t softmax_xent_scratch(int rows, int classes);
// softmax_xent (a warp per row, any warp_softmax setting) fused with the last Linear's input
// gradient: also dX[r,k] = (sum_c dlogits[r,c] W[c,k]) * H[r,k](1 - H[r,k]) for k < K, W the
// last layer's [classes, K] weights, H its input (the sigmoid output; null: no derivative).
// One kernel instead of two. Returns false, launching nothing, where it does not apply
// (classes > 32, or a multi-block row count without scratch).
bool softmax_xent_input_grad(int rows, int classes, const float* logits, const std::int32_t* labels,
                             RowIndex index, float scale, float* dlogits, double* loss_sum,
                             unsigned long long* correct, bool advance_step, int K, const float* W, const float* H,
                             float* dX, cudaStream_t stream, double* scratch);
void softmax_xent(int rows, int classes, const float* logits, const std::int32_t* labels, RowIndex index,
                  float scale, float* probs, float* dlogits, double* loss_sum,
                  unsigned long long* correct, bool advance_step, cudaStream_t stream, double* scratch);
// The last Linear's forward and softmax_xent (multi-block form, same scratch) in one kernel:
// logits[r,c] = sum_k H[r,k] W[c,k] + b[c] (H: [rows, K], W: [classes, K]; logits may be null,
// b may be null), then softmax_xent on them. Needs logits_softmax_xent_scratch(rows, classes)
// doubles of scratch, zeroed before first use and left so (0: one block, scratch may be null).
// Returns false, launching nothing, where it does not apply (classes > 32, or no scratch where
// it needs some).
std::size_t logits_softmax_xent_scratch(int rows, int classes);
// With dX (may be null) also the last Linear's input gradient, as linear_input_grad would give
// it: dX[r,k] = sum_c dlogits[r,c] W[c,k], times H[r,k](1 - H[r,k]) when sigmoid_input.
bool logits_softmax_xent(int rows, int classes, int K, const float* H, const float* W, const float* b, float* logits,
                         const std::int32_t* labels, RowIndex index, float scale, float* dlogits, double* loss_sum,
                         unsigned long long* correct, bool advance_step, cudaStream_t stream, double* scratch,
                         float* dX = nullptr, bool sigmoid_input = true);

// x[r,:] = pixels[row(r),:] * scale, y[r] = labels[row(r)] (y may be null).
void gather_batch(int rows, int features, const std::uint8_t* pixels, const std::int32_t* labels,
                  RowIndex index, float scale, float* x, std::int32_t* y, cudaStream_t stream);

// The flat-buffer SGD update, kernels::sgd_update's semantics; velocity may be null when
// momentum == 0.
void sgd_update(std::size_t n, float lr, float momentum, float weight_decay, float* params,
                const float* grads, float* velocity, cudaStream_t stream);

// x[i] *= factor (weighted parameter averaging).
void scale(std::size_t n, float factor, float* x, cudaStream_t stream);

}  // namespace nnpar::cuda
