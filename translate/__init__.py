"""Number translation: normalisation, bindings, the LMDB store and operator YAML maps."""
