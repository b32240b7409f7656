// Packed-B GEMM pieces for callers that split one product over several threads
// (GotoBLAS/BLIS style): op(B) is packed ONCE into panels that every thread reads, each
// thread packs only the rows of op(A) it needs and computes a rectangle of C tiles.
// These functions do no threading themselves (kernels/ stays free of parallelism); the
// caller decides who packs which panels and who computes which rectangle.
//
// Results are bit-identical to gemm_nn / gemm_nt / gemm_tn of the same shape: the same
// micro-kernel, the same K blocking (a function of K alone) and the same per-element
// operation sequence, whatever rows/panels rectangle an element is computed in.
#pragma once
#include <cstddef>

namespace nnpar::kernels {

// Where each NR-column panel of a packed op(B) [K x N] lives. Panel j (columns
// [j*nr, min(N, (j+1)*nr))) is one contiguous K*nr block; the values depend on the GEMM
// code path (ISA) active when the layout was made, which packing and compute must share.
struct PackedB {
  int K = 0, N = 0;
  int nr = 1;      // panel width in columns
  int mr = 1;      // micro-tile rows: row ranges that are multiples of it waste no work
  int mc = 1;      // rows of op(A) packed at a time: the granularity of gemm_packed_rows
  int panels = 0;  // ceil(N / nr)
  int isa = 0;
  std::size_t floats() const { return std::size_t(panels) * std::size_t(nr) * std::size_t(K); }
  int panel_begin_col(int j) const { return j * nr < N ? j * nr : N; }
};

PackedB packed_b_layout(int K, int N);

// The same with panels of at most 16 columns (one 64-byte line of a float row), for callers
// that give each thread its own lines of an output's columns: 16 x 16 tiles on AVX-512 (the
// default there is 8 x 32); the other paths' panels are already <= 16 wide, so this equals
// packed_b_layout there. Results are the same bits as every other layout.
PackedB packed_b_layout_narrow(int K, int N);

// Packs panels [p0, p1) of op(B) into Bp (layout.floats() floats, 64-byte aligned is best).
// trans = false: op(B) = B, B is K x N with row stride ldb (gemm_nn/gemm_tn's B);
// trans = true:  op(B) = B^T, B is N x K with row stride ldb (gemm_nt's B, e.g. a weight).
void pack_b_panels(const PackedB& layout, const float* B, int ldb, bool trans, int p0, int p1,
                   float* Bp);

// C[m0:m1, cols of panels p0:p1] = alpha * op(A) * op(B) + beta * C, with op(B) from Bp.
// transA = false: op(A) = A, A is M x K with row stride lda (gemm_nn/gemm_nt's A);
// transA = true:  op(A) = A^T, A is K x M with row stride lda (gemm_tn's A).
// Row indices are absolute (A and C point at row 0). beta == 0 does not read C.
void gemm_packed_rows(const PackedB& layout, int m0, int m1, int p0, int p1, float alpha,
                      const float* A, int lda, bool transA, const float* Bp, float beta, float* C,
                      int ldc);

}  // namespace nnpar::kernels
