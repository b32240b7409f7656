// Point-to-point exchanges between the blocks of a thread-block cluster (sm_90): a sender
// stores floats into another block's shared memory with st.async, each store completing its
// bytes on an mbarrier in the receiver; the receiver arms that barrier with the bytes it
// expects and waits on it. No block waits for any block it does not receive from, and no fence
// or cluster barrier is needed: the byte count is the signal, and a thread whose wait returns
// sees every byte that phase counted.
//
// Why not the cluster barrier: on an H100 an all-to-all among 16 blocks of 512 threads costs
// ~235 ns this way against ~765 ns as remote stores plus barrier.cluster, which alone is
// ~715 ns (bench/cluster_exchange.cu; docs/results/2026-11-28-cuda-resident-4.md).
//
// Reuse: a barrier completes one phase per use. The receiver arms phase n + 1 only after its
// wait on phase n returned, and a sender must not store for phase n + 1 before the receiver
// has finished reading phase n's data; the callers' comments say what orders that. Bytes that
// land before the arming drive the transaction count below zero, which the arming restores.
#pragma once

namespace nnpar::cuda {

__device__ __forceinline__ unsigned shared_address(const void* p) { return unsigned(__cvta_generic_to_shared(p)); }

// The same shared-memory location in block `rank` of the cluster.
__device__ __forceinline__ unsigned cluster_address(unsigned local, unsigned rank) {
  unsigned out;
  asm volatile("mapa.shared::cluster.u32 %0, %1, %2;" : "=r"(out) : "r"(local), "r"(rank));
  return out;
}

// One thread, before any block of the cluster may use the barrier (a cluster barrier follows).
// `arrivals`: the receiver's own arming is the one arrival a phase needs.
__device__ __forceinline__ void exchange_init(unsigned long long* bar, unsigned arrivals = 1) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" ::"r"(shared_address(bar)), "r"(arrivals) : "memory");
}
__device__ __forceinline__ void exchange_init_fence() {
  asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
}

// One thread of the receiving block: this phase completes when `bytes` more have landed.
__device__ __forceinline__ void exchange_arm(unsigned long long* bar, unsigned bytes) {
  asm volatile("mbarrier.arrive.expect_tx.release.cta.shared::cta.b64 _, [%0], %1;" ::"r"(shared_address(bar)),
               "r"(bytes)
               : "memory");
}

// Stores `value` at `slot` (an address in this block's shared memory) in block `rank`,
// completing 4 bytes on that block's `bar` (the same barrier's address in this block).
__device__ __forceinline__ void exchange_send(float* slot, unsigned long long* bar, unsigned rank, float value) {
  asm volatile("st.async.shared::cluster.mbarrier::complete_tx::bytes.f32 [%0], %1, [%2];" ::"r"(
                   cluster_address(shared_address(slot), rank)),
               "f"(value), "r"(cluster_address(shared_address(bar), rank))
               : "memory");
}

// Any number of the receiving block's threads: returns once the phase of parity `parity` has
// completed, with every byte it counted visible to the caller.
//   exchange_wait: for phases that count only bytes written by st.async or the TMA
//     (complete_tx). The barrier itself makes them visible, so an acquire at CTA scope suffices
//     (as CUTLASS waits on its transaction barriers). An acquire at cluster scope also
//     invalidates the SM's L1 on every wait (CCTL.IVALL). The CTA scope made the fp32 resident
//     kernel 1.009x faster at batch 1, with the same bits (docs/results/2026-11-28-cuda-resident-5.md).
//   exchange_wait_cluster: for phases completed by other blocks' arrivals that release their
//     plain stores (mbarrier.arrive.release.cluster). Only an acquire at cluster scope pairs
//     with them.
template <bool ClusterScope>
__device__ __forceinline__ void wait_phase(unsigned long long* bar, unsigned parity) {
  unsigned done = 0;
  do {
    if constexpr (ClusterScope) {
      asm volatile(
          "{ .reg .pred p; mbarrier.try_wait.parity.acquire.cluster.shared::cta.b64 p, [%1], %2; selp.u32 %0, 1, 0, p; }"
          : "=r"(done)
          : "r"(shared_address(bar)), "r"(parity)
          : "memory");
    } else {
      asm volatile(
          "{ .reg .pred p; mbarrier.try_wait.parity.acquire.cta.shared::cta.b64 p, [%1], %2; selp.u32 %0, 1, 0, p; }"
          : "=r"(done)
          : "r"(shared_address(bar)), "r"(parity)
          : "memory");
    }
  } while (!done);
}
__device__ __forceinline__ void exchange_wait(unsigned long long* bar, unsigned parity) { wait_phase<false>(bar, parity); }
__device__ __forceinline__ void exchange_wait_cluster(unsigned long long* bar, unsigned parity) {
  wait_phase<true>(bar, parity);
}

}  // namespace nnpar::cuda
