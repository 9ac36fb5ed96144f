"""Maintainers' tools: benchmarks and the preset builder (`aezoo benchmark`, `aezoo presets --build`).

Nothing a user's `import` or `aezoo run` loads imports these."""
