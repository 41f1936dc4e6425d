// The float32 instantiation of the CUDA pointwise passes (LSTM and GRU). One dtype per file: the four
// compile in parallel.
#include "gru_pointwise_cuda.cuh"
#include "lstm_pointwise_cuda.cuh"

namespace fused_lstm {
namespace cuda {

template void launch_forward_pointwise<float>(const LstmForwardPointwiseParams& params);
template void launch_backward_pointwise<float>(const LstmBackwardPointwiseParams& params);
template void launch_gru_forward_pointwise<float>(const GruForwardPointwiseParams& params);
template void launch_gru_backward_pointwise<float>(const GruBackwardPointwiseParams& params);

}  // namespace cuda
}  // namespace fused_lstm
