"""Recipes: one command per application (reduce, denoise, inpaint, classify, generate, anomaly),
the shared training core, reports and the `aezoo` command line."""
