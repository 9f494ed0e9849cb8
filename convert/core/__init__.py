"""The core every other layer stands on: the intermediate graph and its lazy tensors,
dtypes, the errors a user can cause, the wording of notes, the meta keys, and the
registry of formats. It imports nothing of the package above it."""
