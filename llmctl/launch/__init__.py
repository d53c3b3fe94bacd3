"""Scale-out through existing engines: local torchrun/accelerate/DeepSpeed, Slurm, Ray; the worker each rank runs and
the launch protocol (the files and environment the ranks share with the parent)."""
