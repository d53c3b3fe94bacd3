"""A firing of a recipe: plan (what runs and why), execute (lock, stage order, atomic commit), the firing's record and
notification, smoke runs and memory estimates."""
