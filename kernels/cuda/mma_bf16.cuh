// The BF16 tensor-core primitives shared by the tiled GEMMs (mlp_kernels.cu) and the resident
// tensor-core kernel (resident_mma.cu): one rounding and one instruction form for both.
#pragma once

namespace nnpar::cuda {

// Two floats as BF16 (round to nearest even), lo in the low half: an mma.m16n8k16 operand
// register holds k and k+1 that way.
__device__ __forceinline__ unsigned to_bf16x2(float lo, float hi) {
  unsigned r;
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
#else
  r = 0;
  __trap();  // the host refuses bf16 below compute capability 8.0
#endif
  return r;
}

// d += a * b for one 16x8x16 BF16 tile (fragments as PTX's mma.m16n8k16 .row.col lays them out:
// lane (g, q) = (lane / 4, lane % 4) holds A rows g and g + 8 at k pairs 2q and 2q + 8, B column
// g at the same k pairs, and d[0..1] = (g, 2q..2q+1), d[2..3] = (g + 8, 2q..2q+1)).
__device__ __forceinline__ void mma_bf16(float* d, const unsigned* a, const unsigned* b) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
               "{%0,%1,%2,%3};"
               : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#else
  __trap();
#endif
}

}  // namespace nnpar::cuda
