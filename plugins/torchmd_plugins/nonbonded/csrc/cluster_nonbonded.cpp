// Cluster-pair nonbonded kernel for CPUs: LJ (per-type tables, optional switch) +
// reaction-field Coulomb, the physics of OpenMM's NonbondedForce with a cutoff.
//
// Design (after the cluster-pair idea of GROMACS "nbnxm", Páll & Hess, CPC 184, 2641
// (2013)): atoms are binned in xy columns of the (reduced triclinic) box, sorted by z
// inside a column and cut into clusters of M = 8 atoms (the last one of a column is
// padded). A list of cluster pairs (i-cluster, j-cluster, periodic image) within the
// list radius is built rarely; each pair carries a 64-bit mask of the atom pairs to
// evaluate (padding, exclusions and, on the diagonal, j <= i removed). Every step the
// kernel evaluates dense 8x8 tiles in float32 SIMD lanes, accumulating forces on both
// clusters (Newton's third law) into a per-thread buffer and energies in float64.
//
// Units: kcal/mol, Å, e. Written for torchmd-core; no third-party code copied.

#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "parallel.h"
#include "tile_kernels.h"

namespace {

using tmd::M;  // cluster size (atoms); masks are M*M = 64 bits

struct Brick {
  // Periodic: box rows a, b, c (reduced form); wrapped atoms lie in
  // [0, ax) x [0, by) x [0, cz). Non-periodic: lo is the origin of the bounding box.
  bool periodic;
  double a[3], b[3], c[3];
  double lo[3];
  double len[3];
};

struct ClusterPair {
  int32_t ci, cj;
  int8_t shift[4];  // ia, ib, ic, pad: x_j + ia a + ib b + ic c is near x_i
  uint64_t mask;    // bit (ai * M + aj) set: evaluate slot pair (ai, aj)
};

// Wrap a point into the brick; returns integer images n with x_wrapped = x - n . box.
inline void wrap_point(const Brick& br, const double* x, double* out, int32_t* img) {
  double p[3] = {x[0], x[1], x[2]};
  if (!br.periodic) {
    for (int k = 0; k < 3; ++k) out[k] = p[k] - br.lo[k];
    img[0] = img[1] = img[2] = 0;
    return;
  }
  double nc = std::floor(p[2] / br.c[2]);
  for (int k = 0; k < 3; ++k) p[k] -= nc * br.c[k];
  double nb = std::floor(p[1] / br.b[1]);
  for (int k = 0; k < 3; ++k) p[k] -= nb * br.b[k];
  double na = std::floor(p[0] / br.a[0]);
  p[0] -= na * br.a[0];
  // Guard against p == L after rounding.
  if (p[0] >= br.a[0]) p[0] -= br.a[0];
  if (p[1] >= br.b[1]) p[1] = 0.0;
  if (p[2] >= br.c[2]) p[2] = 0.0;
  out[0] = p[0];
  out[1] = p[1];
  out[2] = p[2];
  img[0] = (int32_t)na;
  img[1] = (int32_t)nb;
  img[2] = (int32_t)nc;
}

struct ReplicaGrid {
  int ncx = 1, ncy = 1;
  double wx = 1, wy = 1;
  std::vector<int64_t> col_start;  // (ncx*ncy + 1) first cluster of each column (global)
};

}  // namespace

// Build the cluster layout and the cluster-pair list for R replicas.
//
// positions: (R, N, 3) float64; box: (R, 3, 3) float64 or empty (non-periodic);
// list_cutoff: Å, <= 0 means all pairs (non-periodic only);
// excl_ptr: (N + 1) int64, excl_idx: int64, CSR of excluded partners (symmetric).
// Returns [slot_atom (S,) int32 flat atom index or -1, slot_image (S, 3) int32,
//          cluster_replica (C,) int32, pairs (P, 4) int32 (ci, cj, packed shift, pad),
//          masks (P,) int64, cluster_bbox (C, 6) float64].
std::vector<torch::Tensor> build_cluster_pairs(torch::Tensor positions, torch::Tensor box,
                                               double list_cutoff, torch::Tensor excl_ptr,
                                               torch::Tensor excl_idx) {
  TORCH_CHECK(positions.dim() == 3 && positions.size(2) == 3, "positions must be (R, N, 3)");
  positions = positions.to(torch::kFloat64).contiguous().cpu();
  const bool periodic = box.numel() > 0;
  if (periodic) box = box.to(torch::kFloat64).contiguous().cpu();
  TORCH_CHECK(list_cutoff > 0 || !periodic, "all-pairs mode needs a non-periodic system");
  excl_ptr = excl_ptr.to(torch::kInt64).contiguous().cpu();
  excl_idx = excl_idx.to(torch::kInt64).contiguous().cpu();
  const int64_t R = positions.size(0), N = positions.size(1);
  const double* X = positions.data_ptr<double>();
  const int64_t* eptr = excl_ptr.data_ptr<int64_t>();
  const int64_t* eidx = excl_idx.data_ptr<int64_t>();
  const bool all_pairs = list_cutoff <= 0;
  const double rl = list_cutoff, rl2 = rl * rl;

  std::vector<int32_t> slot_atom;
  std::vector<int32_t> slot_image;
  std::vector<int32_t> cl_rep;
  std::vector<double> bbox;  // per cluster: lo xyz, hi xyz (wrapped coordinates)
  std::vector<double> slot_pos;  // wrapped positions of slots (build only)
  std::vector<Brick> bricks(R);
  std::vector<ReplicaGrid> grids(R);
  std::vector<int64_t> rep_cl_begin(R + 1, 0);

  // ---- 1. clusters -------------------------------------------------------------------
  for (int64_t r = 0; r < R; ++r) {
    const double* x = X + r * N * 3;
    Brick& br = bricks[r];
    br.periodic = periodic;
    if (periodic) {
      const double* B = box.data_ptr<double>() + r * 9;
      for (int k = 0; k < 3; ++k) {
        br.a[k] = B[k];
        br.b[k] = B[3 + k];
        br.c[k] = B[6 + k];
        br.lo[k] = 0;
      }
      TORCH_CHECK(std::abs(br.a[1]) < 1e-9 && std::abs(br.a[2]) < 1e-9 && std::abs(br.b[2]) < 1e-9,
                  "box must be in reduced form (a along x, b in the xy plane)");
      br.len[0] = br.a[0];
      br.len[1] = br.b[1];
      br.len[2] = br.c[2];
    } else {
      for (int k = 0; k < 3; ++k) {
        double lo = 1e300, hi = -1e300;
        for (int64_t i = 0; i < N; ++i) {
          lo = std::min(lo, x[i * 3 + k]);
          hi = std::max(hi, x[i * 3 + k]);
        }
        br.lo[k] = N ? lo : 0.0;
        br.len[k] = N ? std::max(hi - lo, 1e-3) * (1 + 1e-12) + 1e-9 : 1.0;
      }
    }
    ReplicaGrid& g = grids[r];
    if (all_pairs) {
      g.ncx = g.ncy = 1;
    } else {
      double vol = br.len[0] * br.len[1] * br.len[2];
      double w = std::cbrt(M * vol / std::max<int64_t>(N, 1));
      g.ncx = std::max(1, (int)std::lround(br.len[0] / w));
      g.ncy = std::max(1, (int)std::lround(br.len[1] / w));
    }
    g.wx = br.len[0] / g.ncx;
    g.wy = br.len[1] / g.ncy;
    const int ncol = g.ncx * g.ncy;
    std::vector<double> wp(N * 3);
    std::vector<int32_t> img(N * 3);
    std::vector<int32_t> col(N);
    std::vector<int64_t> count(ncol + 1, 0);
    for (int64_t i = 0; i < N; ++i) {
      wrap_point(br, x + i * 3, &wp[i * 3], &img[i * 3]);
      int cx = std::min(g.ncx - 1, std::max(0, (int)(wp[i * 3] / g.wx)));
      int cy = std::min(g.ncy - 1, std::max(0, (int)(wp[i * 3 + 1] / g.wy)));
      col[i] = all_pairs ? 0 : cx * g.ncy + cy;
      count[col[i] + 1]++;
    }
    for (int k = 0; k < ncol; ++k) count[k + 1] += count[k];
    std::vector<int64_t> order(N);
    {
      std::vector<int64_t> fill(count.begin(), count.end() - 1);
      for (int64_t i = 0; i < N; ++i) order[fill[col[i]]++] = i;
    }
    g.col_start.assign(ncol + 1, 0);
    rep_cl_begin[r] = (int64_t)cl_rep.size();
    for (int k = 0; k < ncol; ++k) {
      auto b = order.begin() + count[k], e = order.begin() + count[k + 1];
      if (!all_pairs)
        std::sort(b, e, [&](int64_t u, int64_t v) { return wp[u * 3 + 2] < wp[v * 3 + 2]; });
      g.col_start[k] = (int64_t)cl_rep.size();
      int64_t n_in = count[k + 1] - count[k];
      for (int64_t s0 = 0; s0 < n_in; s0 += M) {
        double lo[3] = {1e300, 1e300, 1e300}, hi[3] = {-1e300, -1e300, -1e300};
        for (int s = 0; s < M; ++s) {
          if (s0 + s < n_in) {
            int64_t i = order[count[k] + s0 + s];
            slot_atom.push_back((int32_t)(r * N + i));
            for (int d = 0; d < 3; ++d) {
              slot_image.push_back(img[i * 3 + d]);
              slot_pos.push_back(wp[i * 3 + d]);
              lo[d] = std::min(lo[d], wp[i * 3 + d]);
              hi[d] = std::max(hi[d], wp[i * 3 + d]);
            }
          } else {
            slot_atom.push_back(-1);
            for (int d = 0; d < 3; ++d) {
              slot_image.push_back(0);
              slot_pos.push_back(0.0);
            }
          }
        }
        for (int d = 0; d < 3; ++d) bbox.push_back(lo[d]);
        for (int d = 0; d < 3; ++d) bbox.push_back(hi[d]);
        cl_rep.push_back((int32_t)r);
      }
    }
    g.col_start[ncol] = (int64_t)cl_rep.size();
  }
  const int64_t C = (int64_t)cl_rep.size();
  rep_cl_begin[R] = C;
  TORCH_CHECK(N * R < INT32_MAX, "too many atoms for int32 slot indices");

  // Slot of every atom (for exclusion masks).
  std::vector<int64_t> slot_of(R * N, -1);
  for (int64_t s = 0; s < C * M; ++s)
    if (slot_atom[s] >= 0) slot_of[slot_atom[s]] = s;

  // ---- 2. cluster pairs (parallel over i-clusters) --------------------------------------
  const int nthreads = at::get_num_threads();
  // Chunks are contiguous in ci so the concatenation stays sorted by ci.
  // Small systems build serially (one chunk); large ones in many dynamic chunks.
  const int64_t n_chunks = C < 512 ? 1 : std::min<int64_t>(C / 16, 64 * std::max(nthreads, 1));
  std::vector<std::vector<ClusterPair>> chunk_out(n_chunks);
  tmd::dynamic_for(n_chunks, 1, 2, [&](int, int64_t c0, int64_t c1) {
    std::vector<std::pair<int64_t, uint64_t>> ex;  // (cj, mask) excluded slot pairs
    for (int64_t chunk = c0; chunk < c1; ++chunk) {
      auto& res = chunk_out[chunk];
      int64_t ci_begin = chunk * C / n_chunks, ci_end = (chunk + 1) * C / n_chunks;
      for (int64_t ci = ci_begin; ci < ci_end; ++ci) {
        const int64_t r = cl_rep[ci];
        const Brick& br = bricks[r];
        const ReplicaGrid& g = grids[r];
        // Exclusion bits of this i-cluster, grouped by partner cluster.
        ex.clear();
        uint64_t valid_i = 0;
        for (int a = 0; a < M; ++a) {
          int32_t ga = slot_atom[ci * M + a];
          if (ga < 0) continue;
          valid_i |= 1ull << a;
          int64_t loc = ga - r * N;
          for (int64_t e = eptr[loc]; e < eptr[loc + 1]; ++e) {
            int64_t sj = slot_of[r * N + eidx[e]];
            int64_t cj = sj / M;
            uint64_t bit = 1ull << (a * M + (int)(sj % M));
            bool found = false;
            for (auto& p : ex)
              if (p.first == cj) {
                p.second |= bit;
                found = true;
                break;
              }
            if (!found) ex.emplace_back(cj, bit);
          }
        }
        const double* lo = &bbox[ci * 6];
        const double* hi = lo + 3;
        auto emit = [&](int64_t cj, int ia, int ib, int ic) {
          uint64_t valid_j = 0;
          for (int b = 0; b < M; ++b)
            if (slot_atom[cj * M + b] >= 0) valid_j |= 1ull << b;
          uint64_t mask = 0;
          for (int a = 0; a < M; ++a)
            if (valid_i >> a & 1) mask |= valid_j << (a * M);
          if (cj == ci && ia == 0 && ib == 0 && ic == 0) {
            uint64_t upper = 0;
            for (int a = 0; a < M; ++a)
              for (int b = a + 1; b < M; ++b) upper |= 1ull << (a * M + b);
            mask &= upper;
          }
          for (auto& p : ex)
            if (p.first == cj) mask &= ~p.second;
          if (mask == 0) return;
          ClusterPair cp;
          cp.ci = (int32_t)ci;
          cp.cj = (int32_t)cj;
          cp.shift[0] = (int8_t)ia;
          cp.shift[1] = (int8_t)ib;
          cp.shift[2] = (int8_t)ic;
          cp.shift[3] = 0;
          cp.mask = mask;
          res.push_back(cp);
        };
        if (all_pairs) {
          for (int64_t cj = ci; cj < rep_cl_begin[r + 1]; ++cj) emit(cj, 0, 0, 0);
          continue;
        }
        // Periodic images to visit (ranges are conservative).
        int ic0 = 0, ic1 = 0;
        if (br.periodic) {
          ic0 = (int)std::ceil((lo[2] - br.len[2] - rl) / br.c[2]);
          ic1 = (int)std::floor((hi[2] + rl) / br.c[2]);
        }
        for (int ic = ic0; ic <= ic1; ++ic) {
          int ib0 = 0, ib1 = 0;
          if (br.periodic) {
            double yl = lo[1] - ic * br.c[1], yh = hi[1] - ic * br.c[1];
            ib0 = (int)std::ceil((yl - br.len[1] - rl) / br.b[1]);
            ib1 = (int)std::floor((yh + rl) / br.b[1]);
          }
          for (int ib = ib0; ib <= ib1; ++ib) {
            int ia0 = 0, ia1 = 0;
            if (br.periodic) {
              double xl = lo[0] - ic * br.c[0] - ib * br.b[0], xh = hi[0] - ic * br.c[0] - ib * br.b[0];
              ia0 = (int)std::ceil((xl - br.len[0] - rl) / br.a[0]);
              ia1 = (int)std::floor((xh + rl) / br.a[0]);
            }
            for (int ia = ia0; ia <= ia1; ++ia) {
              // Self images of the same cluster: keep only the "positive" image.
              double s[3] = {0, 0, 0};
              if (br.periodic)
                for (int k = 0; k < 3; ++k) s[k] = ia * br.a[k] + ib * br.b[k] + ic * br.c[k];
              // i-cluster box moved by -s: j-clusters (in the brick) near it.
              double sl[3], sh[3];
              for (int k = 0; k < 3; ++k) {
                sl[k] = lo[k] - s[k];
                sh[k] = hi[k] - s[k];
              }
              int cx0 = std::max(0, (int)std::floor((sl[0] - rl) / g.wx));
              int cx1 = std::min(g.ncx - 1, (int)std::floor((sh[0] + rl) / g.wx));
              int cy0 = std::max(0, (int)std::floor((sl[1] - rl) / g.wy));
              int cy1 = std::min(g.ncy - 1, (int)std::floor((sh[1] + rl) / g.wy));
              for (int cx = cx0; cx <= cx1; ++cx) {
                double dx = std::max({0.0, cx * g.wx - sh[0], sl[0] - (cx + 1) * g.wx});
                for (int cy = cy0; cy <= cy1; ++cy) {
                  double dy = std::max({0.0, cy * g.wy - sh[1], sl[1] - (cy + 1) * g.wy});
                  if (dx * dx + dy * dy >= rl2) continue;
                  const int colk = cx * g.ncy + cy;
                  int64_t j0 = g.col_start[colk], j1 = g.col_start[colk + 1];
                  // First cluster whose z-max reaches the window (z-max is sorted).
                  double zlo = sl[2] - rl, zhi = sh[2] + rl;
                  int64_t lo_i = j0, hi_i = j1;
                  while (lo_i < hi_i) {
                    int64_t mid = (lo_i + hi_i) / 2;
                    if (bbox[mid * 6 + 5] < zlo) lo_i = mid + 1;
                    else hi_i = mid;
                  }
                  for (int64_t cj = lo_i; cj < j1 && bbox[cj * 6 + 2] <= zhi; ++cj) {
                    if (cj < ci) continue;
                    if (cj == ci && !(ia > 0 || (ia == 0 && (ib > 0 || (ib == 0 && ic >= 0)))))
                      continue;
                    const double* bl = &bbox[cj * 6];
                    const double* bh = bl + 3;
                    double d2 = 0;
                    for (int k = 0; k < 3; ++k) {
                      double d = std::max({0.0, bl[k] - sh[k], sl[k] - bh[k]});
                      d2 += d * d;
                    }
                    if (d2 >= rl2) continue;
                    // Atom-level check: some i atom within rl of the j box.
                    bool any = false;
                    for (int a = 0; a < M && !any; ++a) {
                      if (!(valid_i >> a & 1)) continue;
                      double e2 = 0;
                      for (int k = 0; k < 3; ++k) {
                        double p = slot_pos[(ci * M + a) * 3 + k] - s[k];
                        double d = std::max({0.0, bl[k] - p, p - bh[k]});
                        e2 += d * d;
                      }
                      any = e2 < rl2;
                    }
                    if (any) emit(cj, ia, ib, ic);
                  }
                }
              }
            }
          }
        }
      }
    }
  });
  int64_t P = 0;
  for (auto& v : chunk_out) P += (int64_t)v.size();
  auto pairs = torch::empty({P, 4}, torch::kInt32);
  auto masks = torch::empty({P}, torch::kInt64);
  int32_t* pp = pairs.data_ptr<int32_t>();
  int64_t* mp = masks.data_ptr<int64_t>();
  int64_t k = 0;
  for (auto& v : chunk_out)
    for (auto& cp : v) {
      pp[k * 4] = cp.ci;
      pp[k * 4 + 1] = cp.cj;
      pp[k * 4 + 2] = (int32_t)(((uint32_t)(uint8_t)cp.shift[0]) | ((uint32_t)(uint8_t)cp.shift[1] << 8) |
                                ((uint32_t)(uint8_t)cp.shift[2] << 16));
      pp[k * 4 + 3] = 0;
      mp[k] = (int64_t)cp.mask;
      ++k;
    }
  auto i32 = torch::TensorOptions().dtype(torch::kInt32);
  auto t_slot = torch::from_blob(slot_atom.data(), {(int64_t)slot_atom.size()}, i32).clone();
  auto t_img = torch::from_blob(slot_image.data(), {(int64_t)slot_atom.size(), 3}, i32).clone();
  auto t_rep = torch::from_blob(cl_rep.data(), {C}, i32).clone();
  auto t_bbox = torch::from_blob(bbox.data(), {C, 6}, torch::TensorOptions().dtype(torch::kFloat64)).clone();
  return {t_slot, t_img, t_rep, pairs, masks, t_bbox};
}

using tmd::KernelParamsT;

namespace {
// float32 forces and energies are summed across tiles in 64-bit fixed point (see
// cluster_nonbonded_impl). Scales: forces to 2^-24 kcal/mol/Å (range ±5e11), energies
// to 2^-32 kcal/mol per tile (range of the sum ±2e9 kcal/mol).
constexpr double kEnergyScale = 4294967296.0;  // 2^32

template <class T>
struct Fixed;
template <>
struct Fixed<float> {
  static constexpr double scale = 16777216.0;  // 2^24
  // g[k] += round(f[k] * 2^24) for k < n (n a multiple of 8).
  static inline void add(int64_t* g, const float* f, int n) {
#if defined(__AVX512F__) && defined(__AVX512DQ__)
    const __m256 s = _mm256_set1_ps((float)scale);  // a power of two: exact scaling
    for (int k = 0; k < n; k += 8) {
      const __m512i q = _mm512_cvtps_epi64(_mm256_mul_ps(_mm256_loadu_ps(f + k), s));
      _mm512_storeu_si512(g + k, _mm512_add_epi64(_mm512_loadu_si512(g + k), q));
    }
#else
    for (int k = 0; k < n; ++k) g[k] += (int64_t)std::nearbyint((double)f[k] * scale);
#endif
  }
};

template <class T, bool CUT, bool SW>
inline void run_tile(const T* xi, const T* xj, const int32_t* ti, const int32_t* tj, const T* c6t, const T* c12t,
                     int stride, uint64_t mask, T sx, T sy, T sz, T* fi, T* fj, const KernelParamsT<T>& kp,
                     double& e_lj, double& e_el) {
  if constexpr (std::is_same<T, float>::value)
    tmd::tile<CUT, SW>(xi, xj, ti, tj, c6t, c12t, stride, mask, sx, sy, sz, fi, fj, kp, e_lj, e_el);
  else
    tmd::tile_generic<T, CUT, SW>(xi, xj, ti, tj, c6t, c12t, stride, mask, sx, sy, sz, fi, fj, kp, e_lj, e_el);
}

template <class T>
std::vector<torch::Tensor> cluster_nonbonded_impl(torch::Tensor positions, torch::Tensor box, torch::Tensor charges,
                                                  torch::Tensor types, torch::Tensor c6, torch::Tensor c12,
                                                  torch::Tensor slot_atom, torch::Tensor slot_image,
                                                  torch::Tensor cluster_replica, torch::Tensor pairs,
                                                  torch::Tensor masks, double cutoff, double switch_distance,
                                                  double k_rf, double c_rf, double ke, bool need_forces) {
  constexpr auto kT = std::is_same<T, float>::value ? torch::kFloat32 : torch::kFloat64;
  const int64_t R = positions.size(0), N = positions.size(1);
  const int64_t S = slot_atom.size(0), C = S / M, P = pairs.size(0);
  const bool periodic = box.numel() > 0;
  auto pos = positions.to(torch::kFloat64).contiguous();
  auto bx = periodic ? box.to(torch::kFloat64).contiguous() : box;
  auto q = charges.to(kT).contiguous();
  auto ty = types.to(torch::kInt32).contiguous();
  auto c6f = c6.to(kT).contiguous();
  auto c12f = c12.to(kT).contiguous();
  slot_atom = slot_atom.contiguous();
  slot_image = slot_image.contiguous();
  cluster_replica = cluster_replica.contiguous();
  pairs = pairs.contiguous();
  masks = masks.contiguous();
  const int ntypes = (int)c6f.size(0);
  const double* X = pos.data_ptr<double>();
  const double* B = periodic ? bx.data_ptr<double>() : nullptr;
  const int32_t* sa = slot_atom.data_ptr<int32_t>();
  const int32_t* si = slot_image.data_ptr<int32_t>();
  const int32_t* crep = cluster_replica.data_ptr<int32_t>();
  const int32_t* pp = pairs.data_ptr<int32_t>();
  const int64_t* mp = masks.data_ptr<int64_t>();
  const T* qp = q.template data_ptr<T>();
  const int32_t* tp = ty.data_ptr<int32_t>();
  const T* c6p = c6f.template data_ptr<T>();
  const T* c12p = c12f.template data_ptr<T>();

  // Gather slots: SoA per cluster (x, y, z, q) and types; padding has q = 0, type 0.
  std::vector<T> xs(C * 4 * M);
  std::vector<int32_t> ts(C * M);
  tmd::dynamic_for(C, 512, 4096, [&](int, int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) {
      const int64_t r = crep[c];
      for (int a = 0; a < M; ++a) {
        const int64_t s = c * M + a;
        const int32_t g = sa[s];
        T* dst = &xs[c * 4 * M];
        if (g < 0) {
          dst[a] = dst[M + a] = dst[2 * M + a] = dst[3 * M + a] = T(0);
          ts[s] = 0;
          continue;
        }
        double p[3] = {X[g * 3], X[g * 3 + 1], X[g * 3 + 2]};
        if (periodic) {
          const double* b = B + r * 9;
          for (int k = 0; k < 3; ++k) p[k] -= si[s * 3] * b[k] + si[s * 3 + 1] * b[3 + k] + si[s * 3 + 2] * b[6 + k];
        }
        dst[a] = (T)p[0];
        dst[M + a] = (T)p[1];
        dst[2 * M + a] = (T)p[2];
        const int64_t loc = g % N;
        dst[3 * M + a] = qp[loc];
        ts[s] = tp[loc];
      }
    }
  });

  KernelParamsT<T> kp;
  kp.cutoff = cutoff > 0;
  kp.sw = kp.cutoff && switch_distance > 0 && switch_distance < cutoff;
  kp.rc = (T)cutoff;
  kp.rc2 = (T)(cutoff * cutoff);
  kp.rs = (T)switch_distance;
  kp.inv_sw = kp.sw ? (T)(1.0 / (cutoff - switch_distance)) : T(0);
  kp.krf = kp.cutoff ? (T)k_rf : T(0);
  kp.crf = kp.cutoff ? (T)c_rf : T(0);
  kp.ke = (T)ke;

  // Tiles in chunks of 256 (~20 us); below ~4k tiles a second thread costs more than it
  // saves. The list is sorted by i-cluster: i forces are summed over a run of tiles with
  // the same i-cluster (fixed order inside a chunk), then added once.
  constexpr int64_t kTileChunk = 256;
  auto run_range = [&](int64_t p0, int64_t p1, auto&& add_force, auto&& add_energy) {
    alignas(32) T fi[3 * M], fj[3 * M];
    int32_t ci_run = -1;
    for (int64_t p = p0; p < p1; ++p) {
      const int32_t ci = pp[p * 4], cj = pp[p * 4 + 1];
      if (ci != ci_run || p % kTileChunk == 0) {  // runs never cross chunk borders
        if (ci_run >= 0) add_force(ci_run, fi);
        std::fill(fi, fi + 3 * M, T(0));
        ci_run = ci;
      }
      const uint32_t packed = (uint32_t)pp[p * 4 + 2];
      T sx = 0, sy = 0, sz = 0;
      const int64_t r = crep[ci];
      if (periodic && packed) {
        const int ia = (int8_t)(packed & 0xff), ib = (int8_t)((packed >> 8) & 0xff),
                  ic = (int8_t)((packed >> 16) & 0xff);
        const double* b = B + r * 9;
        sx = (T)(ia * b[0] + ib * b[3] + ic * b[6]);
        sy = (T)(ia * b[1] + ib * b[4] + ic * b[7]);
        sz = (T)(ia * b[2] + ib * b[5] + ic * b[8]);
      }
      const uint64_t mask = (uint64_t)mp[p];
      const T* xi = &xs[ci * 4 * M];
      const T* xj = &xs[cj * 4 * M];
      std::fill(fj, fj + 3 * M, T(0));
      double e_lj = 0.0, e_el = 0.0;
      if (kp.cutoff) {
        if (kp.sw)
          run_tile<T, true, true>(xi, xj, &ts[ci * M], &ts[cj * M], c6p, c12p, ntypes, mask, sx, sy, sz, fi, fj,
                                  kp, e_lj, e_el);
        else
          run_tile<T, true, false>(xi, xj, &ts[ci * M], &ts[cj * M], c6p, c12p, ntypes, mask, sx, sy, sz, fi, fj,
                                   kp, e_lj, e_el);
      } else {
        run_tile<T, false, false>(xi, xj, &ts[ci * M], &ts[cj * M], c6p, c12p, ntypes, mask, sx, sy, sz, fi, fj,
                                  kp, e_lj, e_el);
      }
      add_force(cj, fj);
      add_energy(r, e_lj, e_el);
    }
    if (ci_run >= 0) add_force(ci_run, fi);
  };

  auto energy = torch::zeros({R, 2}, torch::kFloat64);  // (lj, electrostatic)
  double* ep = energy.data_ptr<double>();
  auto f64 = torch::zeros({need_forces ? R : 0, N, 3}, torch::kFloat64);
  double* fo = f64.data_ptr<double>();
  if constexpr (std::is_same<T, float>::value) {
    // float32: forces and energies summed across tiles in 64-bit fixed point, whose
    // integer sums do not depend on the order of the tiles: results are bitwise identical
    // for any thread count and any (dynamic) assignment of tiles to threads.
    const int nthreads = std::max(1, at::get_num_threads());
    std::vector<std::vector<int64_t>> fbuf(nthreads);
    std::vector<std::vector<int64_t>> ebuf(nthreads, std::vector<int64_t>(2 * R, 0));
    tmd::dynamic_for(P, kTileChunk, 4096, [&](int tid, int64_t p0, int64_t p1) {
      auto& fb = fbuf[tid];
      if (fb.empty()) fb.assign(C * 3 * M, 0);
      std::vector<int64_t> eb(2 * R, 0);  // local: a shared buffer would false-share per tile
      run_range(
          p0, p1, [&](int32_t c, const T* f) { Fixed<T>::add(&fb[c * 3 * M], f, 3 * M); },
          [&](int64_t r, double a, double b) {
            eb[2 * r] += (int64_t)std::nearbyint(a * kEnergyScale);
            eb[2 * r + 1] += (int64_t)std::nearbyint(b * kEnergyScale);
          });
      for (int64_t k = 0; k < 2 * R; ++k) ebuf[tid][k] += eb[k];
    });
    for (int64_t k = 0; k < 2 * R; ++k) {
      int64_t acc = 0;
      for (int t = 0; t < nthreads; ++t) acc += ebuf[t][k];
      ep[k] = (double)acc / kEnergyScale;
    }
    if (need_forces)
      tmd::dynamic_for(C, 512, 4096, [&](int, int64_t c0, int64_t c1) {
        for (int64_t c = c0; c < c1; ++c)
          for (int a = 0; a < M; ++a) {
            const int32_t g = sa[c * M + a];
            if (g < 0) continue;
            for (int k = 0; k < 3; ++k) {
              int64_t acc = 0;
              for (int t = 0; t < nthreads; ++t)
                if (!fbuf[t].empty()) acc += fbuf[t][c * 3 * M + k * M + a];
              fo[g * 3 + k] = (double)acc / Fixed<T>::scale;
            }
          }
      });
  } else {
    // float64: plain double sums (smooth in positions and parameters, unlike fixed
    // point), one buffer per fixed chunk of tiles, added in chunk order: the same
    // result for any thread count and any assignment of chunks to threads.
    const int64_t n_chunks = P < 4096 ? 1 : 8;
    std::vector<std::vector<double>> fbuf(n_chunks);
    std::vector<std::vector<double>> ebuf(n_chunks, std::vector<double>(2 * R, 0.0));
    tmd::dynamic_for(n_chunks, 1, 2, [&](int, int64_t k0, int64_t k1) {
      for (int64_t k = k0; k < k1; ++k) {
        auto& fb = fbuf[k];
        auto& eb = ebuf[k];
        fb.assign(C * 3 * M, 0.0);
        run_range(
            k * P / n_chunks, (k + 1) * P / n_chunks,
            [&](int32_t c, const T* f) {
              double* dst = &fb[c * 3 * M];
              for (int i = 0; i < 3 * M; ++i) dst[i] += f[i];
            },
            [&](int64_t r, double a, double b) {
              eb[2 * r] += a;
              eb[2 * r + 1] += b;
            });
      }
    });
    for (int64_t k = 0; k < 2 * R; ++k) {
      double acc = 0.0;
      for (int64_t c = 0; c < n_chunks; ++c) acc += ebuf[c][k];
      ep[k] = acc;
    }
    if (need_forces)
      tmd::dynamic_for(C, 512, 4096, [&](int, int64_t c0, int64_t c1) {
        for (int64_t c = c0; c < c1; ++c)
          for (int a = 0; a < M; ++a) {
            const int32_t g = sa[c * M + a];
            if (g < 0) continue;
            for (int k = 0; k < 3; ++k) {
              double acc = 0.0;
              for (int64_t q = 0; q < n_chunks; ++q) acc += fbuf[q][c * 3 * M + k * M + a];
              fo[g * 3 + k] = acc;
            }
          }
      });
  }
  torch::Tensor forces;
  if (need_forces)
    forces = positions.scalar_type() == torch::kFloat64 ? f64 : f64.to(positions.scalar_type());
  else
    forces = torch::empty({0});
  return {energy, forces};
}
}  // namespace

// Energies (R, 2) float64 [LJ, electrostatic] and forces (R, N, 3) (dtype of positions)
// from a cluster list. Pair arithmetic in float32 for float32 positions (energies summed
// in float64), in float64 for float64 positions.
//
// positions: (R, N, 3); box: (R, 3, 3) or empty; charges (N,); types (N,) int32;
// c6, c12: (T, T) tables; slot_atom, slot_image, cluster_replica, pairs, masks: from
// build_cluster_pairs. cutoff <= 0: no cutoff and plain Coulomb (k_rf = c_rf = 0).
std::vector<torch::Tensor> cluster_nonbonded(torch::Tensor positions, torch::Tensor box, torch::Tensor charges,
                                             torch::Tensor types, torch::Tensor c6, torch::Tensor c12,
                                             torch::Tensor slot_atom, torch::Tensor slot_image,
                                             torch::Tensor cluster_replica, torch::Tensor pairs,
                                             torch::Tensor masks, double cutoff, double switch_distance,
                                             double k_rf, double c_rf, double ke, bool need_forces) {
  TORCH_CHECK(positions.device().is_cpu(), "the native nonbonded kernel runs on the CPU only");
  if (positions.scalar_type() == torch::kFloat64)
    return cluster_nonbonded_impl<double>(positions, box, charges, types, c6, c12, slot_atom, slot_image,
                                          cluster_replica, pairs, masks, cutoff, switch_distance, k_rf, c_rf, ke,
                                          need_forces);
  return cluster_nonbonded_impl<float>(positions, box, charges, types, c6, c12, slot_atom, slot_image,
                                       cluster_replica, pairs, masks, cutoff, switch_distance, k_rf, c_rf, ke,
                                       need_forces);
}

// Largest squared displacement per replica between two (R, N, 3) position sets.
torch::Tensor max_displacement2(torch::Tensor a, torch::Tensor b) {
  auto x = a.to(torch::kFloat64).contiguous();
  auto y = b.to(torch::kFloat64).contiguous();
  const int64_t R = x.size(0), N = x.size(1);
  auto out = torch::zeros({R}, torch::kFloat64);
  const double* px = x.data_ptr<double>();
  const double* py = y.data_ptr<double>();
  double* po = out.data_ptr<double>();
  for (int64_t r = 0; r < R; ++r) {
    double m = 0;
    for (int64_t i = r * N; i < (r + 1) * N; ++i) {
      double dx = px[i * 3] - py[i * 3], dy = px[i * 3 + 1] - py[i * 3 + 1], dz = px[i * 3 + 2] - py[i * 3 + 2];
      m = std::max(m, dx * dx + dy * dy + dz * dz);
    }
    po[r] = m;
  }
  return out;
}

std::vector<torch::Tensor> bonded_forces(torch::Tensor positions, torch::Tensor box, torch::Tensor bond_idx,
                                         torch::Tensor bond_prm, torch::Tensor angle_idx, torch::Tensor angle_prm,
                                         torch::Tensor torsion_idx, torch::Tensor torsion_prm,
                                         torch::Tensor pair_idx, torch::Tensor pair_prm);  // bonded.cpp

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("bonded_forces", &bonded_forces, "AMBER bonded energies and analytic forces");
  m.def("build_cluster_pairs", &build_cluster_pairs, "Build cluster layout and cluster-pair list");
  m.def("cluster_nonbonded", &cluster_nonbonded, "Cluster-pair LJ + reaction-field energies and forces");
  m.def("max_displacement2", &max_displacement2, "Max squared displacement per replica");
}
