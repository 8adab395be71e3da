// Moved: AimdOptions and validate(const AimdOptions&) are in admit/core/aimd.hpp, with the
// AIMD control law (AimdLaw). This header only forwards there, for code that included it.
#pragma once

#include "admit/core/aimd.hpp"
