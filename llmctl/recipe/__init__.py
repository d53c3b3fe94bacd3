"""Recipes from YAML to typed specs: loading with positions, includes and overrides, the stage union and validation
with located errors, the JSON Schema, handoff checks between stages, starter templates, built-in recipes."""
