// CPU math kernels: the only place where floating-point loops over matrices live.
// Everything is row-major float32. These functions know nothing about layers,
// models or parallelism; they are what layers call.
#pragma once
#include <cstddef>
#include <cstdint>

namespace nnpar::kernels {

// C[M,N] = alpha * A[M,K] * B[K,N] + beta * C
void gemm_nn(int M, int N, int K, float alpha, const float* A, int lda, const float* B, int ldb,
             float beta, float* C, int ldc);
// C[M,N] = alpha * A[M,K] * B[N,K]^T + beta * C      (Linear forward: X * W^T)
void gemm_nt(int M, int N, int K, float alpha, const float* A, int lda, const float* B, int ldb,
             float beta, float* C, int ldc);
// C[M,N] = alpha * A[K,M]^T * B[K,N] + beta * C      (Linear weight gradient: dY^T * X)
void gemm_tn(int M, int N, int K, float alpha, const float* A, int lda, const float* B, int ldb,
             float beta, float* C, int ldc);

// Y[r,:] += bias for every row r.
void add_bias_rows(int rows, int cols, const float* bias, float* Y);
// Y[r,:] = sigmoid(Y[r,:] + bias): the fused form Linear+Sigmoid forward can use.
void bias_sigmoid_rows(int rows, int cols, const float* bias, float* Y);
// y = 1 / (1 + exp(-x)), element-wise; x and y may alias.
void sigmoid_forward(std::size_t n, const float* x, float* y);
// gx = gy * y * (1 - y), where y is the sigmoid output; gy and gx may alias.
void sigmoid_backward(std::size_t n, const float* y, const float* gy, float* gx);
// out[c] = beta * out[c] + alpha * sum_r G[r,c]   (bias gradient)
void column_sums(int rows, int cols, float alpha, const float* G, float beta, float* out);

// Row-wise softmax of logits into probs; returns the SUM over rows of -log(p[label]).
// labels are class indices in [0, classes).
double softmax_xent_forward(int rows, int classes, const float* logits, const std::int32_t* labels,
                            float* probs);
// glogits[r,:] = scale * (probs[r,:] - onehot(label[r])); scale is usually 1/global_batch.
void softmax_xent_backward(int rows, int classes, const float* probs, const std::int32_t* labels,
                           float scale, float* glogits);
// Number of rows whose arg-max (first maximum) equals the label.
int count_correct(int rows, int classes, const float* scores, const std::int32_t* labels);

// SGD with optional momentum and weight decay (PyTorch semantics):
//   g = grad + weight_decay * p;  v = momentum * v + g (if momentum != 0);  p -= lr * (v or g)
// velocity may be null when momentum == 0.
void sgd_update(std::size_t n, float lr, float momentum, float weight_decay, float* params,
                const float* grads, float* velocity);

}  // namespace nnpar::kernels
