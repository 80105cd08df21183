#include "kernels/reference/reference.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

namespace moerun::reference {

Matrix matmul(const Matrix& a, const Matrix& b, bool transpose_a, bool transpose_b, const Vector* bias) {
  const Matrix oa = transpose_a ? Matrix(a.transpose()) : a;
  const Matrix ob = transpose_b ? Matrix(b.transpose()) : b;
  Matrix c = oa * ob;
  if (bias != nullptr) c.rowwise() += bias->transpose();
  return c;
}

Matrix gelu(const Matrix& x) {
  return x.unaryExpr([](double v) { return 0.5 * v * (1.0 + std::erf(v / std::sqrt(2.0))); });
}

Matrix gelu_backward(const Matrix& x, const Matrix& dy) {
  const Matrix d = x.unaryExpr([](double v) {
    const double cdf = 0.5 * (1.0 + std::erf(v / std::sqrt(2.0)));
    const double pdf = std::exp(-0.5 * v * v) / std::sqrt(2.0 * M_PI);
    return cdf + v * pdf;
  });
  return d.cwiseProduct(dy);
}

static double sigmoid(double v) { return 1.0 / (1.0 + std::exp(-v)); }

Matrix silu(const Matrix& x) {
  return x.unaryExpr([](double v) { return v * sigmoid(v); });
}

Matrix silu_backward(const Matrix& x, const Matrix& dy) {
  const Matrix d = x.unaryExpr([](double v) {
    const double s = sigmoid(v);
    return s * (1.0 + v * (1.0 - s));
  });
  return d.cwiseProduct(dy);
}

Matrix swiglu(const Matrix& gate, const Matrix& up) { return silu(gate).cwiseProduct(up); }

SwiGluGrads swiglu_backward(const Matrix& gate, const Matrix& up, const Matrix& dy) {
  return {silu_backward(gate, dy.cwiseProduct(up)), silu(gate).cwiseProduct(dy)};
}

Matrix softmax_rows(const Matrix& x) {
  Matrix y(x.rows(), x.cols());
  for (Eigen::Index i = 0; i < x.rows(); ++i) {
    const double mx = x.row(i).maxCoeff();
    y.row(i) = (x.row(i).array() - mx).exp().matrix();
    y.row(i) /= y.row(i).sum();
  }
  return y;
}

Matrix softmax_rows_backward(const Matrix& y, const Matrix& dy) {
  Matrix dx(y.rows(), y.cols());
  for (Eigen::Index i = 0; i < y.rows(); ++i) {
    const double dot = y.row(i).dot(dy.row(i));
    dx.row(i) = y.row(i).cwiseProduct((dy.row(i).array() - dot).matrix());
  }
  return dx;
}

LayerNormOut layer_norm(const Matrix& x, const Vector& gamma, const Vector& beta, double eps) {
  LayerNormOut out{Matrix(x.rows(), x.cols()), Vector(x.rows()), Vector(x.rows())};
  for (Eigen::Index i = 0; i < x.rows(); ++i) {
    const double mean = x.row(i).mean();
    const double var = (x.row(i).array() - mean).square().mean();
    out.mean(i) = mean;
    out.variance(i) = var;
    const double r = 1.0 / std::sqrt(var + eps);
    for (Eigen::Index j = 0; j < x.cols(); ++j) out.y(i, j) = (x(i, j) - mean) * r * gamma(j) + beta(j);
  }
  return out;
}

NormGrads layer_norm_backward(const Matrix& x, const Vector& gamma, const Matrix& dy, double eps) {
  const Eigen::Index n = x.rows(), d = x.cols();
  NormGrads g{Matrix(n, d), Vector::Zero(d), Vector::Zero(d)};
  for (Eigen::Index i = 0; i < n; ++i) {
    const double mean = x.row(i).mean();
    const double var = (x.row(i).array() - mean).square().mean();
    const double r = 1.0 / std::sqrt(var + eps);
    const Eigen::RowVectorXd xh = (x.row(i).array() - mean).matrix() * r;
    const Eigen::RowVectorXd gdy = dy.row(i).cwiseProduct(gamma.transpose());
    g.dgamma += dy.row(i).cwiseProduct(xh).transpose();
    g.dbeta += dy.row(i).transpose();
    g.dx.row(i) = r * (gdy.array() - gdy.mean() - xh.array() * gdy.dot(xh) / static_cast<double>(d)).matrix();
  }
  return g;
}

Matrix rms_norm(const Matrix& x, const Vector& gamma, double eps) {
  Matrix y(x.rows(), x.cols());
  for (Eigen::Index i = 0; i < x.rows(); ++i) {
    const double r = 1.0 / std::sqrt(x.row(i).squaredNorm() / static_cast<double>(x.cols()) + eps);
    y.row(i) = x.row(i).cwiseProduct(gamma.transpose()) * r;
  }
  return y;
}

NormGrads rms_norm_backward(const Matrix& x, const Vector& gamma, const Matrix& dy, double eps) {
  const Eigen::Index n = x.rows(), d = x.cols();
  NormGrads g{Matrix(n, d), Vector::Zero(d), Vector()};
  for (Eigen::Index i = 0; i < n; ++i) {
    const double r = 1.0 / std::sqrt(x.row(i).squaredNorm() / static_cast<double>(d) + eps);
    const Eigen::RowVectorXd xh = x.row(i) * r;
    const Eigen::RowVectorXd gdy = dy.row(i).cwiseProduct(gamma.transpose());
    g.dgamma += dy.row(i).cwiseProduct(xh).transpose();
    g.dx.row(i) = r * (gdy.array() - xh.array() * gdy.dot(xh) / static_cast<double>(d)).matrix();
  }
  return g;
}

CrossEntropy cross_entropy(const Matrix& logits, const Index& labels, std::int32_t ignore_label) {
  CrossEntropy ce;
  for (Eigen::Index i = 0; i < logits.rows(); ++i) {
    if (labels[static_cast<std::size_t>(i)] == ignore_label) continue;
    const double mx = logits.row(i).maxCoeff();
    const double lse = mx + std::log((logits.row(i).array() - mx).exp().sum());
    ce.loss_sum += lse - logits(i, labels[static_cast<std::size_t>(i)]);
    ++ce.count;
  }
  return ce;
}

Matrix cross_entropy_backward(const Matrix& logits, const Index& labels, std::int32_t ignore_label, double scale) {
  Matrix d = softmax_rows(logits) * scale;
  for (Eigen::Index i = 0; i < logits.rows(); ++i) {
    const std::int32_t label = labels[static_cast<std::size_t>(i)];
    if (label == ignore_label) {
      d.row(i).setZero();
    } else {
      d(i, label) -= scale;
    }
  }
  return d;
}

TopK top_k(const Matrix& x, int k) {
  TopK r{Matrix(x.rows(), k), Index(static_cast<std::size_t>(x.rows() * k))};
  for (Eigen::Index i = 0; i < x.rows(); ++i) {
    std::vector<int> order(static_cast<std::size_t>(x.cols()));
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return x(i, a) > x(i, b); });
    for (int j = 0; j < k; ++j) {
      r.values(i, j) = x(i, order[static_cast<std::size_t>(j)]);
      r.indices[static_cast<std::size_t>(i * k + j)] = order[static_cast<std::size_t>(j)];
    }
  }
  return r;
}

Matrix gather_rows(const Matrix& src, const Index& index, const Vector* scale) {
  Matrix dst(static_cast<Eigen::Index>(index.size()), src.cols());
  for (std::size_t i = 0; i < index.size(); ++i) {
    if (index[i] < 0) {  // padding
      dst.row(static_cast<Eigen::Index>(i)).setZero();
      continue;
    }
    dst.row(static_cast<Eigen::Index>(i)) = src.row(index[i]) * (scale ? (*scale)(static_cast<Eigen::Index>(i)) : 1.0);
  }
  return dst;
}

Matrix rope(const Matrix& qkv, int seq, int heads, double theta, bool inverse, int first_position) {
  Matrix out = qkv;
  const Eigen::Index d = qkv.cols() / 3, hd = d / heads, half = hd / 2;
  for (Eigen::Index r = 0; r < qkv.rows(); ++r) {
    const double pos = double(first_position + r % seq);
    for (int part = 0; part < 2; ++part)
      for (int h = 0; h < heads; ++h)
        for (Eigen::Index i = 0; i < half; ++i) {
          const double angle = (inverse ? -1.0 : 1.0) * pos * std::pow(theta, -2.0 * double(i) / double(hd));
          const Eigen::Index c0 = part * d + h * hd + i, c1 = c0 + half;
          out(r, c0) = qkv(r, c0) * std::cos(angle) - qkv(r, c1) * std::sin(angle);
          out(r, c1) = qkv(r, c0) * std::sin(angle) + qkv(r, c1) * std::cos(angle);
        }
  }
  return out;
}

Fp8RoundTrip fp8_round_trip(const Matrix& x, int block) {
  // The e4m3 ("FN") values from the format: code = s eeee mmm, bias 7, subnormals at e = 0,
  // no infinities, eeee mmm = 1111 111 is NaN.
  std::vector<std::pair<double, int>> grid;  // (value, code) for the non-negative codes
  for (int code = 0; code < 0x7f; ++code) {
    const int e = code >> 3, m = code & 7;
    grid.emplace_back(e == 0 ? m * std::ldexp(1.0, -9) : (8 + m) * std::ldexp(1.0, e - 10), code);
  }
  Fp8RoundTrip out{Matrix(x.rows(), x.cols()), Matrix(x.rows(), x.cols() / block)};
  for (Eigen::Index i = 0; i < x.rows(); ++i) {
    for (Eigen::Index b = 0; b < x.cols() / block; ++b) {
      const double amax = x.row(i).segment(b * block, block).cwiseAbs().maxCoeff();
      const double scale = amax > 0 ? static_cast<float>(static_cast<float>(amax) / 448.0f) : 1.0;
      out.scales(i, b) = scale;
      for (Eigen::Index j = b * block; j < (b + 1) * block; ++j) {
        const double a = std::abs(static_cast<double>(static_cast<float>(x(i, j)) / static_cast<float>(scale)));
        std::pair<double, int> best = grid[0];
        for (const auto& g : grid) {
          const double gap = std::abs(g.first - a), best_gap = std::abs(best.first - a);
          if (gap < best_gap || (gap == best_gap && (g.second & 1) == 0)) best = g;
        }
        out.values(i, j) = (x(i, j) < 0 ? -best.first : best.first) * scale;
      }
    }
  }
  return out;
}

Matrix scatter_add_rows(const Matrix& src, const Index& index, Matrix dst, const Vector* scale) {
  for (std::size_t i = 0; i < index.size(); ++i) {
    if (index[i] < 0) continue;  // padding
    dst.row(index[i]) += src.row(static_cast<Eigen::Index>(i)) * (scale ? (*scale)(static_cast<Eigen::Index>(i)) : 1.0);
  }
  return dst;
}

namespace {
// q, k or v of (batch b, head h) as a [t, hd] matrix; which = 0, 1, 2.
Matrix head_block(const Matrix& qkv, int b, int h, int which, int seq, int heads) {
  const int d = static_cast<int>(qkv.cols() / 3), hd = d / heads;
  return qkv.block(b * seq, which * d + h * hd, seq, hd);
}
Matrix causal_probs(const Matrix& q, const Matrix& k) {
  const int t = static_cast<int>(q.rows());
  Matrix s = q * k.transpose() / std::sqrt(static_cast<double>(q.cols()));
  for (int i = 0; i < t; ++i)
    for (int j = i + 1; j < t; ++j) s(i, j) = -std::numeric_limits<double>::infinity();
  return softmax_rows(s);
}
}  // namespace

Attention attention(const Matrix& qkv, int batch, int seq, int heads) {
  const int d = static_cast<int>(qkv.cols() / 3), hd = d / heads;
  Attention a{Matrix(batch * seq, d), Matrix(batch * heads * seq, seq)};
  for (int b = 0; b < batch; ++b) {
    for (int h = 0; h < heads; ++h) {
      const Matrix p = causal_probs(head_block(qkv, b, h, 0, seq, heads), head_block(qkv, b, h, 1, seq, heads));
      a.probs.block((b * heads + h) * seq, 0, seq, seq) = p;
      a.out.block(b * seq, h * hd, seq, hd) = p * head_block(qkv, b, h, 2, seq, heads);
    }
  }
  return a;
}

Matrix attention_backward(const Matrix& qkv, int batch, int seq, int heads, const Matrix& dout) {
  const int d = static_cast<int>(qkv.cols() / 3), hd = d / heads;
  const double scale = 1.0 / std::sqrt(static_cast<double>(hd));
  Matrix dqkv = Matrix::Zero(qkv.rows(), qkv.cols());
  for (int b = 0; b < batch; ++b) {
    for (int h = 0; h < heads; ++h) {
      const Matrix q = head_block(qkv, b, h, 0, seq, heads), k = head_block(qkv, b, h, 1, seq, heads),
                   v = head_block(qkv, b, h, 2, seq, heads);
      const Matrix p = causal_probs(q, k);
      const Matrix dO = dout.block(b * seq, h * hd, seq, hd);
      const Matrix dp = dO * v.transpose();
      const Matrix ds = softmax_rows_backward(p, dp) * scale;
      dqkv.block(b * seq, h * hd, seq, hd) = ds * k;
      dqkv.block(b * seq, d + h * hd, seq, hd) = ds.transpose() * q;
      dqkv.block(b * seq, 2 * d + h * hd, seq, hd) = p.transpose() * dO;
    }
  }
  return dqkv;
}

Router router(const Matrix& logits, int k, bool renormalize, bool sigmoid, const Vector* bias) {
  const Eigen::Index n = logits.rows(), e = logits.cols();
  Router r{Matrix(n, e), Vector(n), Index(static_cast<std::size_t>(n * k)), Matrix(n, k)};
  Matrix scores = sigmoid ? Matrix((1.0 + (-logits.array()).exp()).inverse()) : softmax_rows(logits);
  for (Eigen::Index i = 0; i < n; ++i) {
    if (sigmoid) {
      const double sum = scores.row(i).sum();
      r.probs.row(i) = scores.row(i) / sum;
      r.lse(i) = std::log(sum);
    } else {
      r.probs.row(i) = scores.row(i);
      const double mx = logits.row(i).maxCoeff();
      r.lse(i) = mx + std::log((logits.row(i).array() - mx).exp().sum());
    }
    std::vector<int> order(static_cast<std::size_t>(e));
    std::iota(order.begin(), order.end(), 0);
    auto choice = [&](int j) { return scores(i, j) + (bias != nullptr ? (*bias)(j) : 0.0); };
    std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return choice(a) > choice(b); });
    double total = 0.0;
    for (int j = 0; j < k; ++j) total += scores(i, order[static_cast<std::size_t>(j)]);
    for (int j = 0; j < k; ++j) {
      const int expert = order[static_cast<std::size_t>(j)];
      r.index[static_cast<std::size_t>(i * k + j)] = expert;
      r.gates(i, j) = scores(i, expert) / (renormalize ? total : 1.0);
    }
  }
  return r;
}

Matrix router_backward(const Matrix& logits, int k, bool renormalize, const Matrix& dgates, const Matrix& aux_weight,
                       double z_scale, bool sigmoid, const Vector* bias) {
  const Router r = router(logits, k, renormalize, sigmoid, bias);
  const Eigen::Index n = logits.rows(), e = logits.cols(), per_group = n > 0 ? n / aux_weight.rows() : 1;
  // dscores from the gates: g_j = s_j / sum of the chosen s (or s_j).
  Matrix dscores = Matrix::Zero(n, e);
  for (Eigen::Index i = 0; i < n; ++i) {
    const double scale = sigmoid ? std::exp(r.lse(i)) : 1.0;
    double vsum = 0.0;
    for (int j = 0; j < k; ++j) vsum += r.probs(i, r.index[static_cast<std::size_t>(i * k + j)]) * scale;
    const double dot = dgates.row(i).dot(r.gates.row(i));
    for (int j = 0; j < k; ++j)
      dscores(i, r.index[static_cast<std::size_t>(i * k + j)]) += renormalize ? (dgates(i, j) - dot) / vsum : dgates(i, j);
  }
  Matrix dprobs(n, e);
  for (Eigen::Index i = 0; i < n; ++i) dprobs.row(i) = aux_weight.row(i / per_group);
  if (!sigmoid) {
    Matrix dlogits = softmax_rows_backward(r.probs, dprobs + dscores);
    for (Eigen::Index i = 0; i < n; ++i) dlogits.row(i) += z_scale * r.lse(i) * r.probs.row(i);
    return dlogits;
  }
  // probs = s / sum(s): ds_j += (dprobs_j - <dprobs, probs>) / sum(s); then ds / dlogits = s (1 - s).
  Matrix dlogits(n, e);
  for (Eigen::Index i = 0; i < n; ++i) {
    const double sum = std::exp(r.lse(i));
    const double inner = dprobs.row(i).dot(r.probs.row(i));
    for (Eigen::Index j = 0; j < e; ++j) {
      const double s = r.probs(i, j) * sum;
      dlogits(i, j) = (dscores(i, j) + (dprobs(i, j) - inner) / sum) * s * (1.0 - s);
    }
  }
  return dlogits;
}

AdamWState adamw(AdamWState s, const Vector& grad, double lr, double beta1, double beta2, double eps, double weight_decay,
                 std::int64_t step) {
  const double c1 = 1.0 - std::pow(beta1, static_cast<double>(step));
  const double c2 = 1.0 - std::pow(beta2, static_cast<double>(step));
  for (Eigen::Index i = 0; i < s.param.size(); ++i) {
    s.m(i) = beta1 * s.m(i) + (1.0 - beta1) * grad(i);
    s.v(i) = beta2 * s.v(i) + (1.0 - beta2) * grad(i) * grad(i);
    s.param(i) -= lr * ((s.m(i) / c1) / (std::sqrt(s.v(i) / c2) + eps) + weight_decay * s.param(i));
  }
  return s;
}

DispatchLayout dispatch_layout(const Index& index, int k, int experts, std::int64_t capacity, const Index& split,
                               const Index& slot_of, int ep, std::int64_t slots, std::int64_t block, std::int64_t blocks) {
  const std::int64_t copies = static_cast<std::int64_t>(index.size());
  // The copies in priority order: by choice rank, then token.
  std::vector<std::int64_t> order(static_cast<std::size_t>(copies));
  for (std::int64_t c = 0; c < copies; ++c) order[static_cast<std::size_t>(c)] = c;
  std::stable_sort(order.begin(), order.end(), [k](std::int64_t a, std::int64_t b) { return a % k < b % k; });
  DispatchLayout out;
  out.assigned.assign(static_cast<std::size_t>(experts), 0);
  std::vector<std::vector<std::int64_t>> kept(static_cast<std::size_t>(experts));  // each expert's copies, in priority
  for (const std::int64_t c : order) {
    auto& mine = kept[static_cast<std::size_t>(index[static_cast<std::size_t>(c)])];
    ++out.assigned[static_cast<std::size_t>(index[static_cast<std::size_t>(c)])];
    if (capacity == 0 || static_cast<std::int64_t>(mine.size()) < capacity) mine.push_back(c);
  }
  for (const auto& mine : kept) out.kept.push_back(static_cast<std::int64_t>(mine.size()));
  const bool sorted = slots == 0 && block == 0;
  const std::int64_t rows = sorted ? copies : slots > 0 ? ep * slots * capacity : ep * blocks * block;
  out.token_of_row.assign(static_cast<std::size_t>(rows), -1);
  out.gate_of_row.assign(static_cast<std::size_t>(rows), -1);
  auto place = [&](std::int64_t row, std::int64_t c) {
    out.token_of_row[static_cast<std::size_t>(row)] = static_cast<std::int32_t>(c / k);
    out.gate_of_row[static_cast<std::size_t>(row)] = static_cast<std::int32_t>(c);
  };
  if (sorted) {
    std::int64_t row = 0;
    for (const auto& mine : kept)
      for (const std::int64_t c : mine) place(row++, c);
    return out;
  }
  if (block > 0) out.labels.assign(static_cast<std::size_t>(ep * blocks), -1);
  std::vector<std::int64_t> used_blocks(static_cast<std::size_t>(ep), 0);
  for (int e = 0; e < experts; ++e) {
    const auto& mine = kept[static_cast<std::size_t>(e)];
    const auto at = [&](const Index& table, int r) { return table[static_cast<std::size_t>(e * ep + r)]; };
    std::int64_t total = 0;
    for (int r = 0; r < ep; ++r) total += at(split, r);
    std::int64_t before = 0;  // shares of the ranks before r
    for (int r = 0; r < ep; ++r) {
      const std::int64_t from = total > 0 ? std::int64_t(mine.size()) * before / total : 0;
      before += at(split, r);
      const std::int64_t to = total > 0 ? std::int64_t(mine.size()) * before / total : 0;
      for (std::int64_t i = from; i < to; ++i) {
        const std::int64_t within = i - from;
        if (slots > 0) {
          place((r * slots + at(slot_of, r)) * capacity + within, mine[static_cast<std::size_t>(i)]);
        } else {
          place((r * blocks + used_blocks[static_cast<std::size_t>(r)]) * block + within, mine[static_cast<std::size_t>(i)]);
        }
      }
      if (block > 0) {
        for (std::int64_t b = 0; b < (to - from + block - 1) / block; ++b)
          out.labels[static_cast<std::size_t>(r * blocks + used_blocks[static_cast<std::size_t>(r)]++)] = at(slot_of, r);
      }
    }
  }
  return out;
}

}  // namespace moerun::reference
