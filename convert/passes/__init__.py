"""Graph → graph rewrites applied between a reader and a writer: migration (re-root, pick,
graft), optimizer state, a Keras 2 `.h5` graph → tf_keras' object layout."""
