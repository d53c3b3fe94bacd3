"""Model libraries the stages use: loading and saving causal LMs, training glue, adapters, rewards and user code in a
worker, evaluation and judging, quantization back-ends (INC, OpenVINO, GGUF), endpoints, publishing."""
