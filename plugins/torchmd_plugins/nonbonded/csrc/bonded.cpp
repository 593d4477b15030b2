// AMBER bonded terms with analytic forces (CPU, float64 arithmetic), batched over
// replicas. Same formulas as bonded.py:
//   bonds     E = k/2 (r - r0)^2
//   angles    E = k/2 (θ - θ0)^2
//   torsions  E = k (1 + cos(n φ - φ0))      (IUPAC sign)
//   1-4 pairs E = qq_ke / r + c12 / r^12 - c6 / r^6
// Units kcal/mol, Å, rad. Written for torchmd-core.

#include <torch/extension.h>
#include <ATen/Parallel.h>

#include "parallel.h"

#include <cmath>
#include <vector>

namespace {

struct V3 {
  double x, y, z;
};
inline V3 operator-(V3 a, V3 b) { return {a.x - b.x, a.y - b.y, a.z - b.z}; }
inline V3 operator+(V3 a, V3 b) { return {a.x + b.x, a.y + b.y, a.z + b.z}; }
inline V3 operator*(double s, V3 a) { return {s * a.x, s * a.y, s * a.z}; }
inline double dot(V3 a, V3 b) { return a.x * b.x + a.y * b.y + a.z * b.z; }
inline V3 cross(V3 a, V3 b) { return {a.y * b.z - a.z * b.y, a.z * b.x - a.x * b.z, a.x * b.y - a.y * b.x}; }

struct Frame {
  const double* x;  // (N, 3)
  const double* box;  // (9) or nullptr
  double* f;  // (N, 3) force accumulator
  V3 pos(int64_t i) const { return {x[3 * i], x[3 * i + 1], x[3 * i + 2]}; }
  // x_j - x_i, minimum image in a reduced triclinic box.
  V3 vec(int64_t i, int64_t j) const {
    V3 d = pos(j) - pos(i);
    if (box) {
      const double* b = box;
      double n = std::round(d.z / b[8]);
      d = d - n * V3{b[6], b[7], b[8]};
      n = std::round(d.y / b[4]);
      d = d - n * V3{b[3], b[4], b[5]};
      n = std::round(d.x / b[0]);
      d = d - n * V3{b[0], b[1], b[2]};
    }
    return d;
  }
  void add(int64_t i, V3 v) {
    f[3 * i] += v.x;
    f[3 * i + 1] += v.y;
    f[3 * i + 2] += v.z;
  }
};

double bonds(Frame& fr, const int64_t* idx, const double* prm, int64_t n) {
  double e = 0;
  for (int64_t t = 0; t < n; ++t) {
    const int64_t i = idx[2 * t], j = idx[2 * t + 1];
    const double k = prm[2 * t], r0 = prm[2 * t + 1];
    V3 d = fr.vec(i, j);
    double r = std::sqrt(dot(d, d)), dr = r - r0;
    e += 0.5 * k * dr * dr;
    V3 fj = (-k * dr / r) * d;
    fr.add(j, fj);
    fr.add(i, -1.0 * fj);
  }
  return e;
}

double angles(Frame& fr, const int64_t* idx, const double* prm, int64_t n) {
  double e = 0;
  for (int64_t t = 0; t < n; ++t) {
    const int64_t i = idx[3 * t], j = idx[3 * t + 1], l = idx[3 * t + 2];
    const double k = prm[2 * t], th0 = prm[2 * t + 1];
    V3 u = fr.vec(j, i), v = fr.vec(j, l);
    double ru = std::sqrt(dot(u, u)), rv = std::sqrt(dot(v, v));
    double c = dot(u, v) / (ru * rv);
    double s = std::sqrt(std::max(1.0 - c * c, 1e-12));
    double th = std::atan2(s, c), dth = th - th0;
    e += 0.5 * k * dth * dth;
    double pre = k * dth / s;
    V3 fi = pre * ((1.0 / (ru * rv)) * v - (c / (ru * ru)) * u);
    V3 fl = pre * ((1.0 / (ru * rv)) * u - (c / (rv * rv)) * v);
    fr.add(i, fi);
    fr.add(l, fl);
    fr.add(j, -1.0 * (fi + fl));
  }
  return e;
}

// prm rows [n, phase, k, cos(phase), sin(phase)]. For integer n in [0, 8], cos(nφ) and
// sin(nφ) come from (cos φ + i sin φ)^n, without atan2/cos/sin: most of the cost of
// the bonded terms otherwise.
double torsions(Frame& fr, const int64_t* idx, const double* prm, int64_t n) {
  double e = 0;
  for (int64_t t = 0; t < n; ++t) {
    const int64_t a = idx[4 * t], b = idx[4 * t + 1], c = idx[4 * t + 2], d = idx[4 * t + 3];
    const double* q = prm + 5 * t;
    const double per = q[0], ph = q[1], k = q[2];
    V3 b1 = fr.vec(a, b), b2 = fr.vec(b, c), b3 = fr.vec(c, d);
    V3 m = cross(b1, b2), nn = cross(b2, b3);
    double b2sq = dot(b2, b2), b2n = std::sqrt(b2sq);
    const double y = b2n * dot(b1, nn), x = dot(m, nn);
    double cos_arg, sin_arg;  // cos and sin of n φ - phase
    const int ni = (int)per;
    if ((double)ni == per && ni >= 0 && ni <= 8) {
      const double r = std::sqrt(x * x + y * y);
      const double cp = r > 0 ? x / r : 1.0, sp = r > 0 ? y / r : 0.0;  // atan2(0, 0) = 0
      double cn = 1.0, sn = 0.0;
      for (int j = 0; j < ni; ++j) {
        const double c2 = cn * cp - sn * sp;
        sn = cn * sp + sn * cp;
        cn = c2;
      }
      cos_arg = cn * q[3] + sn * q[4];
      sin_arg = sn * q[3] - cn * q[4];
    } else {
      const double arg = per * std::atan2(y, x) - ph;
      cos_arg = std::cos(arg);
      sin_arg = std::sin(arg);
    }
    e += k * (1.0 + cos_arg);
    double dedphi = -k * per * sin_arg;
    V3 f0 = (dedphi * b2n / dot(m, m)) * m;
    V3 f3 = (-dedphi * b2n / dot(nn, nn)) * nn;
    double p = dot(b1, b2) / b2sq, qq = dot(b3, b2) / b2sq;
    V3 f1 = -1.0 * f0 - p * f0 + qq * f3;
    V3 f2 = -1.0 * f3 + p * f0 - qq * f3;
    fr.add(a, f0);
    fr.add(b, f1);
    fr.add(c, f2);
    fr.add(d, f3);
  }
  return e;
}

double pairs14(Frame& fr, const int64_t* idx, const double* prm, int64_t n) {
  double e = 0;
  for (int64_t t = 0; t < n; ++t) {
    const int64_t i = idx[2 * t], j = idx[2 * t + 1];
    const double qk = prm[3 * t], c6 = prm[3 * t + 1], c12 = prm[3 * t + 2];
    V3 d = fr.vec(i, j);
    double r2 = dot(d, d), ir2 = 1.0 / r2, ir = std::sqrt(ir2), ir6 = ir2 * ir2 * ir2;
    double a12 = c12 * ir6 * ir6, a6 = c6 * ir6, eel = qk * ir;
    e += eel + a12 - a6;
    V3 fj = ((eel + 12.0 * a12 - 6.0 * a6) * ir2) * d;
    fr.add(j, fj);
    fr.add(i, -1.0 * fj);
  }
  return e;
}

}  // namespace

// Energies (R,) float64 and forces (R, N, 3) (dtype of positions) of all bonded terms.
// Index tensors int64, parameter tensors float64: bond_prm (nb, 2) [k, r0], angle_prm
// (na, 2) [k, θ0], torsion_prm (nt, 5) [n, φ0, k, cos φ0, sin φ0], pair_prm (np, 3) [k_e qq, c6, c12].
std::vector<torch::Tensor> bonded_forces(torch::Tensor positions, torch::Tensor box, torch::Tensor bond_idx,
                                         torch::Tensor bond_prm, torch::Tensor angle_idx, torch::Tensor angle_prm,
                                         torch::Tensor torsion_idx, torch::Tensor torsion_prm,
                                         torch::Tensor pair_idx, torch::Tensor pair_prm) {
  TORCH_CHECK(positions.device().is_cpu(), "the native bonded kernel runs on the CPU only");
  TORCH_CHECK(torsion_prm.dim() == 2 && torsion_prm.size(1) == 5, "torsion_prm must be (n, 5)");
  auto x = positions.to(torch::kFloat64).contiguous();
  const bool periodic = box.numel() > 0;
  auto bx = periodic ? box.to(torch::kFloat64).contiguous() : box;
  const int64_t R = x.size(0), N = x.size(1);
  auto f = torch::zeros({R, N, 3}, torch::kFloat64);
  auto energy = torch::zeros({R}, torch::kFloat64);
  const double* X = x.data_ptr<double>();
  double* F = f.data_ptr<double>();
  double* E = energy.data_ptr<double>();
  // Replicas in parallel only when there is enough work (~0.05 ms) to pay for fork/join.
  const int64_t work = R * (bond_idx.size(0) + angle_idx.size(0) + 2 * torsion_idx.size(0) + pair_idx.size(0));
  tmd::dynamic_for(R, 1, work > 4000 ? 2 : R + 1, [&](int, int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      Frame fr{X + r * N * 3, periodic ? bx.data_ptr<double>() + r * 9 : nullptr, F + r * N * 3};
      double e = 0;
      e += bonds(fr, bond_idx.data_ptr<int64_t>(), bond_prm.data_ptr<double>(), bond_idx.size(0));
      e += angles(fr, angle_idx.data_ptr<int64_t>(), angle_prm.data_ptr<double>(), angle_idx.size(0));
      e += torsions(fr, torsion_idx.data_ptr<int64_t>(), torsion_prm.data_ptr<double>(), torsion_idx.size(0));
      e += pairs14(fr, pair_idx.data_ptr<int64_t>(), pair_prm.data_ptr<double>(), pair_idx.size(0));
      E[r] = e;
    }
  });
  return {energy, positions.scalar_type() == torch::kFloat64 ? f : f.to(positions.scalar_type())};
}
