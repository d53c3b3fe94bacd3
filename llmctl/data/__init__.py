"""Data sources the stages read: local files, Deep Lake, hf:// datasets, mixtures, the demo sets, chat formats and
length diagnostics."""
