// The fused step for bfloat16 on AMX (see lstm_sequence_amx.cpp); lstm_sequence_cpu.cpp dispatches to it.
#pragma once

#include "../lstm_params.h"

namespace fused_lstm {
namespace cpu {

// The CPU has AMX-BF16 and the OS granted this process the tile state.
bool amx_bf16_available();

// The forward recurrence of a bfloat16 layer (LstmSequenceForwardParams, project_input true).
void amx_sequence_forward(const LstmSequenceForwardParams& params);

}  // namespace cpu
}  // namespace fused_lstm
