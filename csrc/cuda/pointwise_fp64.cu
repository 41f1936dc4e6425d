// The float64 instantiation of the CUDA pointwise passes (LSTM and GRU). One dtype per file: the four
// compile in parallel.
#include "gru_pointwise_cuda.cuh"
#include "lstm_pointwise_cuda.cuh"

namespace fused_lstm {
namespace cuda {

template void launch_forward_pointwise<double>(const LstmForwardPointwiseParams& params);
template void launch_backward_pointwise<double>(const LstmBackwardPointwiseParams& params);
template void launch_gru_forward_pointwise<double>(const GruForwardPointwiseParams& params);
template void launch_gru_backward_pointwise<double>(const GruBackwardPointwiseParams& params);

}  // namespace cuda
}  // namespace fused_lstm
