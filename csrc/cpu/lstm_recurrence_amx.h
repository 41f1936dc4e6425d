// The whole recurrence of a bfloat16 layer on AMX tiles (see lstm_recurrence_amx.cpp); lstm_recurrence_cpu.cpp
// dispatches to it.
#pragma once

#include "../params.h"

namespace fused_lstm {
namespace cpu {

// The forward recurrence of a bfloat16 layer (LstmRecurrenceForwardParams, project_input true).
void amx_recurrence_forward(const LstmRecurrenceForwardParams& params);

}  // namespace cpu
}  // namespace fused_lstm
