"""Quality measures the export verification and the micro build share."""

import math

import numpy as np


def psnr(reference, estimate, peak):
    """Peak signal-to-noise ratio in dB of `estimate` against `reference` (inf when identical)."""
    mse = float(np.mean((np.asarray(reference, np.float64) - np.asarray(estimate, np.float64)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(peak**2 / mse)
