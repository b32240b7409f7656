// The performance model behind `nnpar plan` (issue 11): what one training step of each
// strategy costs on a machine described by a calibrated profile (`nnpar calibrate`).
//
//   compute        per kernel, from calibrated times of our own kernels at layer shapes
//                  (interpolated over rows, corrected from the nearest calibrated shape), or
//                  from a fitted form  t = call + flops * per_flop + elements * per_element;
//   communication  alpha-beta: ring allreduce  call + 2(p-1) alpha + 2(p-1)/p n/B, tree
//                  allreduce  call + 2 ceil(log2 p) alpha + 2 n/B (the cheaper one is taken),
//                  point-to-point  call + alpha + n/B; measured tables where the rank count was
//                  calibrated (carried by the formula to other rank counts), device-side
//                  tables for collectives the host does not wait for, presets (NVLink,
//                  InfiniBand NDR, 100 GbE) to extrapolate, with a two-level (node, cluster)
//                  allreduce beyond one node; hidden collectives still cost overlap_share;
//   GPU streams    the backward's two streams simulated block by block on the SMs
//                  (simulate_blocks, the kernels' own tiling) when the profile calibrated how
//                  SMs share blocks, else by the kernels' calibrated shares of the GPU
//                  (simulate_streams) when it has them;
//   schedules      pipelines are simulated op by op with the trainer's own schedule
//                  (schedule_ops in plugins/common/pipeline.hpp), so the bubble, unequal stages
//                  and transfer delays come out of one model; data-parallel overlap of the
//                  per-layer allreduce with the backward is simulated the same way.
//
// docs/plan.md documents the model, its assumptions and the profile schema.
#pragma once
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace nnpar::perf {

// A profile that cannot be used; what() names the file and the key ("p.json: gpu.kernels: ...").
class ProfileError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// ---------------------------------------------------------------------------------------------
// Closed forms (also used by the tests on hand-computed cases)

struct Link {
  double alpha_s = 0;       // latency per message hop
  double bytes_per_s = 1;   // bandwidth per direction per worker
};
// call + 2(p-1) alpha + 2(p-1)/p * bytes / B
double ring_allreduce_seconds(double bytes, int ranks, const Link& link, double call_s = 0);
// call + 2 ceil(log2 p) alpha + 2 bytes / B (reduce up a binary tree, broadcast down, pipelined)
double tree_allreduce_seconds(double bytes, int ranks, const Link& link, double call_s = 0);
double p2p_seconds(double bytes, const Link& link, double call_s = 0);
// The idle fraction of an ideal pipeline (equal stages, free transfers): (S-1)/(M+S-1).
double bubble_fraction(int stages, int micro_batches);

// ---------------------------------------------------------------------------------------------
// The machine profile

// t = call + flops * per_flop + elements * per_element
struct KernelFit {
  double call_s = 0, per_flop_s = 0, per_element_s = 0;
  double seconds(double flops, double elements) const { return call_s + flops * per_flop_s + elements * per_element_s; }
};

// The three products of a Linear layer, named by what they compute. For a layer in -> out on
// `rows` samples: forward Y = X W^T (rows x out, inner in), weight_grad dW = dY^T X (out x in,
// inner rows), input_grad dX = dY W (rows x in, inner out). Same flops (2 rows in out).
enum class Form { forward, weight_grad, input_grad };
const char* form_name(Form f);

struct KernelPoint {
  int rows = 0, in = 0, out = 0;
  double seconds = 0;
  // GPU: the share of the device's throughput the kernel takes (nnpar-calibrate-gpu times 4
  // copies of its chain on 4 streams at once: share = max(1, T4 / T1) / 4, so 0.25..1);
  // 0 = not measured (older profiles).
  double share = 0;
};

class KernelTable {
 public:
  std::vector<KernelPoint> points;
  KernelFit fit;
  // Least squares on relative error over the points (fills `fit`); keeps fit when < 3 points.
  void fit_points();
  double seconds(int rows, int in, int out) const;
  // The measured share at the nearest calibrated shape, interpolated over rows; 1 where the
  // table has none (a kernel then never overlaps another).
  double share(int rows, int in, int out) const;
  bool has_shares() const;
  // Mean and largest |fit - measured| / measured over the points (how well the fit describes them).
  std::pair<double, double> fit_error() const;
};

// Elementwise and other streaming operations: time vs element count, log-log interpolated.
class StreamTable {
 public:
  std::vector<std::pair<double, double>> points;  // (elements, seconds), sorted by elements
  double seconds(double elements) const;
};

// Collectives of one communicator: measured allreduce tables per rank count and p2p, or fits.
struct CommProfile {
  std::map<int, std::vector<std::pair<double, double>>> allreduce;  // ranks -> (bytes, seconds)
  // The same inside a CUDA graph (NCCL only; what nccl-data's replayed steps pay), when measured.
  std::map<int, std::vector<std::pair<double, double>>> graph_allreduce;
  // MPI's non-blocking allreduce, posted and waited for ("iallreduce"; what mpi-data's
  // overlapped buckets and the hybrids' per-layer reductions run), when measured.
  std::map<int, std::vector<std::pair<double, double>>> iallreduce;
  std::vector<std::pair<double, double>> p2p;                       // (bytes, seconds) one way
  // Derived (or given): per-call overhead, per-hop latency, bandwidth.
  double call_s = 0;
  Link link;
  double p2p_call_s = 0;
  Link p2p_link;
  double host_call_s = 0;  // host cost of issuing one operation (NCCL: the enqueue)
  // Device-side send/recv (one way) queued behind other work, the host not waiting (NCCL,
  // nnpar-calibrate-gpu's "stream_p2p"); empty in older profiles: see device_p2p().
  std::vector<std::pair<double, double>> stream_p2p;
  // Latency per ring hop used to carry a table measured at one rank count to another when the
  // calibration cannot separate it from the per-call cost (a single rank count: alpha = 0).
  // Profile key "hop_latency_s"; when absent, kNcclHopLatencyS for NCCL, 0 for MPI.
  double hop_latency_s = -1;
  // Compute time of a GPU with NCCL kernels resident beside it (a posted receive spinning on
  // its SMs), over the time alone (nnpar-calibrate-gpu's "pending_slowdown"; 1 when absent).
  double pending_slowdown = 1;
  // The same per size of the posted receive ("pending_slowdown_by_bytes"; empty in older
  // profiles): NCCL spreads a larger message over more channels, so more of its blocks spin.
  std::vector<std::pair<double, double>> pending_slowdown_by_bytes;
  // The slowdown beside a posted receive of `bytes`: log-linear between the measured sizes,
  // the nearest one outside them; `pending_slowdown` when no sizes were measured.
  double pending_slowdown_at(double bytes) const;
  // How much of a collective that runs beside compute still costs the compute: 0 = hidden
  // completely, 1 = not at all (nnpar-calibrate-gpu's "overlap_share": products each followed
  // by an allreduce on the communicator's stream, in a graph; 0 when absent).
  double overlap_share = 0;
  // nccl-data's reduce = "fused_p2p": one kernel that waits for every peer on the device, reads
  // their gradients over P2P and applies the SGD update (nnpar-calibrate-gpu's "peer_sgd":
  // ranks -> (parameters, seconds per step), in a graph); empty in older profiles, which then
  // model the NCCL allreduce + update in its place.
  std::map<int, std::vector<std::pair<double, double>>> peer_sgd;
  // reduce = "push_p2p" (nccl-data 1.9's auto): the same kernel summing local slots, which the
  // products filled by writing into the peers' memory ("peer_sgd_push"); empty in profiles
  // before it, which then price push_p2p as peer_sgd.
  std::map<int, std::vector<std::pair<double, double>>> peer_sgd_push;
  // What pushing adds to each weight-gradient product: ranks -> (gradient elements, seconds
  // per product), measured at 1024 rows ("push_overhead"); empty in older profiles.
  std::map<int, std::vector<std::pair<double, double>>> push_overhead;
  bool measured() const { return !allreduce.empty(); }
  // The per-hop latency for moving between rank counts: fitted alpha, else the profile's or
  // the assumed hop latency.
  double hop_alpha(bool nccl) const;
};

// NCCL's own tuning model (src/graph/tuning.cc: hwLat for NVLink, LL protocol, ring) charges
// 0.6 us per ring step; what the plan assumes per hop when a profile measured one rank count.
inline constexpr double kNcclHopLatencyS = 0.6e-6;

struct DeviceProfile {
  std::string name;
  bool gpu = false;
  int count = 1;                  // cores (CPU) or GPUs on one node
  double memory_bytes = 0;        // per worker: RAM of the host (CPU), memory of one GPU
  std::map<Form, KernelTable> kernels;
  std::map<std::string, StreamTable> streams;
  // GPU: latency of one kernel between dependent kernels in a CUDA graph and with plain
  // launches, and the host's cost to enqueue one plain launch.
  double graph_latency_s = 0, plain_latency_s = 0, launch_s = 0;
  // GPU: streaming multiprocessors, and how they share GEMM blocks (gpu.coresidence): at most
  // gemm_blocks_per_sm resident, a second one adding second_block_gain of one block's
  // throughput. gain < 0: not calibrated (older profiles; the shares model applies).
  int multiprocessors = 0, gemm_blocks_per_sm = 0;
  double second_block_gain = -1;
  bool block_model() const { return gpu && multiprocessors > 0 && gemm_blocks_per_sm > 0 && second_block_gain >= 0; }
  // CPU (OpenMP): barrier cost and the slowdown of T threads computing at once, per T.
  std::vector<std::pair<double, double>> barrier;      // (threads, seconds)
  std::vector<std::pair<double, double>> concurrency;  // (threads, time with T busy / time alone)
  double kernel(Form f, int rows, int in, int out) const;
  double stream(const std::string& op, double elements) const;
  double barrier_seconds(int threads) const;
  double slowdown(int workers) const;
};

// Calibrated points that their own neighbours contradict. A disturbance (another tenant, the
// host under a virtual machine) only ever slows a measurement, so a point is taken as disturbed
// when it took more than kDisturbedSlower longer than a larger size of the same curve: more rows
// or elements cannot take less time. The 30% margin leaves out the CPU products' real
// exceptions (one row takes up to 1.25x four rows in some weight gradients: another path); the
// disturbances seen were 2-6x. A point slower than its size explains but not slower than a
// larger one is not caught: our products' times do grow faster than the rows in places (input
// gradient 784x26: 3x from 512 to 1024 rows on every H100/H200 host calibrated).
inline constexpr double kDisturbedSlower = 0.3;
struct DisturbedPoint {
  std::string table;            // "forward 512x512" (in x out) or "stream add"
  double size = 0;              // rows, or elements
  double seconds = 0;           // as calibrated
  double neighbour_size = 0;    // the point that contradicts it
  double neighbour_seconds = 0;
};
// Indices into `curve` ((size, seconds), sorted by size) of the contradicted points, and in
// `neighbours` the index of the larger size that contradicts each.
std::vector<std::size_t> contradicted_points(const std::vector<std::pair<double, double>>& curve,
                                             std::vector<std::size_t>* neighbours = nullptr);
std::vector<DisturbedPoint> disturbed_points(const DeviceProfile& device);
// As JSON: [{"table", "size", "seconds", "neighbour_size", "neighbour_seconds"}, ...] (the
// profile's cpu.disturbed, plan's profile.disturbed_cpu_points).
nlohmann::json disturbed_points_json(const std::vector<DisturbedPoint>& points);
// One line: how many, and the worst few ("forward 512x512 rows 16: 637 us, rows 32: 327 us").
std::string describe_disturbed(const std::vector<DisturbedPoint>& points, std::size_t shown = 4);

struct Profile {
  std::string file;  // as given, for messages
  nlohmann::json json;
  std::optional<DeviceProfile> cpu, gpu;
  std::optional<CommProfile> mpi, nccl;
  std::string describe() const;
};

// Reads and validates; every problem is a ProfileError naming the file and the key.
Profile load_profile(const std::string& file);
Profile profile_from_json(const nlohmann::json& j, const std::string& shown);
// The schema version written by calibrate and accepted by load_profile.
inline constexpr const char* kProfileSchema = "nnpar-profile/1";

// ---------------------------------------------------------------------------------------------
// The interconnect beyond what was calibrated

struct Preset {
  std::string name, description;
  Link link;
};
const std::vector<Preset>& interconnect_presets();
const Preset& find_preset(const std::string& name);  // throws std::invalid_argument listing them

struct Network {
  // Within one node: the calibrated communicator, unless a preset replaces it.
  std::optional<Preset> intra;
  // Between nodes (workers beyond per_node).
  Preset inter = find_preset("ib-ndr");
  int per_node = 0;  // workers per node; 0 = the profile's device count
};

// ---------------------------------------------------------------------------------------------
// What is predicted

struct Workload {
  std::vector<int> layers;        // input, hidden..., classes
  int batch = 128;                // global batch
  std::size_t samples = 124800;   // per epoch
  bool momentum = false;
  bool drop_last = false;
};

// One strategy configuration: the plugin and the options that change its cost.
struct Candidate {
  std::string plugin;             // serial, openmp, mpi-data, nccl-data, mpi-pipeline, ... cuda
  int workers = 1;                // ranks, threads or GPUs
  std::string mode;               // openmp: intra_op | data_parallel; data: sync | local_sgd
  bool overlap = true;            // data sync, hybrid
  int period = 1;                 // local_sgd
  std::string schedule = "1f1b";  // pipeline, hybrid
  int micro_batches = 4;
  std::string partition = "auto";
  int data = 1;                   // hybrid replicas
  bool graph = true;              // cuda, nccl-data
  std::string fuse_logits = "auto";  // cuda, nccl-data (1.6): logits_fusion.hpp; results before: off
  std::string precision = "fp32";    // cuda: fp32 | tf32 (1.3) | bf16 (1.5); profiles time fp32 kernels only
  std::string variant = "graph";     // cuda: graph | persistent | resident (1.4) | auto; modelled as graph
  std::string reduce = "auto";       // nccl-data sync (1.5): nccl | fused_p2p | push_p2p (1.9) | auto; results before 1.5: nccl
  std::string omp_schedule = "dynamic";  // openmp intra_op: dynamic | static (1.2) | auto (1.3, modelled as dynamic)
  int tasks_per_thread = 4;              // openmp intra_op, dynamic
  int min_tile_mflop = 16;
  bool omp_traffic_priced = true;        // openmp intra_op 1.4: tile grids priced by operand traffic; before: by work
  bool one_block_softmax = false;        // results of nccl-tensor < 1.1, nccl-pipeline/-hybrid < 1.2 (noted, not priced)
  std::string label;              // as shown
  bool exact = true;              // parity class (local SGD: approximate)
  std::string describe() const;   // "nccl-pipeline 4 (1f1b, 8 micro-batches)"
};

struct Prediction {
  double step_s = 0;              // one full global batch
  double samples_per_s = 0;       // steady state: global batch / step_s
  double epoch_s = 0;             // Workload::samples, with the short last batch
  double epoch_samples_per_s = 0; // what a run reports: samples / epoch_s
  double compute_s = 0, comm_s = 0, idle_s = 0;  // per step, of the busiest worker; sum = step_s
  double memory_bytes = 0;        // per worker
  bool fits_memory = true;
  std::string note;               // assumptions that matter for this row
};

// Throws std::invalid_argument when the candidate cannot run (a pipeline deeper than the
// model, a profile without the device or communicator the plugin needs).
Prediction predict(const Profile& profile, const Network& net, const Workload& w, const Candidate& c);

// Every strategy family that can run on `workers` workers of the profile's device (`gpu`),
// with options from `hints` where the config gives them (period, micro_batches).
std::vector<Candidate> enumerate_candidates(const Profile& profile, const Network& net, bool gpu, int workers,
                                            const Workload& w, const std::vector<Candidate>& hints);

// A candidate from a plugin name and its options as written in a config or a result JSON
// (unknown options are ignored; missing ones take the plugins' defaults).
Candidate candidate_from_options(const std::string& plugin, int ranks, const nlohmann::json& options,
                                 const std::string& label);

// The pipeline simulator, exposed for tests: per-stage forward and backward time of one
// micro-batch, transfer time to the next stage (activations) and back (gradients). Returns
// the makespan and each stage's busy time.
// Kernels on CUDA streams sharing one GPU (the backward of cuda and nccl-data): a task runs
// when it is next on its stream and the tasks in `after` are done; all running tasks progress
// at rate min(1, 1 / sum of their shares). Returns each task's completion time.
struct StreamTask {
  double seconds = 0;  // alone
  double share = 1;    // of the device's throughput, (0, 1]
  int stream = 0;
  std::vector<int> after;  // indices of earlier tasks
};
std::vector<double> simulate_streams(const std::vector<StreamTask>& tasks);

// The same streams simulated block by block, for profiles that calibrated how SMs share
// blocks (gpu.coresidence): every product is `blocks` thread blocks, dispatched in the order
// their kernels became ready (a later kernel gets an SM only when the earlier ones have no
// block waiting) onto the SM holding the fewest, at most `per_sm` per SM. An SM holding m
// blocks runs at 1 + gain (m - 1) times one block's speed, shared by its m blocks. Each
// product's work per block is set so that, alone on the GPU, it takes `seconds`. Returns each
// task's completion time.
struct BlockTask {
  double seconds = 0;  // alone
  int blocks = 1;
  int stream = 0;
  std::vector<int> after;  // indices of earlier tasks
};
std::vector<double> simulate_blocks(const std::vector<BlockTask>& tasks, int sms, int per_sm, double gain);

struct PipelineTimes {
  double makespan = 0;
  std::vector<double> busy;
};
PipelineTimes simulate_pipeline(const std::vector<double>& forward, const std::vector<double>& backward,
                                const std::vector<double>& to_next, const std::vector<double>& to_prev,
                                int micro_batches, bool gpipe);

}  // namespace nnpar::perf
