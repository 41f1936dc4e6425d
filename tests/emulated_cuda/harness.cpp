// A stand-alone program that runs every CUDA kernel of fused_lstm under the host emulation (simt.h) on
// small shapes and compares each result with a plain float64 computation written here. It is what the
// sanitizer builds (ThreadSanitizer, AddressSanitizer) and the fault-injection tests run
// (tests/test_emulated_cuda.py builds it against csrc/ or a mutated copy of it). No torch at run time
// but c10 (the kernels' Half/BFloat16 and TORCH_CHECK).
//
//   harness [--multiprocessors N]...   (default: 132, then 8: 30 CTAs of one unit, then 8 CTAs of four)
// Prints one line per case and exits 1 if any result is off.
#include "emulated_kernels.cpp"

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

namespace {

using fused_lstm::cuda::launch_backward_pointwise;
using fused_lstm::cuda::launch_forward_pointwise;
using fused_lstm::cuda::launch_gru_backward_pointwise;
using fused_lstm::cuda::launch_gru_forward_pointwise;
using fused_lstm::cuda::launch_persistent_forward;
using fused_lstm::cuda::plan_persistent_forward;

int failures = 0;
std::mt19937 random_engine(1234);

double sigmoid(double x) { return 1.0 / (1.0 + std::exp(-x)); }

template <typename Scalar>
const char* dtype_name() {
  if (std::is_same_v<Scalar, float>) return "float32";
  if (std::is_same_v<Scalar, double>) return "float64";
  if (std::is_same_v<Scalar, c10::Half>) return "float16";
  return "bfloat16";
}

// Tolerance of one rounding to Scalar (the kernels compute in float/double and round their outputs once),
// relative to the value's size, plus float32's own rounding of the math.
template <typename Scalar>
double tolerance() {
  if (std::is_same_v<Scalar, double>) return 1e-12;
  if (std::is_same_v<Scalar, float>) return 1e-5;
  if (std::is_same_v<Scalar, c10::Half>) return 2e-3;
  return 1.6e-2;
}

// Values of Scalar (so that the float64 reference starts from exactly what the kernel reads).
template <typename Scalar>
std::vector<Scalar> random_values(std::size_t count, double scale) {
  std::normal_distribution<double> normal(0.0, scale);
  std::vector<Scalar> values(count);
  for (auto& value : values) value = static_cast<Scalar>(normal(random_engine));
  return values;
}

// Gate activations as forward saves them, [rows, gates·H]: sigmoids in (0, 1), the tanh gate in (-1, 1).
template <typename Scalar>
std::vector<Scalar> saved_activations(int64_t rows, int gates, int64_t hidden, int tanh_gate) {
  std::uniform_real_distribution<double> unit(0.05, 0.95);
  std::vector<Scalar> values(rows * gates * hidden);
  for (int64_t r = 0; r < rows; ++r) {
    for (int g = 0; g < gates; ++g) {
      for (int64_t j = 0; j < hidden; ++j) {
        const double value = unit(random_engine);
        values[(r * gates + g) * hidden + j] = static_cast<Scalar>(g == tanh_gate ? 2.0 * value - 1.0 : value);
      }
    }
  }
  return values;
}

template <typename Scalar>
std::vector<double> widened(const std::vector<Scalar>& values) {
  return std::vector<double>(values.begin(), values.end());
}

// Largest error relative to max(1, |expected|) over the elements; records a failure above tol.
template <typename Scalar>
void compare(const std::string& what, const std::vector<Scalar>& actual, const std::vector<double>& expected, double tol) {
  double worst = 0.0;
  bool finite = true;
  for (std::size_t i = 0; i < expected.size(); ++i) {
    const double value = static_cast<double>(actual[i]);
    finite = finite && std::isfinite(value);
    worst = std::max(worst, std::abs(value - expected[i]) / std::max(1.0, std::abs(expected[i])));
  }
  const bool ok = finite && worst <= tol;
  if (!ok) ++failures;
  std::printf("%-4s %-64s max error %.3g (tolerance %.3g)\n", ok ? "ok" : "FAIL", what.c_str(), worst, tol);
}

template <typename Scalar>
using Acc = at::opmath_type<Scalar>;

template <typename Scalar>
void lstm_pointwise_case(int64_t rows, int64_t hidden) {
  const std::string name = std::string("lstm pointwise ") + dtype_name<Scalar>() + " rows " + std::to_string(rows) +
                           " hidden " + std::to_string(hidden);
  const int64_t H = hidden, N = rows;
  auto gates = random_values<Scalar>(N * 4 * H, 1.5);
  const auto bias = random_values<Scalar>(4 * H, 0.5);
  auto cell = random_values<Acc<Scalar>>(N * H, 1.0);
  std::vector<Acc<Scalar>> cell_prev_saved(N * H);
  std::vector<Scalar> hidden_out(N * H), hidden_state(N * H);
  const auto gates_in = widened(gates), bias_in = widened(bias), cell_in = widened(cell);

  fused_lstm::LstmForwardPointwiseParams forward{N, H, gates.data(), bias.data(), cell.data(), cell_prev_saved.data(),
                                                 hidden_out.data(), hidden_state.data()};
  launch_forward_pointwise<Scalar>(forward);
  std::vector<double> activations(N * 4 * H), cell_next(N * H), hidden_next(N * H);
  for (int64_t r = 0; r < N; ++r) {
    for (int64_t j = 0; j < H; ++j) {
      double pre[4];
      for (int g = 0; g < 4; ++g) pre[g] = gates_in[r * 4 * H + g * H + j] + bias_in[g * H + j];
      const double i = sigmoid(pre[0]), f = sigmoid(pre[1]), g = std::tanh(pre[2]), o = sigmoid(pre[3]);
      const double c = f * cell_in[r * H + j] + i * g;
      const double act[4] = {i, f, g, o};
      for (int k = 0; k < 4; ++k) activations[r * 4 * H + k * H + j] = act[k];
      cell_next[r * H + j] = c;
      hidden_next[r * H + j] = o * std::tanh(c);
    }
  }
  compare(name + " forward activations", gates, activations, tolerance<Scalar>());
  compare(name + " forward c_t", cell, cell_next, tolerance<Acc<Scalar>>() * 4);
  compare(name + " forward c_{t-1} saved", cell_prev_saved, cell_in, 0.0);
  compare(name + " forward h_t", hidden_out, hidden_next, tolerance<Scalar>() * 2);
  compare(name + " forward h_t (state)", hidden_state, hidden_next, tolerance<Scalar>() * 2);

  const auto saved = saved_activations<Scalar>(N, 4, H, /*tanh_gate=*/2);
  const auto cell_prev = random_values<Acc<Scalar>>(N * H, 1.0);
  const auto grad_hidden = random_values<Scalar>(N * H, 1.0), grad_hidden_2 = random_values<Scalar>(N * H, 1.0);
  auto grad_cell = random_values<Acc<Scalar>>(N * H, 1.0);
  std::vector<Scalar> grad_gates(N * 4 * H);
  const auto saved_in = widened(saved), cell_prev_in = widened(cell_prev), grad_cell_in = widened(grad_cell);
  const auto grad_hidden_in = widened(grad_hidden), grad_hidden_2_in = widened(grad_hidden_2);
  fused_lstm::LstmBackwardPointwiseParams backward{N, H, saved.data(), cell_prev.data(), grad_hidden.data(),
                                                   grad_hidden_2.data(), grad_cell.data(), grad_gates.data()};
  launch_backward_pointwise<Scalar>(backward);
  std::vector<double> expected_grad_gates(N * 4 * H), expected_grad_cell(N * H);
  for (int64_t r = 0; r < N; ++r) {
    for (int64_t j = 0; j < H; ++j) {
      const double i = saved_in[r * 4 * H + j], f = saved_in[r * 4 * H + H + j];
      const double g = saved_in[r * 4 * H + 2 * H + j], o = saved_in[r * 4 * H + 3 * H + j];
      const double c_prev = cell_prev_in[r * H + j];
      const double c = f * c_prev + i * g, tc = std::tanh(c);
      const double dh = grad_hidden_in[r * H + j] + grad_hidden_2_in[r * H + j];
      const double dc = grad_cell_in[r * H + j] + dh * o * (1 - tc * tc);
      const double grads[4] = {dc * g * i * (1 - i), dc * c_prev * f * (1 - f), dc * i * (1 - g * g),
                               dh * tc * o * (1 - o)};
      for (int k = 0; k < 4; ++k) expected_grad_gates[r * 4 * H + k * H + j] = grads[k];
      expected_grad_cell[r * H + j] = dc * f;
    }
  }
  compare(name + " backward dL/d(pre-activations)", grad_gates, expected_grad_gates, tolerance<Scalar>() * 4);
  compare(name + " backward dL/dc_{t-1}", grad_cell, expected_grad_cell, tolerance<Acc<Scalar>>() * 4);
}

template <typename Scalar>
void gru_pointwise_case(int64_t rows, int64_t hidden) {
  const std::string name = std::string("gru pointwise ") + dtype_name<Scalar>() + " rows " + std::to_string(rows) +
                           " hidden " + std::to_string(hidden);
  const int64_t H = hidden, N = rows;
  auto gates = random_values<Scalar>(N * 3 * H, 1.0);
  const auto hidden_gates = random_values<Scalar>(N * 3 * H, 1.0);
  const auto bias_ih = random_values<Scalar>(3 * H, 0.5), bias_hh = random_values<Scalar>(3 * H, 0.5);
  auto state = random_values<Scalar>(N * H, 1.0);
  std::vector<Scalar> hidden_out(N * H), candidate_saved(N * H);
  const auto x = widened(gates), h = widened(hidden_gates), bi = widened(bias_ih), bh = widened(bias_hh);
  const auto state_in = widened(state);
  fused_lstm::GruForwardPointwiseParams forward{N, H, gates.data(), hidden_gates.data(), bias_ih.data(),
                                                bias_hh.data(), state.data(), hidden_out.data(),
                                                candidate_saved.data()};
  launch_gru_forward_pointwise<Scalar>(forward);
  std::vector<double> expected_gates(N * 3 * H), expected_hidden(N * H), expected_candidate(N * H);
  for (int64_t r = 0; r < N; ++r) {
    for (int64_t j = 0; j < H; ++j) {
      const auto at = [&](const std::vector<double>& m, int g) { return m[r * 3 * H + g * H + j]; };
      const double reset = sigmoid(at(x, 0) + at(h, 0) + bi[j] + bh[j]);
      const double update = sigmoid(at(x, 1) + at(h, 1) + bi[H + j] + bh[H + j]);
      const double candidate = at(h, 2) + bh[2 * H + j];
      const double n = std::tanh(at(x, 2) + bi[2 * H + j] + reset * candidate);
      expected_gates[r * 3 * H + j] = reset;
      expected_gates[r * 3 * H + H + j] = update;
      expected_gates[r * 3 * H + 2 * H + j] = n;
      expected_hidden[r * H + j] = (1 - update) * n + update * state_in[r * H + j];
      expected_candidate[r * H + j] = candidate;
    }
  }
  compare(name + " forward r, z, n", gates, expected_gates, tolerance<Scalar>() * 2);
  compare(name + " forward h_t", hidden_out, expected_hidden, tolerance<Scalar>() * 4);
  compare(name + " forward h_t (state)", state, expected_hidden, tolerance<Scalar>() * 4);
  compare(name + " forward h_n + b_hn saved", candidate_saved, expected_candidate, tolerance<Scalar>());

  const auto saved = saved_activations<Scalar>(N, 3, H, /*tanh_gate=*/2);
  const auto candidate = random_values<Scalar>(N * H, 1.0), hidden_prev = random_values<Scalar>(N * H, 1.0);
  const auto grad_output = random_values<Scalar>(N * H, 1.0);
  auto grad_hidden = random_values<Scalar>(N * H, 1.0);
  std::vector<Scalar> grad_gates(N * 3 * H), grad_hidden_gates(N * 3 * H);
  const auto s = widened(saved), cand = widened(candidate), hp = widened(hidden_prev), go = widened(grad_output);
  const auto gh = widened(grad_hidden);
  fused_lstm::GruBackwardPointwiseParams backward{N, H, saved.data(), candidate.data(), hidden_prev.data(),
                                                  grad_output.data(), grad_hidden.data(), grad_gates.data(),
                                                  grad_hidden_gates.data()};
  launch_gru_backward_pointwise<Scalar>(backward);
  std::vector<double> expected_grad_gates(N * 3 * H), expected_grad_hidden_gates(N * 3 * H), expected_grad_h(N * H);
  for (int64_t r = 0; r < N; ++r) {
    for (int64_t j = 0; j < H; ++j) {
      const double reset = s[r * 3 * H + j], update = s[r * 3 * H + H + j], n = s[r * 3 * H + 2 * H + j];
      const double dh = go[r * H + j] + gh[r * H + j];
      const double dn = dh * (1 - update) * (1 - n * n);
      const double dz = dh * (hp[r * H + j] - n) * update * (1 - update);
      const double dr = dn * cand[r * H + j] * reset * (1 - reset);
      const double grads[3] = {dr, dz, dn};
      for (int k = 0; k < 3; ++k) expected_grad_gates[r * 3 * H + k * H + j] = grads[k];
      const double hidden_grads[3] = {dr, dz, dn * reset};
      for (int k = 0; k < 3; ++k) expected_grad_hidden_gates[r * 3 * H + k * H + j] = hidden_grads[k];
      expected_grad_h[r * H + j] = dh * update;
    }
  }
  compare(name + " backward dL/d(input part)", grad_gates, expected_grad_gates, tolerance<Scalar>() * 4);
  compare(name + " backward dL/d(hidden part)", grad_hidden_gates, expected_grad_hidden_gates, tolerance<Scalar>() * 4);
  compare(name + " backward dL/dh_{t-1} (direct)", grad_hidden, expected_grad_h, tolerance<Scalar>() * 2);
}

// The persistent forward over T steps against a float64 recurrence from the same inputs.
template <typename Scalar>
void persistent_case(int64_t steps, int64_t batch, int64_t hidden, bool reverse) {
  const int sms = fused_lstm_emulation::device_properties().multiprocessors;
  const auto plan = plan_persistent_forward<Scalar>(batch, hidden);
  const std::string name = std::string("persistent ") + dtype_name<Scalar>() + " T " + std::to_string(steps) + " B " +
                           std::to_string(batch) + " H " + std::to_string(hidden) + (reverse ? " reverse" : "") +
                           " on " + std::to_string(sms) + " SMs (" + std::to_string(plan.blocks) + " CTAs of " +
                           std::to_string(plan.units_per_block) + " units)";
  if (!plan.fits) {
    ++failures;
    std::printf("FAIL %s: the plan does not fit\n", name.c_str());
    return;
  }
  const int64_t T = steps, B = batch, H = hidden;
  const double scale = 1.0 / std::sqrt(static_cast<double>(H));
  const auto weight_hh = random_values<Scalar>(4 * H * H, scale * 2);
  const auto bias = random_values<Scalar>(4 * H, 0.3), h0 = random_values<Scalar>(B * H, 0.5);
  auto gates = random_values<Scalar>(T * B * 4 * H, 0.8);  // x·W_ihᵀ
  auto cell = random_values<float>(B * H, 0.5);
  std::vector<float> cell_prev_saved(T * B * H);
  std::vector<Scalar> output(T * B * H);
  const auto w = widened(weight_hh), b = widened(bias), projection = widened(gates);
  std::vector<double> h(h0.begin(), h0.end()), c(cell.begin(), cell.end());

  fused_lstm::LstmRecurrenceForwardParams params{};
  params.steps = T;
  params.batch = B;
  params.hidden = H;
  params.input_size = 0;
  params.reverse = reverse;
  params.save_for_backward = true;
  params.project_input = false;
  params.weight_hh = weight_hh.data();
  params.bias = bias.data();
  params.h0 = h0.data();
  params.gates = gates.data();
  params.cell = cell.data();
  params.cell_prev_saved = cell_prev_saved.data();
  params.output = output.data();
  launch_persistent_forward<Scalar>(params);

  std::vector<double> expected_output(T * B * H), expected_gates(T * B * 4 * H), expected_cell_prev(T * B * H);
  for (int64_t k = 0; k < T; ++k) {
    const int64_t t = reverse ? T - 1 - k : k;
    std::vector<double> h_next(B * H);
    for (int64_t r = 0; r < B; ++r) {
      for (int64_t j = 0; j < H; ++j) {
        double pre[4];
        for (int g = 0; g < 4; ++g) {
          double sum = projection[(t * B + r) * 4 * H + g * H + j] + b[g * H + j];
          for (int64_t q = 0; q < H; ++q) sum += h[r * H + q] * w[(g * H + j) * H + q];
          pre[g] = sum;
        }
        const double i = sigmoid(pre[0]), f = sigmoid(pre[1]), g = std::tanh(pre[2]), o = sigmoid(pre[3]);
        const double act[4] = {i, f, g, o};
        for (int q = 0; q < 4; ++q) expected_gates[(t * B + r) * 4 * H + q * H + j] = act[q];
        expected_cell_prev[(t * B + r) * H + j] = c[r * H + j];
        c[r * H + j] = f * c[r * H + j] + i * g;
        h_next[r * H + j] = o * std::tanh(c[r * H + j]);
        expected_output[(t * B + r) * H + j] = h_next[r * H + j];
      }
    }
    // The kernel carries h in Scalar between steps (it reads the output rows it wrote).
    for (int64_t e = 0; e < B * H; ++e) h[e] = static_cast<double>(static_cast<Scalar>(h_next[e]));
  }
  const double tol = tolerance<Scalar>() * 4;
  compare(name + " output", output, expected_output, tol);
  compare(name + " activations", gates, expected_gates, tol);
  compare(name + " c_{t-1} saved", cell_prev_saved, expected_cell_prev, tol);
  compare(name + " c_n", cell, c, tol);
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<int> multiprocessor_counts;
  for (int a = 1; a + 1 < argc; a += 2) {
    if (std::string(argv[a]) == "--multiprocessors") multiprocessor_counts.push_back(std::atoi(argv[a + 1]));
  }
  if (multiprocessor_counts.empty()) multiprocessor_counts = {132, 8};
  try {
    // The vector path (H a multiple of 16 bytes' worth), the scalar path, and many rows per block.
    for (const auto& [rows, hidden] : {std::pair<int64_t, int64_t>{5, 32}, {3, 30}, {70, 8}}) {
      lstm_pointwise_case<float>(rows, hidden);
      lstm_pointwise_case<double>(rows, hidden);
      lstm_pointwise_case<c10::Half>(rows, hidden);
      lstm_pointwise_case<c10::BFloat16>(rows, hidden);
      gru_pointwise_case<float>(rows, hidden);
      gru_pointwise_case<double>(rows, hidden);
      gru_pointwise_case<c10::Half>(rows, hidden);
      gru_pointwise_case<c10::BFloat16>(rows, hidden);
    }
    for (const int sms : multiprocessor_counts) {
      fused_lstm_emulation::configure(sms, 42);
      // B = 5: a full row group of 4 and a partial one; B = 2: one-row items; H = 30 scalar, 64 vector.
      persistent_case<float>(3, 5, 30, false);
      persistent_case<float>(3, 2, 64, true);
      persistent_case<c10::Half>(2, 5, 30, false);
      persistent_case<c10::BFloat16>(2, 5, 64, false);
    }
  } catch (const std::exception& error) {
    std::printf("FAIL: %s\n", error.what());
    return 1;
  }
  std::printf("%s: %d failure(s)\n", failures ? "FAILED" : "passed", failures);
  return failures ? 1 : 0;
}
