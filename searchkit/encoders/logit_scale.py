"""The temperature of a contrastive model, in its two units (torch-free).

A model *stores* the log of its logit scale (a learnable parameter: ``..._LOG`` names); a
similarity is *multiplied* by the scale itself (names without the suffix).
"""

from __future__ import annotations

import math

INIT_LOGIT_SCALE = 1 / 0.07                        # CLIP's initial multiplier (temperature 0.07)
INIT_LOGIT_SCALE_LOG = math.log(INIT_LOGIT_SCALE)  # ... as the stored log parameter
MAX_LOGIT_SCALE = 100.0                            # CLIP's cap on the multiplier
MAX_LOGIT_SCALE_LOG = math.log(MAX_LOGIT_SCALE)    # ... on the stored log parameter
