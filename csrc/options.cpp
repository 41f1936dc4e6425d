#include "options.h"

#include "gemm.h"

#include <c10/util/Exception.h>

#include <atomic>
#include <cstdlib>
#include <sstream>
#include <utility>
#include <vector>

namespace fused_lstm {
namespace options {
namespace {

constexpr int kUnread = -1;

// One switch: its values (an index into `values` is what is stored) and the value it has when the variable is
// unset or empty.
struct Switch {
  const char* name;
  const char* variable;
  std::vector<std::string> values;
  int default_value;
  std::atomic<int> value{kUnread};
};

// After "auto", in the order of cpu::Isa.
Switch cpu_isa_switch{"cpu_isa", "FUSED_LSTM_CPU_ISA", {"auto", "none", "avx2", "avx512", "avx512_bf16", "amx"}, 0};
Switch cpu_gemm_switch{"cpu_gemm", "FUSED_LSTM_CPU_GEMM", {"auto", "aten", "onednn"}, 0};
Switch cuda_persistent_switch{"cuda_persistent", "FUSED_LSTM_CUDA_PERSISTENT", {"0", "1"}, 0};

Switch* const kSwitches[] = {&cpu_isa_switch, &cpu_gemm_switch, &cuda_persistent_switch};

cpu::Isa isa_of(int value) { return value == 0 ? cpu::best_isa() : static_cast<cpu::Isa>(value - 1); }

// `source` names where the value came from in messages: the variable, or the option.
int parse(const Switch& option, const std::string& value, const std::string& source) {
  int parsed = kUnread;
  for (size_t i = 0; i < option.values.size(); ++i) {
    if (option.values[i] == value) parsed = static_cast<int>(i);
  }
  if (parsed == kUnread) {
    std::ostringstream allowed;
    for (size_t i = 0; i < option.values.size(); ++i) allowed << (i ? ", " : "") << option.values[i];
    TORCH_CHECK(false, "fused_lstm: ", source, " must be one of ", allowed.str(), ", got '", value, "'");
  }
  if (&option == &cpu_isa_switch) {
    const cpu::Isa wanted = isa_of(parsed);
    TORCH_CHECK(cpu::best_isa() >= wanted, "fused_lstm: ", source, "=", value,
                " but this CPU does not have it (the best it has: ", cpu::isa_name(cpu::best_isa()), ")");
  }
  if (&option == &cpu_gemm_switch && static_cast<CpuGemm>(parsed) == CpuGemm::kOneDnn) {
    TORCH_CHECK(onednn_matmul_usable(), "fused_lstm: ", source, "=", value,
                " but oneDNN's float32 matmul cannot run here: torch's mkldnn_matmul needs AVX-512 (BW, VL, DQ) or "
                "AVX-NE-CONVERT as oneDNN sees the CPU (torch.ops.mkldnn._is_mkldnn_bf16_supported() is False)");
  }
  return parsed;
}

int read(Switch& option) {
  const int value = option.value.load(std::memory_order_relaxed);
  if (value != kUnread) return value;
  const char* variable = std::getenv(option.variable);
  const int parsed = variable == nullptr || variable[0] == '\0' ? option.default_value
                                                                 : parse(option, variable, option.variable);
  int expected = kUnread;  // a concurrent set_option wins
  option.value.compare_exchange_strong(expected, parsed);
  return option.value.load(std::memory_order_relaxed);
}

Switch& find(const std::string& name) {
  for (Switch* option : kSwitches) {
    if (name == option->name) return *option;
  }
  TORCH_CHECK(false, "fused_lstm: unknown option '", name, "' (options: cpu_isa, cpu_gemm, cuda_persistent)");
  return *kSwitches[0];  // not reached
}

void set_option(const std::string& name, const std::string& value) { set(name, value); }
std::string best_cpu_isa() { return cpu::isa_name(cpu::best_isa()); }
std::string get_option(const std::string& name) { return get(name); }

}  // namespace

cpu::Isa cpu_isa() { return isa_of(read(cpu_isa_switch)); }
CpuGemm cpu_gemm() { return static_cast<CpuGemm>(read(cpu_gemm_switch)); }
bool cuda_persistent() { return read(cuda_persistent_switch) == 1; }

std::string get(const std::string& name) {
  Switch& option = find(name);
  return option.values[read(option)];
}

void set(const std::string& name, const std::string& value) {
  Switch& option = find(name);
  option.value.store(parse(option, value, std::string("option ") + name), std::memory_order_relaxed);
}

void define_ops(torch::Library& m) {
  m.def("set_option(str name, str value) -> ()", &set_option);
  m.def("get_option(str name) -> str", &get_option);
  // What cpu_isa=auto resolves to: the best instruction set this CPU has (cpu/isa.h).
  m.def("best_cpu_isa() -> str", &best_cpu_isa);
  // Whether cpu_gemm=onednn can be set: oneDNN's float32 matmul can run on this CPU (gemm.h).
  m.def("onednn_matmul_usable() -> bool", [] { return onednn_matmul_usable(); });
}

}  // namespace options
}  // namespace fused_lstm
