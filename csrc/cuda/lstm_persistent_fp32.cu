// The float32 instantiation of the persistent recurrent LSTM forward. One dtype per file: they compile
// in parallel.
#include "lstm_persistent.cuh"

namespace fused_lstm {
namespace cuda {

template PersistentPlan plan_persistent_forward<float>(int64_t batch, int64_t hidden);
template void launch_persistent_forward<float>(const LstmRecurrenceForwardParams& params);

}  // namespace cuda
}  // namespace fused_lstm
